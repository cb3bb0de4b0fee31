"""The scheduler actor: admits submissions, supervises one task actor per run, fires cron.

It owns the nursery every task actor runs in and the only in-memory state the runtime
keeps: running tasks' cancel scopes (plus their latest progress), the schedule overlap
guard, capacity limiters and the waiters of ``Runtime.wait``. Everything else lives in the
store, which it reaches only through the store actor.

Its own loop never awaits the store: each submission is admitted by a short task it starts,
so thousands of submissions share one group commit instead of queueing behind each other.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import outcome
import trio
import trio.lowlevel

from .clock import Clock, format_ts, parse_ts
from .cron import next_fire
from .errors import ShuttingDown, StoreUnavailable, TaskError
from .handlers import HandlerRegistry, RuntimeServices, TaskContext
from .metrics import Metrics
from .models import ErrorInfo, Schedule, SubmitOutcome, TaskStatus
from .reply import Reply
from .store import StoreClient, ops
from .store import db as dbq
from .store.db import Runnable

__all__ = ["Admit", "Remove", "SchedulerActor", "SchedulerClient", "Watch"]

log = logging.getLogger("sidecar.scheduler")

# A due instant later than this is a misfire (downtime or a stalled loop), handled by the
# schedule's misfire policy; within it, a late firing simply runs.
MISFIRE_GRACE = timedelta(seconds=60)
# Re-read the wall clock at least this often while idle, so a stepped system clock
# (NTP) cannot leave a schedule sleeping past its instant. Costs nothing measurable.
MAX_IDLE_SLEEP = 60.0
DUE_BATCH = 1000
PRUNE_EVERY = 3600.0
# How long a remove waits for the cancelled actor to unwind before answering anyway (a
# handler may ignore cancellation; the row is already gone either way).
REMOVE_UNWIND = 5.0


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated submission, serialized for the store."""

    id: str
    type: str
    params: Any
    params_json: str | None
    schedule: Schedule | None
    timeout: float | None


@dataclass(frozen=True, slots=True)
class Admit:
    """Insert (or deduplicate) these submissions in one commit and start their runs."""

    tasks: tuple[Prepared, ...]
    reply: Reply[list[SubmitOutcome]]


@dataclass(frozen=True, slots=True)
class Remove:
    """Cancel a running task or schedule firing, then delete its record."""

    id: str
    reply: Reply[bool]


@dataclass(frozen=True, slots=True)
class Watch:
    """Ask for an event that is set when the task's current run ends (or it is removed)."""

    id: str
    reply: Reply[trio.Event]


Message = Admit | Remove | Watch


@dataclass(eq=False, slots=True)
class _Running:
    """One live task actor, as the scheduler tracks it."""

    lease: int
    scope: trio.CancelScope
    ctx: TaskContext | None = None
    removed: bool = False
    timeout: float | None = None
    stopped: trio.Event | None = None  # made only by a remove that waits for the unwind


@dataclass
class _Limits:
    total: trio.CapacityLimiter | None
    per_type: dict[str, trio.CapacityLimiter] = field(default_factory=dict)


class SchedulerClient:
    """Request/reply access to the scheduler actor."""

    def __init__(self, send: trio.MemorySendChannel[Message], actor: SchedulerActor) -> None:
        self._send = send
        self._actor = actor

    async def _call(self, make: Any) -> Any:
        reply: Reply[Any] = Reply()
        try:
            # As in StoreClient.write: no extra schedule point when the inbox has room.
            try:
                self._send.send_nowait(make(reply))
            except trio.WouldBlock:
                await self._send.send(make(reply))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ShuttingDown() from None
        return await reply.receive()

    async def admit(self, tasks: tuple[Prepared, ...]) -> list[SubmitOutcome]:
        return await self._call(lambda r: Admit(tasks, r))

    async def remove(self, task_id: str) -> bool:
        return await self._call(lambda r: Remove(task_id, r))

    async def watch(self, task_id: str) -> trio.Event:
        return await self._call(lambda r: Watch(task_id, r))

    def progress(self, task_id: str) -> Any:
        """Latest reported progress of a running task (a synchronous peek, same thread)."""
        return self._actor.progress(task_id)

    def close(self) -> None:
        """Stop admitting; the actor drains its running tasks and returns."""
        self._send.close()

    def end_grace(self) -> None:
        """Cut the shutdown grace period short (synchronous; same thread)."""
        self._actor.end_grace()

    async def wait_closed(self) -> None:
        """Wait until the actor has drained and returned."""
        await self._actor.closed.wait()


class SchedulerActor:
    """Admits tasks, runs one task actor per run, fires schedules, drains on close.

    Args:
        store: the store actor's client.
        handlers: the registry of task types.
        clock: the wall clock for timestamps and cron.
        services: what built-in handlers may touch (readiness, allow_exec).
        grace: seconds running tasks get to finish once the inbox closes.
        concurrency: global limit on running tasks (``None``: unlimited).
        retention_days: prune terminal records and run history older than this.
    """

    def __init__(
        self,
        *,
        store: StoreClient,
        handlers: HandlerRegistry,
        clock: Clock,
        home: Path | None,
        services: RuntimeServices,
        metrics: Metrics,
        grace: float,
        concurrency: int | None = None,
        retention_days: float | None = None,
        inbox_size: int = 1024,
    ) -> None:
        self._store = store
        self._handlers = handlers
        self._clock = clock
        self._home = home
        self._services = services
        self._metrics = metrics
        self._grace = grace
        self._retention = retention_days
        self._inbox_size = inbox_size
        self._limits = _Limits(trio.CapacityLimiter(concurrency) if concurrency else None)
        for h in handlers:
            if h.concurrency:
                self._limits.per_type[h.type] = trio.CapacityLimiter(h.concurrency)
        self._running: dict[str, _Running] = {}
        self._waiters: dict[str, trio.Event] = {}
        # Admissions in flight plus running task actors; shutdown drains it to zero.
        self._active = 0
        self._idle = trio.Event()
        self._idle.set()
        self._background_scope = trio.CancelScope()
        # Bounds the drain to `grace`; end_grace() cancels it early (a second signal).
        self._grace_scope = trio.CancelScope()
        self._wake_cron = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.closed = trio.Event()
        self._queued = 0
        # Read at scrape time: no gauge update (and its lock) on every task's path.
        metrics.running.set_function(self._running_count)
        metrics.queued.set_function(lambda: self._queued)

    def _running_count(self) -> int:
        return len(self._running) - self._queued

    def end_grace(self) -> None:
        """Stop waiting for running tasks: the drain (now or when it starts) cancels them."""
        self._grace_scope.cancel()

    def progress(self, task_id: str) -> Any:
        entry = self._running.get(task_id)
        return None if entry is None or entry.ctx is None else entry.ctx.progress

    async def run(
        self, *, task_status: trio.TaskStatus[SchedulerClient] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await self._run(task_status)
        finally:
            self.closed.set()

    async def _run(self, task_status: trio.TaskStatus[SchedulerClient]) -> None:
        send, inbox = trio.open_memory_channel[Message](self._inbox_size)
        async with trio.open_nursery() as tasks:
            self._nursery = tasks
            # Recovery finishes before the first submission is accepted.
            again = await self._store.write(
                ops.RecoverStale(
                    now=self._now_ts(),
                    known_types=frozenset(self._handlers.types()),
                    idempotent_types=frozenset(self._handlers.idempotent_types()),
                )
            )
            for runnable in again:
                log.info("re-running task after restart", extra=_task_extra(runnable))
                self._start_actor(runnable, reserved=False)
            tasks.start_soon(self._background)
            task_status.started(SchedulerClient(send, self))
            with inbox:
                async for msg in inbox:
                    self._dispatch(msg)
                    # Take whatever else is queued without a checkpoint per message.
                    while True:
                        try:
                            self._dispatch(inbox.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
            # The inbox closed: shutdown. Stop firing; give running tasks `grace`.
            self._background_scope.cancel()
            self._wake_all_waiters()
            self._grace_scope.deadline = min(
                self._grace_scope.deadline, trio.current_time() + self._grace
            )
            with self._grace_scope:
                while self._active:
                    await self._idle.wait()
            if self._running:
                log.warning(
                    "grace period over: cancelling %d running task(s); they stay 'running' "
                    "and start-up recovery settles them",
                    len(self._running),
                )
            tasks.cancel_scope.cancel()

    async def _background(self) -> None:
        with self._background_scope:
            async with trio.open_nursery() as n:
                n.start_soon(self._cron_loop)
                if self._retention:
                    n.start_soon(self._prune_loop)

    def _enter(self) -> None:
        self._active += 1
        if self._idle.is_set():
            self._idle = trio.Event()

    def _leave(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._idle.set()

    def _dispatch(self, msg: Message) -> None:
        match msg:
            case Admit():
                assert self._nursery is not None
                self._enter()
                self._nursery.start_soon(self._admit, msg)
            case Remove():
                self._nursery.start_soon(self._remove, msg)  # type: ignore[union-attr]
            case Watch():
                event = self._waiters.get(msg.id)
                if event is None:
                    event = self._waiters[msg.id] = trio.Event()
                _reply(msg.reply, outcome.Value(event))
            case _:
                raise TypeError(f"unknown scheduler message {msg!r}")

    def _now(self) -> datetime:
        return self._clock.now()

    def _now_ts(self) -> str:
        return format_ts(self._clock.now())

    async def _admit(self, msg: Admit) -> None:
        try:
            single = await self._admit_inner(msg)
        finally:
            self._leave()
        if single is not None:
            # A single submission's admission task goes on as its task actor: one task
            # spawn fewer per submit, and the admission frame is gone while it runs
            # (memory per running task is a target: issue 6).
            runnable, entry, got = single
            await self._task_actor(runnable, entry, got, True)

    async def _admit_inner(self, msg: Admit) -> tuple[Runnable, _Running, bool] | None:
        if len(msg.tasks) == 1 and msg.tasks[0].schedule is None:
            return await self._admit_one(msg, msg.tasks[0])
        now = self._now()
        now_ts = format_ts(now)
        rows: list[ops.NewTask] = []
        reserved: list[bool] = []
        for p in msg.tasks:
            lease = ops.new_lease()
            if p.schedule is not None:
                status, got = TaskStatus.SCHEDULED, False
                next_run = format_ts(next_fire(p.schedule, now))
            else:
                got = self._try_reserve(p.type, lease)
                status = TaskStatus.RUNNING if got else TaskStatus.QUEUED
                next_run = None
            reserved.append(got)
            rows.append(
                ops.NewTask(
                    id=p.id,
                    type=p.type,
                    params=p.params_json,
                    schedule=None if p.schedule is None else json.dumps(p.schedule.to_json()),
                    timeout=p.timeout,
                    status=status,
                    lease=lease,
                    now=now_ts,
                    next_run_at=next_run,
                )
            )
        try:
            results: list[SubmitOutcome] = await self._store.write(ops.InsertTasks(tuple(rows)))
        except (Exception, trio.Cancelled) as exc:
            for row, got in zip(rows, reserved, strict=True):
                if got:
                    self._release(row.type, row.lease)
            _reply_failed(msg.reply, exc)
            if isinstance(exc, trio.Cancelled):
                raise
            return None
        starts: list[tuple[Runnable, bool]] = []
        for p, row, got, res in zip(msg.tasks, rows, reserved, results, strict=True):
            if not res.created:
                self._metrics.for_type(p.type).deduplicated.inc()
                if got:
                    self._release(p.type, row.lease)
                continue
            self._metrics.for_type(p.type).submitted.inc()
            if p.schedule is not None:
                self._wake_cron.set()
                continue
            runnable = Runnable(
                id=p.id,
                type=p.type,
                run=res.run,
                params=p.params,
                timeout=p.timeout,
                lease=row.lease,
                status=res.status,
                is_schedule=False,
            )
            starts.append((runnable, got))
        _reply(msg.reply, outcome.Value(results))
        if len(starts) == 1:
            runnable, got = starts[0]
            return runnable, self._register(runnable), got
        for runnable, got in starts:
            self._start_actor(runnable, reserved=got, validated=True)
        return None

    async def _admit_one(self, msg: Admit, p: Prepared) -> tuple[Runnable, _Running, bool] | None:
        """The common case of ``_admit_inner`` (one one-shot task), without the list plumbing."""
        lease = ops.new_lease()
        got = self._try_reserve(p.type, lease)
        row = ops.NewTask(
            id=p.id,
            type=p.type,
            params=p.params_json,
            schedule=None,
            timeout=p.timeout,
            status=TaskStatus.RUNNING if got else TaskStatus.QUEUED,
            lease=lease,
            now=self._now_ts(),
            next_run_at=None,
        )
        try:
            results: list[SubmitOutcome] = await self._store.write(ops.InsertTasks((row,)))
        except (Exception, trio.Cancelled) as exc:
            if got:
                self._release(p.type, lease)
            _reply_failed(msg.reply, exc)
            if isinstance(exc, trio.Cancelled):
                raise
            return None
        res = results[0]
        metrics = self._metrics.for_type(p.type)
        if not res.created:
            metrics.deduplicated.inc()
            if got:
                self._release(p.type, lease)
            _reply(msg.reply, outcome.Value(results))
            return None
        metrics.submitted.inc()
        _reply(msg.reply, outcome.Value(results))
        runnable = Runnable(p.id, p.type, res.run, p.params, p.timeout, lease, res.status, False)
        return runnable, self._register(runnable), got

    async def _remove(self, msg: Remove) -> None:
        # Delete, then cancel: a remove the store refuses (failing disk) must change nothing,
        # not cancel the task and leave its row 'running' with no actor (issue 6). An outcome
        # the actor records meanwhile is harmless: committed before the delete, it goes with
        # the row; after it, the lease guard finds no row.
        entry = self._running.get(msg.id)
        try:
            deleted = await self._store.write(ops.DeleteTask(msg.id))
        except Exception as exc:
            _reply(msg.reply, outcome.Error(exc))
            return
        if entry is not None and self._running.get(msg.id) is entry:
            del self._running[msg.id]
            # Mark before cancelling: a removed actor writes nothing, even if its handler
            # returns in this very instant.
            entry.removed = True
            entry.stopped = trio.Event()
            entry.scope.cancel()
            with trio.move_on_after(REMOVE_UNWIND):
                await entry.stopped.wait()
        self._wake_cron.set()
        self._notify(msg.id)
        _reply(msg.reply, outcome.Value(deleted or entry is not None))

    def _try_reserve(self, task_type: str, token: object) -> bool:
        per_type = self._limits.per_type.get(task_type)
        total = self._limits.total
        if per_type is not None:
            try:
                per_type.acquire_on_behalf_of_nowait(token)
            except trio.WouldBlock:
                return False
        if total is not None:
            try:
                total.acquire_on_behalf_of_nowait(token)
            except trio.WouldBlock:
                if per_type is not None:
                    per_type.release_on_behalf_of(token)
                return False
        return True

    async def _reserve(self, task_type: str, token: object) -> None:
        # Type first, then the global pool: a task never holds a global slot while it
        # waits for its type's slot, so one saturated type cannot starve the others.
        per_type = self._limits.per_type.get(task_type)
        total = self._limits.total
        if per_type is not None:
            await per_type.acquire_on_behalf_of(token)
        if total is not None:
            acquired = False
            try:
                await total.acquire_on_behalf_of(token)
                acquired = True
            finally:
                if not acquired and per_type is not None:
                    per_type.release_on_behalf_of(token)

    def _release(self, task_type: str, token: object) -> None:
        per_type = self._limits.per_type.get(task_type)
        for limiter in (self._limits.total, per_type):
            if limiter is not None:
                try:
                    limiter.release_on_behalf_of(token)
                except RuntimeError:
                    pass  # never acquired (cancelled while waiting)

    def _register(self, r: Runnable) -> _Running:
        entry = _Running(lease=r.lease, scope=trio.CancelScope())
        self._running[r.id] = entry
        self._enter()
        return entry

    def _start_actor(self, r: Runnable, *, reserved: bool, validated: bool = False) -> None:
        assert self._nursery is not None
        entry = self._register(r)
        self._nursery.start_soon(self._task_actor, r, entry, reserved, validated)

    async def _task_actor(
        self, r: Runnable, entry: _Running, reserved: bool, validated: bool
    ) -> None:
        """One run of one task: wait for capacity, run the handler, record the outcome.

        This is the isolation boundary: any ``Exception`` from the handler becomes a failed
        record; ``trio.Cancelled`` (remove, shutdown) propagates and nothing is written.
        It is one coroutine on purpose: each extra frame is memory held per running task.
        """
        holds = reserved
        ctx = entry.ctx = TaskContext(
            task_id=r.id, task_type=r.type, run=r.run, home=self._home, services=self._services
        )
        status, result, error = TaskStatus.FAILED, None, None
        try:
            with entry.scope:
                if r.status is TaskStatus.QUEUED:
                    self._queued += 1
                    try:
                        await self._reserve(r.type, r.lease)
                    finally:
                        self._queued -= 1
                    holds = True
                    await self._store.write(
                        ops.StartTask(r.id, r.run, r.lease, self._now_ts(), r.is_schedule)
                    )
                started = trio.current_time()
                try:
                    handler = self._handlers.get(r.type)
                    params = r.params
                    if not validated:
                        params = handler.validate(params, self._validation_context())
                    timeout = r.timeout if r.timeout is not None else handler.timeout
                    if timeout is not None:
                        # The run's deadline lives on the actor's own scope: one cancel
                        # scope per task instead of two.
                        entry.timeout = timeout
                        entry.scope.deadline = trio.current_time() + timeout
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug("task started", extra=_task_extra(r))
                    value = await handler.fn(ctx, params)
                    # Serialized here, inside the boundary: a result that cannot be stored
                    # fails the task (TypeError), never the store or the runtime.
                    status, result = TaskStatus.COMPLETED, dbq.dumps(value)
                except TaskError as exc:
                    log.warning("task failed: %s", exc.message, extra=_task_extra(r))
                    result = _dumps_or_none(exc.result, ctx)
                    error = ErrorInfo(
                        exc.message, type="TaskError", hint=exc.hint, retryable=exc.retryable
                    )
                except Exception as exc:
                    ctx.log.warning("task failed: %r", exc, exc_info=exc)
                    error = ErrorInfo(str(exc) or repr(exc), type=type(exc).__name__)
                finally:
                    self._metrics.for_type(r.type).duration.observe(trio.current_time() - started)
            if entry.removed:
                return
            if entry.scope.cancelled_caught:
                # Only the run's own deadline cancels this scope without `removed` set
                # (shutdown cancels the enclosing nursery instead): a timeout.
                status, result, error = TaskStatus.FAILED, None, _timeout_error(entry.timeout)
                log.warning("task timed out after %gs", entry.timeout, extra=_task_extra(r))
            await self._record(r, status, result, error)
        finally:
            if holds:
                self._release(r.type, r.lease)
            if self._running.get(r.id) is entry:
                del self._running[r.id]
            self._leave()
            if entry.stopped is not None:
                entry.stopped.set()

    def _validation_context(self) -> dict[str, Any]:
        return {"home": self._home, "allow_exec": self._services.allow_exec}

    async def _record(
        self, r: Runnable, status: TaskStatus, result: str | None, error: ErrorInfo | None
    ) -> None:
        """Commit a run's outcome (``result`` already JSON text), retrying while the disk fails."""
        op = ops.FinishTask(
            id=r.id,
            run=r.run,
            lease=r.lease,
            status=status,
            result=result,
            error=None if error is None else dbq.dumps(error.to_json()),
            now=self._now_ts(),
            is_schedule=r.is_schedule,
        )
        delay = 0.05
        while True:
            try:
                await self._store.write(op)
                break
            except StoreUnavailable:
                # The run finished but its outcome is not durable yet: keep trying. If the
                # process stops first, the row is still 'running' and recovery settles it.
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("task %s", status.value, extra=_task_extra(r))
        if status is TaskStatus.COMPLETED:
            self._metrics.for_type(r.type).completed.inc()
        else:
            self._metrics.for_type(r.type).failed.inc()
        self._notify(r.id)

    def _notify(self, task_id: str) -> None:
        event = self._waiters.pop(task_id, None)
        if event is not None:
            event.set()

    def _wake_all_waiters(self) -> None:
        for event in self._waiters.values():
            event.set()
        self._waiters.clear()

    async def _cron_loop(self) -> None:
        startup = True
        while True:
            # A fresh event before reading: a schedule added after the read still wakes us.
            self._wake_cron = trio.Event()
            now = self._now()
            due = await self._store.read(dbq.read_due, format_ts(now), DUE_BATCH)
            if due:
                await self._fire(due, now, startup)
                if len(due) == DUE_BATCH:
                    continue
            startup = False
            nxt = await self._store.read(dbq.read_next_due)
            delay = MAX_IDLE_SLEEP
            if nxt is not None:
                delay = min(delay, max(0.0, (parse_ts(nxt) - self._now()).total_seconds()))
            with trio.move_on_after(delay):
                await self._wake_cron.wait()

    async def _fire(self, due: list[dbq.DueSchedule], now: datetime, startup: bool) -> None:
        now_ts = format_ts(now)
        firings: list[ops.Firing] = []
        reserved: dict[str, bool] = {}
        for d in due:
            nxt = format_ts(next_fire(d.schedule, now))
            due_at = parse_ts(d.next_run_at)
            late = now - due_at
            fire = True
            if d.id in self._running:
                # Overlap guard: the previous firing still runs; skip, but advance.
                fire = False
                self._metrics.overlap_skips.labels(d.type).inc()
                log.warning(
                    "schedule firing skipped: previous run still running",
                    extra={"task_id": d.id, "task_type": d.type},
                )
            elif late > MISFIRE_GRACE:
                self._metrics.misfires.labels(d.schedule.misfire).inc()
                log.warning(
                    "schedule missed %s by %s; misfire policy %s",
                    d.next_run_at,
                    late,
                    d.schedule.misfire,
                    extra={"task_id": d.id, "task_type": d.type},
                )
                fire = d.schedule.misfire == "run-once"
            if d.type not in self._handlers:
                fire = False
            lease = ops.new_lease()
            status = TaskStatus.SCHEDULED
            if fire:
                got = self._try_reserve(d.type, lease)
                reserved[d.id] = got
                status = TaskStatus.RUNNING if got else TaskStatus.QUEUED
                self._metrics.lateness.observe(max(0.0, late.total_seconds()))
            firings.append(ops.Firing(d.id, d.next_run_at, nxt, fire, status, lease, now_ts))
        try:
            results = await self._store.write(ops.FireSchedules(tuple(firings)))
        except StoreUnavailable:
            for f in firings:
                if reserved.get(f.id):
                    self._release(self._type_of(due, f.id), f.lease)
            await trio.sleep(1.0)
            return
        for f, runnable in zip(firings, results, strict=True):
            if runnable is None:
                if reserved.get(f.id):
                    self._release(self._type_of(due, f.id), f.lease)
                continue
            if f.id in self._running:
                continue
            self._start_actor(runnable, reserved=reserved.get(f.id, False))

    @staticmethod
    def _type_of(due: list[dbq.DueSchedule], task_id: str) -> str:
        return next(d.type for d in due if d.id == task_id)

    async def _prune_loop(self) -> None:
        assert self._retention is not None
        keep = timedelta(days=self._retention)
        # Hourly for real retention periods; proportionally sooner for short ones, so a
        # record never outlives its retention by much more than the period itself.
        every = max(1.0, min(PRUNE_EVERY, keep.total_seconds() / 4))
        while True:
            cutoff = format_ts(self._now() - keep)
            try:
                # Chunks until a short one: each write is its own short transaction.
                pruned = await self._store.write(ops.Prune(cutoff))
                while pruned >= ops.PRUNE_CHUNK:
                    pruned = await self._store.write(ops.Prune(cutoff))
            except StoreUnavailable as exc:
                log.warning("retention prune failed: %s", exc)
            await trio.sleep(every)


def _task_extra(r: Runnable) -> dict[str, Any]:
    return {"task_id": r.id, "task_type": r.type, "run": r.run}


def _dumps_or_none(value: Any, ctx: TaskContext) -> str | None:
    try:
        return dbq.dumps(value)
    except (TypeError, ValueError) as exc:
        ctx.log.warning("TaskError result is not JSON; storing none: %s", exc)
        return None


def _timeout_error(timeout: float | None) -> ErrorInfo:
    return ErrorInfo(
        f"timed out after {timeout or 0:g}s",
        type="Timeout",
        hint="raise the task's timeout or make the handler faster",
        retryable=True,
    )


def _reply_failed(reply: Reply[Any], exc: BaseException) -> None:
    """Answer a request whose work failed; a cancelled one answers ShuttingDown.

    The caller is another task: if the admission is cancelled (shutdown past grace) it
    must not be left waiting for an answer forever.
    """
    _reply(reply, outcome.Error(ShuttingDown() if isinstance(exc, trio.Cancelled) else exc))


def _reply(reply: Reply[Any], value: outcome.Outcome[Any]) -> None:
    reply.send_nowait(value)  # never waits on the caller; one that has gone is ignored
