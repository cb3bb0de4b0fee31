"""A tiny HTTP/1.1 server for the built-in tests: one request per connection, scripted
replies, every request recorded. Real sockets on 127.0.0.1, so tests using it run on
real time."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | Any = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeServer:
    """Answers each request with ``respond(request)``; records what it received."""

    url: str = ""
    respond: Callable[[Request], Reply] = lambda request: Reply()
    requests: list[Request] = field(default_factory=list)

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            while len(body) < length:
                body += await stream.receive_some(65536)
            request = Request(method, path, headers, body)
            self.requests.append(request)
            reply = self.respond(request)
            payload = reply.body
            if not isinstance(payload, bytes | str):
                payload = json.dumps(payload)
            if isinstance(payload, str):
                payload = payload.encode()
            extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
            response = (
                f"HTTP/1.1 {reply.status} X\r\nContent-Length: {len(payload)}\r\n"
                f"Connection: close\r\n{extra}\r\n"
            ).encode() + (b"" if method == "HEAD" else payload)
            try:
                await stream.send_all(response)
            except trio.BrokenResourceError:
                pass
