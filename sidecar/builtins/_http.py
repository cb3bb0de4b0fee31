"""HTTP plumbing shared by ``await-condition`` and ``http-request``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import trio
from pydantic_core import PydanticCustomError

__all__ = ["MISSING", "check_url", "json_at", "json_equal", "read_bounded"]


def check_url(value: str) -> str:
    """Submit-time check: an absolute ``http``/``https`` URL with a host."""
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError as exc:
        reason = {"reason": str(exc)}
        raise PydanticCustomError("url", "not a valid URL: {reason}", reason) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PydanticCustomError("url", "must be an absolute http:// or https:// URL")
    return value


async def read_bounded(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Read at most ``limit`` bytes of a streamed body; ``True`` when more was left unread."""
    body = bytearray()
    # Breaking out of ``aiter_bytes`` would leave httpcore's nested async generators to
    # the garbage collector (trio warns, and the connection is not released promptly).
    # Cancelling the read instead unwinds them through their own cleanup.
    with trio.CancelScope() as stop:
        async for chunk in response.aiter_bytes():
            if len(body) <= limit:
                body += chunk
            if len(body) > limit:
                stop.cancel()
    return bytes(body[:limit]), len(body) > limit


MISSING: Any = object()
"""What :func:`json_at` returns when the path does not exist."""


def json_at(data: Any, path: str) -> Any:
    """The value at a dotted path (``a.b.0.c``; digits index arrays), or ``MISSING``."""
    value = data
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers compare by value (``1 == 1.0``) but ``true`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
