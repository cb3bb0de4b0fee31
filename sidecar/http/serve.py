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

trio cannot abandon a task: a handler that shields itself from cancellation, or blocks the
event loop, would hold that drain (and the process) up forever. So shutdown has a hard
deadline (issue 6), kept by a thread rather than by trio (:class:`_HardDeadline`):
``shutdown_timeout`` seconds after shutdown begins, the process writes one line to stderr
and ends with ``os._exit(70)``, leaving the stuck tasks' rows ``running`` for the next
start-up's recovery. A second SIGTERM/SIGINT once shutdown has begun stops waiting: the
runtime cancels its running tasks at once (``Runtime.end_grace``; their rows stay
``running`` for recovery), the store flushes and the DB closes, exit 0. Should even that
not finish within ``FORCED_EXIT_AFTER`` seconds (a task that ignores cancellation), the
process ends with ``128 + signum`` (143 for SIGTERM, 130 for SIGINT).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
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

__all__ = [
    "EXIT_SHUTDOWN_TIMEOUT",
    "FORCED_EXIT_AFTER",
    "SHUTDOWN_MARGIN",
    "InflightTracker",
    "ServeOptions",
    "serve",
]

log = logging.getLogger("sidecar.serve")

# Exit status when shutdown overran its deadline and stuck tasks were abandoned
# (EX_SOFTWARE: a handler broke the cancellation contract).
EXIT_SHUTDOWN_TIMEOUT = 70
# Default hard deadline = graceful_timeout + grace + this: the runtime's own drain margin
# (5 s) plus time for the store to commit what is queued and checkpoint the WAL.
SHUTDOWN_MARGIN = 10.0
# After a second signal the runtime cancels its running tasks at once (Runtime.end_grace)
# and closes cleanly; this backstop ends the process if even that does not finish.
FORCED_EXIT_AFTER = 5.0
_SYNCHRONOUS = ("NORMAL", "FULL")

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
        shutdown_timeout: hard deadline, in seconds from the start of shutdown, after which
            the process ends with exit status 70 even if tasks ignore cancellation;
            ``None``: ``graceful_timeout + grace + SHUTDOWN_MARGIN``.
        synchronous: SQLite durability, ``"NORMAL"`` or ``"FULL"`` (see docs/operations.md).
        retention_days: prune finished records and run history older than this many days
            (``None``: keep everything).
        keep_alive_timeout: seconds an idle keep-alive connection stays open.
        access_log: log every request (off by default: it costs on the hot path).
        entry_points: also load handlers from the ``sidecar.handlers`` entry-point group.
        runtime_options: extra keyword arguments for ``open_runtime`` (tests, tuning); they
            override the options above.
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
    shutdown_timeout: float | None = None
    synchronous: str = "NORMAL"
    retention_days: float | None = None
    keep_alive_timeout: float = 5.0
    access_log: bool = False
    entry_points: bool = True
    runtime_options: dict[str, Any] = field(default_factory=dict)

    @property
    def hard_deadline(self) -> float:
        """Seconds from the start of shutdown until the process ends regardless."""
        if self.shutdown_timeout is not None:
            return self.shutdown_timeout
        return self.graceful_timeout + self.grace + SHUTDOWN_MARGIN

    def check(self) -> None:
        """Raise ``ValueError`` with an actionable message for an option out of range."""
        for name in ("grace", "graceful_timeout", "keep_alive_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number of seconds, not {value}")
        if self.shutdown_timeout is not None and not (
            math.isfinite(self.shutdown_timeout) and self.shutdown_timeout > 0
        ):
            raise ValueError(
                "shutdown timeout must be a positive number of seconds, "
                f"not {self.shutdown_timeout}"
            )
        if self.synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be 'normal' or 'full', not {self.synchronous!r}")
        if self.retention_days is not None and not (
            math.isfinite(self.retention_days) and self.retention_days > 0
        ):
            raise ValueError(f"retention days must be a positive number, not {self.retention_days}")


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

    Once shutdown begins, the process has ``options.hard_deadline`` seconds to finish; past
    that it ends with ``os._exit(EXIT_SHUTDOWN_TIMEOUT)`` (this is meant for the process
    that owns ``trio.run``, as under ``sidecar serve``). A signal after shutdown began cuts
    the grace period short; if the drain still has not finished ``FORCED_EXIT_AFTER``
    seconds later, the process ends with ``128 + signum``.

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
    options.check()
    authenticator = Authenticator(options.auth, options.token)
    plugin_handlers = load_handlers(list(options.handlers), entry_points=options.entry_points)
    home = Path(options.home)
    await trio.Path(home).mkdir(parents=True, exist_ok=True)
    if options.hard_deadline < options.graceful_timeout + options.grace:
        log.warning(
            "shutdown timeout %gs is shorter than graceful timeout + grace (%gs): a slow "
            "drain will be cut short and exit with status %d",
            options.hard_deadline,
            options.graceful_timeout + options.grace,
            EXIT_SHUTDOWN_TIMEOUT,
        )
    runtime_options = {
        "synchronous": options.synchronous.upper(),
        "retention_days": options.retention_days,
        **options.runtime_options,
    }
    deadline = _HardDeadline(options.hard_deadline)
    # Open the receiver before the runtime so a signal during start-up recovery or during
    # the task drain is queued for us instead of killing the process mid-write.
    with trio.open_signal_receiver(*signals) if signals else nullcontext() as signal_aiter:
        # Filled once the runtime is open: what a second signal calls on the trio thread.
        on_second_signal: list[Callable[[], None]] = []
        if signals:
            _arm_deadline_on_signals(signals, deadline, on_second_signal)
        try:
            async with open_runtime(
                home,
                handlers=[*handlers, *plugin_handlers],
                grace=options.grace,
                concurrency=options.concurrency,
                allow_exec=options.allow_exec,
                **runtime_options,
            ) as rt:
                on_second_signal.append(rt.end_grace)
                stop_http = trio.Event()

                def begin_shutdown(reason: str) -> None:
                    if stop_http.is_set():
                        return
                    deadline.arm()
                    log.info(
                        "shutting down (%s): finishing requests, then tasks (grace %gs, "
                        "hard deadline %gs)",
                        reason,
                        options.grace,
                        deadline.seconds,
                    )
                    rt.begin_shutdown()
                    stop_http.set()

                try:
                    async with trio.open_nursery() as watchers:
                        if signal_aiter is not None:
                            watchers.start_soon(_watch_signals, signal_aiter, begin_shutdown)
                        if shutdown_trigger is not None:
                            watchers.start_soon(_watch_trigger, shutdown_trigger, begin_shutdown)
                        app = InflightTracker(
                            create_app(rt, auth=authenticator, max_body=options.max_body)
                        )
                        await _serve_http(app, options, stop_http, task_status)
                        watchers.cancel_scope.cancel()
                finally:
                    # The drain starts when this block is left, for whatever reason: it must
                    # end by the deadline even if no signal or trigger began the shutdown.
                    deadline.arm()
                log.info("HTTP stopped; draining tasks")
        finally:
            deadline.disarm()
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


class _HardDeadline:
    """Ends the process when shutdown overruns its deadline (issue 6).

    A ``threading.Timer`` (a daemon thread, armed when shutdown begins) keeps the deadline,
    not trio: the trio thread may be the thing that is stuck. Trio time is the wrong clock
    here too, for the same reason. When it fires it writes one line with ``os.write`` (not
    ``logging``: the stuck trio thread may hold the logging lock) and calls ``os._exit``:
    committed rows are safe (SQLite commits are atomic), and the abandoned tasks' rows stay
    ``running`` for start-up recovery to settle.

    ``arm`` runs on the main thread, from trio code and from a Python signal handler that
    may interrupt trio code, so it takes no lock; a second timer started by such an
    interruption is harmless (``disarm`` cancels them all, and a fired one checks the flag).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._timers: list[threading.Timer] = []
        self._expires: float | None = None
        self._disarmed = False

    @property
    def armed(self) -> bool:
        """Whether shutdown has begun (the deadline was armed at least once)."""
        return self._expires is not None

    def arm(self) -> None:
        """Start the full deadline, once; later calls keep the first deadline."""
        if self._expires is None:
            self._start(
                self.seconds,
                f"shutdown did not finish within {self.seconds:g}s; abandoning the task(s) "
                "still running (they ignore cancellation or block the event loop)",
                EXIT_SHUTDOWN_TIMEOUT,
            )

    def force(self, signum: int) -> None:
        """A signal after shutdown began: end the process soon, without waiting for tasks."""
        name = signal.Signals(signum).name
        self._start(
            FORCED_EXIT_AFTER,
            f"second {name} during shutdown: abandoning the task(s) still running",
            128 + signum,
        )

    def disarm(self) -> None:
        """Shutdown finished: no timer may end the process any more."""
        self._disarmed = True
        for timer in self._timers:
            timer.cancel()

    def _start(self, seconds: float, why: str, code: int) -> None:
        # time.monotonic, not trio time: this deadline must hold while trio is stuck.
        expires = time.monotonic() + seconds
        if self._disarmed or (self._expires is not None and self._expires <= expires):
            return
        self._expires = expires
        timer = threading.Timer(seconds, self._fire, (why, code))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _fire(self, why: str, code: int) -> None:
        if self._disarmed:
            return
        line = (
            f"sidecar: {why}; their records stay 'running' and the next start-up's recovery "
            f"settles them; exiting with status {code}\n"
        )
        try:
            os.write(2, line.encode())
        finally:
            os._exit(code)


def _arm_deadline_on_signals(
    signals: Sequence[int],
    deadline: _HardDeadline,
    on_second_signal: list[Callable[[], None]],
) -> None:
    """Wrap trio's signal handlers so a signal arms the deadline even if trio is stuck.

    trio's handler only queues the signal for the event loop; a handler blocking that loop
    would keep the signal (and so ``begin_shutdown``) from ever being seen. Python runs
    signal handlers on the main thread between bytecodes, also inside ``time.sleep``, so
    this wrapper runs regardless. A signal once shutdown has begun is not passed on (trio
    would re-deliver it with the default action at exit): it forces the exit instead.
    trio restores the original handlers when its receiver closes.
    """
    token = trio.lowlevel.current_trio_token()
    for signum in signals:
        trio_handler = signal.getsignal(signum)
        assert callable(trio_handler)

        def handler(signum: int, frame: Any, trio_handler: Any = trio_handler) -> None:
            if deadline.armed:
                deadline.force(signum)
                # run_sync_soon is safe in a signal handler; the loop then ends the grace
                # period (tasks cancelled, DB closed cleanly) and logs.
                token.run_sync_soon(_second_signal, signum, on_second_signal)
                return
            deadline.arm()
            trio_handler(signum, frame)

        signal.signal(signum, handler)


def _second_signal(signum: int, callbacks: list[Callable[[], None]]) -> None:
    log.warning(
        "second %s during shutdown: cancelling running tasks now (their records stay "
        "'running' for recovery); exiting with status %d if the drain has not finished "
        "within %gs",
        signal.Signals(signum).name,
        128 + signum,
        FORCED_EXIT_AFTER,
    )
    for callback in callbacks:
        callback()


async def _watch_signals(signal_aiter: Any, begin_shutdown: Callable[[str], None]) -> None:
    async for signum in signal_aiter:
        begin_shutdown(signal.Signals(signum).name)
        return


async def _watch_trigger(
    trigger: Callable[[], Awaitable[Any]], begin_shutdown: Callable[[str], None]
) -> None:
    await trigger()
    begin_shutdown("shutdown requested")
