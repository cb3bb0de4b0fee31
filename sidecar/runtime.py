"""The runtime façade: ``open_runtime`` builds the actor tree; :class:`Runtime` talks to it.

This is the only module that knows every actor. The tree, outermost first::

    open_runtime
    └── store nursery ─── StoreActor            (owns the write connection; outlives writers)
        └── scheduler nursery ── SchedulerActor (admits, fires cron, supervises…)
                                 └── task actors (one per running task)

Leaving the ``async with`` block shuts down in order: stop accepting (``ShuttingDown``) →
running tasks get ``grace`` seconds → the rest are cancelled (their rows stay ``running``
for recovery) → the store commits every queued write → the database closes.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio

from . import threads
from .builtins import builtin_handlers
from .clock import Clock, SystemClock, format_ts
from .cron import validate_schedule
from .errors import InvalidParams, InvalidTask, ShuttingDown, SidecarError, TaskNotFound
from .handlers import Handler, HandlerRegistry, RuntimeServices, check_type_name
from .metrics import Metrics
from .models import RunRecord, Schedule, SubmitOutcome, TaskResult, TaskStatus, new_task_id
from .scheduler import Prepared, SchedulerActor, SchedulerClient
from .store import StoreActor, StoreClient, open_database, ops
from .store import db as dbq

__all__ = ["Runtime", "TaskRequest", "open_runtime"]

DB_FILENAME = "sidecar.db"
MAX_LIST_LIMIT = 1000
# Beyond `grace`, how long the drain waits for cancelled tasks to unwind.
_DRAIN_MARGIN = 5.0


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """One submission, for :meth:`Runtime.submit_many`."""

    type: str
    params: Any = None
    id: str | None = None
    timeout: float | None = None
    schedule: Schedule | None = None


class _Readiness:
    """The readiness flag: set by the built-in mark-ready tasks, read by ``Runtime.ready``.

    Not persisted: a restarted sidecar is not ready until mark-ready runs again.
    """

    __slots__ = ("ready",)

    def __init__(self) -> None:
        self.ready = False

    def set(self, value: bool) -> None:
        self.ready = value


class Runtime:
    """A running sidecar: submit tasks, read records, wait, remove.

    Obtain one from :func:`open_runtime`; every method is safe to call from any trio task.
    """

    def __init__(
        self,
        *,
        home: Path | None,
        handlers: HandlerRegistry,
        store: StoreClient,
        scheduler: SchedulerClient,
        store_actor: StoreActor,
        services: RuntimeServices,
        metrics: Metrics,
        clock: Clock,
        readiness: _Readiness,
    ) -> None:
        self.home = home
        self.handlers = handlers
        self.metrics = metrics
        self.clock = clock
        self._store = store
        self._scheduler = scheduler
        self._store_actor = store_actor
        self._services = services
        self._readiness = readiness
        self._stopping = trio.Event()

    @property
    def ready(self) -> bool:
        """True once a ``mark-ready`` task completed (and no ``mark-not-ready`` since)."""
        return self._readiness.ready

    @property
    def shutting_down(self) -> bool:
        """True once shutdown began; submissions then raise :class:`ShuttingDown`."""
        return self._stopping.is_set()

    def begin_shutdown(self) -> None:
        """Stop accepting work and release ``wait`` callers; the drain runs on exit."""
        self._stopping.set()

    def end_grace(self) -> None:
        """Cut the shutdown grace period short: running tasks are cancelled at once.

        Their rows stay ``running`` and start-up recovery settles them; the store still
        commits what is queued and closes cleanly. Implies :meth:`begin_shutdown`.
        """
        self._stopping.set()
        self._scheduler.end_grace()

    def _check_open(self) -> None:
        if self._stopping.is_set():
            raise ShuttingDown()

    def prepare(self, req: TaskRequest) -> Prepared:
        """Validate one submission without submitting it.

        Raises:
            UnknownTaskType: no handler for ``req.type``.
            InvalidParams: params failed the handler's schema (names the field).
            InvalidTask: bad id, timeout or schedule.
        """
        task_type = check_type_name(req.type)
        h = self.handlers.get(task_type)
        task_id = new_task_id(self.clock.now()) if req.id is None else _check_uuid(req.id)
        timeout = req.timeout
        if timeout is not None:
            if (
                isinstance(timeout, bool)
                or not isinstance(timeout, int | float)
                or not (timeout > 0 and math.isfinite(timeout))
            ):
                raise InvalidTask("timeout must be a positive number of seconds")
            timeout = float(timeout)
        schedule = req.schedule
        if schedule is not None:
            if not isinstance(schedule, Schedule):
                raise InvalidTask("schedule must be a sidecar.Schedule")
            schedule = validate_schedule(schedule)
        params = req.params if req.params is not None else {}
        typed = h.validate(params, {"home": self.home, "allow_exec": self._services.allow_exec})
        try:
            params_json = dbq.dumps(params)
        except (TypeError, ValueError) as exc:
            raise InvalidParams(f"params must be plain JSON: {exc}", field="params") from None
        return Prepared(
            id=task_id,
            type=task_type,
            params=typed,
            params_json=params_json,
            schedule=schedule,
            timeout=timeout,
        )

    async def submit(
        self,
        type: str,
        params: Any = None,
        *,
        id: str | None = None,
        timeout: float | None = None,
        schedule: Schedule | None = None,
    ) -> str:
        """Submit a task (or a schedule); return its id once its record is committed.

        Args:
            type: a registered task type.
            params: a JSON object for the handler.
            id: the caller's UUID, for idempotency: a running or completed task with this
                id answers as itself and nothing runs; a failed one runs again (run + 1).
            timeout: seconds before the run fails as timed out (overrides the handler's).
            schedule: run on a cron schedule instead of once.

        Raises:
            UnknownTaskType, InvalidParams, InvalidTask: bad input (``ValueError``).
            ShuttingDown: the runtime is shutting down or closed.
            StoreUnavailable: the store could not commit the record.
        """
        out = await self.submit_ex(type, params, id=id, timeout=timeout, schedule=schedule)
        return out.id

    async def submit_ex(
        self,
        type: str,
        params: Any = None,
        *,
        id: str | None = None,
        timeout: float | None = None,
        schedule: Schedule | None = None,
    ) -> SubmitOutcome:
        """Like :meth:`submit`, but tell whether a run started (``created``) or deduplicated."""
        self._check_open()
        prepared = self.prepare(TaskRequest(type, params, id, timeout, schedule))
        (out,) = await self._scheduler.admit((prepared,))
        return out

    async def submit_many(
        self, requests: Iterable[TaskRequest]
    ) -> list[SubmitOutcome | SidecarError]:
        """Submit many tasks; every accepted one is committed in one group commit.

        Returns one entry per request, in order: a :class:`SubmitOutcome`, or the
        ``InvalidTask`` that rejected that request (the others still go in).
        """
        self._check_open()
        entries: list[SubmitOutcome | SidecarError | Prepared] = []
        for req in requests:
            try:
                entries.append(self.prepare(req))
            except InvalidTask as exc:
                entries.append(exc)
        accepted = tuple(e for e in entries if isinstance(e, Prepared))
        outcomes = iter(await self._scheduler.admit(accepted) if accepted else [])
        return [next(outcomes) if isinstance(e, Prepared) else e for e in entries]

    async def get(self, task_id: str) -> TaskResult | None:
        """The task's record, or ``None`` if there is none."""
        rec = await self._store.read(dbq.read_get, str(task_id))
        return None if rec is None else self._overlay(rec)

    async def list(
        self,
        limit: int = 100,
        *,
        status: TaskStatus | str | None = None,
        type: str | None = None,
        before: str | None = None,
    ) -> list[TaskResult]:
        """Records newest first; page with ``before=<last id of the previous page>``.

        Raises:
            InvalidTask: ``limit`` outside 1..1000 or an unknown ``status``.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidTask(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}")
        if status is not None:
            try:
                status = TaskStatus(status).value
            except ValueError:
                raise InvalidTask(
                    f"status must be one of {', '.join(s.value for s in TaskStatus)}"
                ) from None
        rows = await self._store.read(dbq.read_list, limit, status, type, before)
        return [self._overlay(r) for r in rows]

    async def runs(self, task_id: str) -> list[RunRecord]:
        """The run history of a schedule or a retried task, oldest first.

        Raises:
            TaskNotFound: no record with that id.
        """
        runs = await self._store.read(dbq.read_runs, str(task_id))
        if runs is None:
            raise TaskNotFound(task_id)
        return runs

    async def remove(self, task_id: str) -> bool:
        """Cancel a running task (or stop a schedule) and delete its record and history.

        Returns ``False`` if there was no such task.
        """
        return await self._scheduler.remove(str(task_id))

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskResult:
        """Wait until the task's run ends; return its record.

        A schedule returns once a firing has ended (at once if one already has: the record
        then shows the latest firing). On ``timeout`` (seconds), or once shutdown begins,
        the current record is returned as it is (check ``.status``).

        Raises:
            TaskNotFound: no such task, or it was removed while waiting.
        """
        with trio.move_on_after(math.inf if timeout is None else timeout):
            while True:
                # Register before reading: a run ending between the two still wakes us.
                event = None if self.shutting_down else await self._scheduler.watch(task_id)
                rec = await self.get(task_id)
                if rec is None:
                    raise TaskNotFound(task_id)
                done = rec.status.terminal and (rec.schedule is None or rec.run > 0)
                if done or event is None:
                    return rec
                await _wait_either(event, self._stopping)
        rec = await self.get(task_id)
        if rec is None:
            raise TaskNotFound(task_id)
        return rec

    async def ping(self) -> None:
        """Round-trip a small write through the store actor.

        Raises:
            StoreUnavailable: the store cannot write right now.
        """
        await self._store.write(ops.Heartbeat(format_ts(self.clock.now())))

    @property
    def store_error(self) -> str | None:
        """The last store failure, cleared by the next successful commit."""
        return self._store_actor.last_error

    def _overlay(self, rec: TaskResult) -> TaskResult:
        if rec.status is not TaskStatus.RUNNING:
            return rec
        progress = self._scheduler.progress(rec.id)
        if progress is None:
            return rec
        return replace(rec, progress=progress)


async def _wait_either(a: trio.Event, b: trio.Event) -> None:
    if a.is_set() or b.is_set():
        return
    async with trio.open_nursery() as n:

        async def watch(ev: trio.Event) -> None:
            await ev.wait()
            n.cancel_scope.cancel()

        n.start_soon(watch, a)
        n.start_soon(watch, b)


def _check_uuid(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidTask("id must be a UUID string")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidTask(f"id must be a UUID, got {value!r}") from None


@asynccontextmanager
async def open_runtime(
    home: str | Path | None,
    *,
    handlers: Iterable[Handler] = (),
    grace: float = 10.0,
    concurrency: int | None = None,
    clock: Clock | None = None,
    synchronous: str = "NORMAL",
    retention_days: float | None = None,
    allow_exec: bool = False,
    builtins: bool = True,
    group_commit: bool = True,
    metrics: Metrics | None = None,
    channel_size: int = 1024,
    store_fault_hook: Callable[[], None] | None = None,
) -> AsyncIterator[Runtime]:
    """Start a runtime; shut it down (draining running tasks) when the block exits.

    Args:
        home: directory holding ``sidecar.db`` (created if missing); ``None`` keeps the
            database in memory (tests).
        handlers: task handlers, in addition to the built-ins.
        grace: seconds running tasks get to finish at shutdown before they are cancelled.
        concurrency: most tasks running at once (others wait as ``queued``).
        clock: wall-clock source (default: system UTC). Durations use trio time.
        synchronous: SQLite durability, ``"NORMAL"`` (default) or ``"FULL"``.
        retention_days: prune finished records and run history older than this.
        allow_exec: enable the ``exec`` built-in.
        builtins: register the built-in task types.
        group_commit: batch concurrent writes into one transaction (off: per-write commits).
        metrics: where to record metrics (default: a fresh registry).
        channel_size: bound of every actor inbox.
        store_fault_hook: called before each commit in the writer thread; raising there
            simulates a failing disk (fault-injection tests).

    Raises:
        SchemaTooNew: the database was written by a newer sidecar (file untouched).
        StoreCorrupt: the file is not a sidecar database (file untouched).
        HandlerConflict: two handlers claim one task type.
    """
    if grace < 0 or not math.isfinite(grace):
        raise ValueError("grace must be a non-negative number of seconds")
    if concurrency is not None and concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    registry = HandlerRegistry(builtin_handlers() if builtins else ())
    for h in handlers:
        registry.add(h)
    clock = clock if clock is not None else SystemClock()
    metrics = metrics if metrics is not None else Metrics()
    home_path: Path | None = None
    db_path: Path | None = None
    if home is not None:
        home_path = await threads.run_sync(_prepare_home, Path(home))
        db_path = home_path / DB_FILENAME
    # Opened before any nursery: a refused file raises plainly, not inside an ExceptionGroup.
    database = await threads.run_sync(lambda: open_database(db_path, synchronous=synchronous))
    store_actor = StoreActor(
        database,
        metrics=metrics,
        group_commit=group_commit,
        inbox_size=channel_size,
        fault_hook=store_fault_hook,
    )
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as store_nursery:
            store = await store_nursery.start(store_actor.run)
            try:
                readiness = _Readiness()
                services = RuntimeServices(set_ready=readiness.set, allow_exec=allow_exec)
                scheduler_actor = SchedulerActor(
                    store=store,
                    handlers=registry,
                    clock=clock,
                    home=home_path,
                    services=services,
                    metrics=metrics,
                    grace=grace,
                    concurrency=concurrency,
                    retention_days=retention_days,
                    inbox_size=channel_size,
                )
                async with trio.open_nursery() as scheduler_nursery:
                    scheduler = await scheduler_nursery.start(scheduler_actor.run)
                    rt = Runtime(
                        home=home_path,
                        handlers=registry,
                        store=store,
                        scheduler=scheduler,
                        store_actor=store_actor,
                        services=services,
                        metrics=metrics,
                        clock=clock,
                        readiness=readiness,
                    )
                    try:
                        yield rt
                    except BaseException as exc:
                        # Recorded only so the caller's own exception can be unwrapped from
                        # the nurseries' groups below; always re-raised, Cancelled included.
                        body_error = exc
                        raise
                    finally:
                        # Drain inside the nursery body, shielded: an exception or cancel in
                        # the caller must not cut running tasks' grace short.
                        rt.begin_shutdown()
                        scheduler.close()
                        with trio.CancelScope(shield=True) as drain:
                            drain.deadline = trio.current_time() + grace + _DRAIN_MARGIN
                            await scheduler.wait_closed()
            finally:
                # Every writer has exited; the store commits what is queued, then closes.
                store.close()
    except BaseExceptionGroup as group:
        if body_error is not None:
            leaves = _leaves(group)
            if leaves and all(leaf is body_error for leaf in leaves):
                raise body_error from None
        raise


def _prepare_home(home: Path) -> Path:
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out
