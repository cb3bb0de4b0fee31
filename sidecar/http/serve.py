"""``sidecar serve``: the runtime outermost, Hypercorn's trio ``serve()`` innermost.

Shutdown is nursery nesting (issue 4)::

    signal receiver (SIGTERM/SIGINT, open for the whole process)
    └── open_runtime(...)            store actor, scheduler, task actors; drains on exit
        └── nursery
            ├── watch signals        first signal: rt.begin_shutdown() + stop HTTP
            └── Hypercorn serve()    in a cancel scope of our own

On the first signal: the runtime stops accepting at once (submits get 503, long-polls
return), Hypercorn's ``shutdown_trigger`` fires (listeners close, no new connections), and
in-flight requests finish. Hypercorn would then also wait out its ``graceful_timeout`` for
connections that merely sit idle in keep-alive, so we count requests ourselves
(:class:`InflightTracker`) and cancel Hypercorn's scope as soon as none is in flight (or
``graceful_timeout`` has passed). Leaving ``open_runtime`` then gives running tasks ``grace``
seconds, flushes the store and closes the DB.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ..plugins import load_handlers
from ..runtime import open_runtime
from .app import DEFAULT_MAX_BODY, create_app
from .auth import Authenticator, AuthMode

__all__ = ["InflightTracker", "ServeOptions", "serve"]

log = logging.getLogger("sidecar.serve")

ASGIApp = Callable[
    [dict[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]
]


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``sidecar serve`` is configured with (CLI flags / ``SIDECAR_*``).

    Args:
        home: runtime home directory (the DB is ``{home}/sidecar.db``).
        host, port: where to listen; ``port=0`` picks a free port (see ``port_file``).
        grace: seconds running tasks get to finish at shutdown before they are cancelled.
        handlers: ``MODULE:ATTR`` plugin specs (plus the ``sidecar.handlers`` entry points).
        concurrency: global limit of concurrently running tasks (``None``: unlimited).
        auth, token: request authentication (see :mod:`sidecar.http.auth`).
        allow_exec: enable the built-in ``exec`` task type.
        max_body: request body limit in bytes.
        port_file: when set, the bound ``http://host:port`` URL is written there (atomically)
            once the server accepts connections.
        graceful_timeout: upper bound on waiting for in-flight HTTP requests at shutdown.
        keep_alive_timeout: seconds an idle keep-alive connection stays open.
        access_log: log every request (off by default: it costs on the hot path).
        entry_points: also load handlers from the ``sidecar.handlers`` entry-point group.
        runtime_options: extra keyword arguments for ``open_runtime`` (tests, tuning).
    """

    home: Path = Path("sidecar-home")
    host: str = "127.0.0.1"
    port: int = 7777
    grace: float = 10.0
    handlers: Sequence[str] = ()
    concurrency: int | None = None
    auth: str = AuthMode.NONE.value
    token: str | None = field(default=None, repr=False)
    allow_exec: bool = False
    max_body: int = DEFAULT_MAX_BODY
    port_file: Path | None = None
    graceful_timeout: float = 5.0
    keep_alive_timeout: float = 5.0
    access_log: bool = False
    entry_points: bool = True
    runtime_options: dict[str, Any] = field(default_factory=dict)


class InflightTracker:
    """ASGI middleware counting HTTP requests that are inside the app.

    Counting is two integer updates per request; ``wait_idle`` wakes once the count is 0.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.inflight = 0
        self._idle: trio.Event | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1
            if self.inflight == 0 and self._idle is not None:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no request is in flight."""
        while self.inflight:
            self._idle = trio.Event()
            await self._idle.wait()
        await trio.lowlevel.checkpoint()


def _hypercorn_config(options: ServeOptions) -> HypercornConfig:
    config = HypercornConfig()
    host = options.host
    config.bind = [f"[{host}]:{options.port}" if ":" in host else f"{host}:{options.port}"]
    config.graceful_timeout = options.graceful_timeout
    config.keep_alive_timeout = options.keep_alive_timeout
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = logging.getLogger("sidecar.access") if options.access_log else None
    config.include_server_header = False
    return config


def _write_port_file(path: Path, url: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(url + "\n")
    os.replace(tmp, path)


async def serve(
    options: ServeOptions,
    *,
    handlers: Sequence[Any] = (),
    signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the runtime and the HTTP API until a signal (or ``shutdown_trigger``) stops them.

    Args:
        options: the serve configuration.
        handlers: extra :class:`sidecar.Handler` objects (besides ``options.handlers``).
        signals: signals that begin a graceful shutdown; empty when not on the main thread.
        shutdown_trigger: an extra awaitable that begins the same shutdown when it returns.
        task_status: ``started(urls)`` with the bound ``http://host:port`` URLs.

    Raises:
        ValueError: bad options or handler specs (before anything is opened).
        sidecar.HandlerConflict: two handlers claim one task type.
        sidecar.SchemaTooNew, sidecar.StoreCorrupt: the DB cannot be used.
    """
    authenticator = Authenticator(options.auth, options.token)
    plugin_handlers = load_handlers(list(options.handlers), entry_points=options.entry_points)
    home = Path(options.home)
    await trio.Path(home).mkdir(parents=True, exist_ok=True)
    # Open the receiver before the runtime so a signal during start-up recovery or during
    # the task drain is queued for us instead of killing the process mid-write.
    with trio.open_signal_receiver(*signals) if signals else nullcontext() as signal_aiter:
        async with open_runtime(
            home,
            handlers=[*handlers, *plugin_handlers],
            grace=options.grace,
            concurrency=options.concurrency,
            allow_exec=options.allow_exec,
            **options.runtime_options,
        ) as rt:
            stop_http = trio.Event()

            def begin_shutdown(reason: str) -> None:
                if stop_http.is_set():
                    return
                log.info(
                    "shutting down (%s): finishing requests, then tasks (grace %gs)",
                    reason,
                    options.grace,
                )
                rt.begin_shutdown()
                stop_http.set()

            async with trio.open_nursery() as watchers:
                if signal_aiter is not None:
                    watchers.start_soon(_watch_signals, signal_aiter, begin_shutdown)
                if shutdown_trigger is not None:
                    watchers.start_soon(_watch_trigger, shutdown_trigger, begin_shutdown)
                app = InflightTracker(create_app(rt, auth=authenticator, max_body=options.max_body))
                await _serve_http(app, options, stop_http, task_status)
                watchers.cancel_scope.cancel()
            log.info("HTTP stopped; draining tasks")
    log.info("sidecar stopped")


async def _serve_http(
    app: InflightTracker,
    options: ServeOptions,
    stop_http: trio.Event,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    config = _hypercorn_config(options)
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(
            partial(hypercorn_serve, app, config, shutdown_trigger=stop_http.wait, mode="asgi")
        )
        for url in urls:
            log.info("sidecar listening on %s", url)
        if options.port_file is not None:
            await trio.to_thread.run_sync(_write_port_file, Path(options.port_file), urls[0])
        task_status.started(urls)
        await stop_http.wait()
        with trio.move_on_after(options.graceful_timeout):
            await app.wait_idle()
        # Every request is answered (or the graceful timeout is up). Hypercorn would keep
        # waiting for idle keep-alive connections; they must not hold up the task drain.
        nursery.cancel_scope.cancel()


async def _watch_signals(signal_aiter: Any, begin_shutdown: Callable[[str], None]) -> None:
    async for signum in signal_aiter:
        begin_shutdown(signal.Signals(signum).name)
        return


async def _watch_trigger(
    trigger: Callable[[], Awaitable[Any]], begin_shutdown: Callable[[str], None]
) -> None:
    await trigger()
    begin_shutdown("shutdown requested")
