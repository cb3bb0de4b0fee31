"""Synchronous SQLite access: opening, migrations, write operations and queries.

Nothing here is async and nothing here may run on the trio thread: the store actor calls
these functions through ``trio.to_thread.run_sync``, one call in flight per connection.

Contract of every write operation (``apply_*``): it runs inside a transaction the caller
opened, never commits, and returns a plain value. Crash-recovery invariants are commented
where they live.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..clock import parse_ts
from ..errors import SchemaTooNew, StoreCorrupt
from ..models import ErrorInfo, RunRecord, Schedule, SubmitOutcome, TaskResult, TaskStatus
from . import ops
from .ops import new_lease
from .schema import MIGRATIONS, SCHEMA_VERSION

__all__ = ["Database", "connect_reader", "open_database"]

_OUR_TABLES = {"tasks", "task_runs", "meta"}
_ACTIVE = ("running", "queued")


def _json(value: Any) -> str | None:
    # Strict JSON only: NaN/Infinity would be stored as text SQLite's json() rejects, and
    # one such row would break every list page it falls on.
    return None if value is None else json.dumps(value, separators=(",", ":"), allow_nan=False)


def _unjson(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _configure(conn: sqlite3.Connection, synchronous: str) -> None:
    conn.execute("PRAGMA busy_timeout = 5000")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() not in ("wal", "memory"):
        raise StoreCorrupt(f"could not enable WAL journal mode (got {mode!r})")
    conn.execute(f"PRAGMA synchronous = {synchronous}")


def _inspect(conn: sqlite3.Connection, path: str) -> int:
    """Read the schema version and refuse foreign or corrupt files *before* writing anything."""
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
    except sqlite3.DatabaseError as exc:
        raise StoreCorrupt(f"{path} is not a readable SQLite database: {exc}") from None
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{path} has schema version {version}, newer than this sidecar understands "
            f"({SCHEMA_VERSION}); upgrade sidecar or point it at another home. "
            "The file was not modified."
        )
    if version == 0 and tables:
        raise StoreCorrupt(
            f"{path} is a SQLite database but not a sidecar one (tables: "
            f"{', '.join(sorted(tables))}); the file was not modified."
        )
    if version > 0 and not tables >= _OUR_TABLES:
        raise StoreCorrupt(f"{path} claims schema version {version} but lacks sidecar tables")
    return version


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT; roll back if anything fails, the COMMIT itself included.

    (sqlite3's own ``with conn`` does not roll back when the commit fails, e.g. on a full
    disk, which would leave the next ``BEGIN`` failing inside a dangling transaction.)
    """
    conn.execute("BEGIN IMMEDIATE")
    committed = False
    try:
        yield
        conn.execute("COMMIT")
        committed = True
    finally:
        if not committed and conn.in_transaction:
            conn.execute("ROLLBACK")


def _migrate(conn: sqlite3.Connection, current: int) -> None:
    for version, statements in MIGRATIONS:
        if version <= current:
            continue
        # DDL and the version bump commit together: a crash leaves the old version whole.
        with _transaction(conn):
            for sql in statements:
                conn.execute(sql)
            conn.execute(f"PRAGMA user_version = {version}")


def open_database(path: str | Path | None, *, synchronous: str = "NORMAL") -> Database:
    """Open (creating if needed) and migrate the database; ``None`` means in-memory.

    Raises:
        SchemaTooNew: the file was written by a newer sidecar; it is left untouched.
        StoreCorrupt: the file is not a sidecar SQLite database; it is left untouched.
    """
    synchronous = synchronous.upper()
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError("synchronous must be NORMAL or FULL")
    target = ":memory:" if path is None else str(path)
    conn = sqlite3.connect(
        target, isolation_level=None, check_same_thread=False, cached_statements=256
    )
    opened = False
    try:
        version = _inspect(conn, target)
        _configure(conn, synchronous)
        _migrate(conn, version)
        opened = True
    finally:
        if not opened:
            conn.close()
    return Database(conn, None if path is None else Path(path))


def connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection on the same file (WAL lets it read while the writer commits)."""
    conn = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, cached_statements=128
    )
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA query_only = 1")
    return conn


@dataclass(frozen=True, slots=True)
class DueSchedule:
    """A schedule whose ``next_run_at`` has passed, as the scheduler reads it."""

    id: str
    type: str
    schedule: Schedule
    next_run_at: str


@dataclass(frozen=True, slots=True)
class Runnable:
    """A row the scheduler must (re)start an actor for."""

    id: str
    type: str
    run: int
    params: Any
    timeout: float | None
    lease: int
    status: TaskStatus
    is_schedule: bool


_COLUMNS = (
    "id, type, status, run, params, result, error, schedule, submitted_at, "
    "started_at, completed_at, next_run_at"
)


def _row_to_result(row: Sequence[Any]) -> TaskResult:
    (
        id_,
        type_,
        status,
        run,
        params,
        result,
        error,
        schedule,
        submitted,
        started,
        completed,
        next_run,
    ) = row
    return TaskResult(
        id=id_,
        type=type_,
        status=TaskStatus(status),
        run=run,
        params=_unjson(params),
        result=_unjson(result),
        error=None if error is None else ErrorInfo.from_json(json.loads(error)),
        schedule=None if schedule is None else Schedule.from_json(json.loads(schedule)),
        submitted_at=parse_ts(submitted),
        started_at=None if started is None else parse_ts(started),
        completed_at=None if completed is None else parse_ts(completed),
        next_run_at=None if next_run is None else parse_ts(next_run),
    )


class Database:
    """The write connection and the operations the store actor applies with it."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None) -> None:
        self.conn = conn
        self.path = path

    def close(self) -> None:
        try:
            # Fold the WAL back into the main file so a clean stop leaves one file.
            if self.path is not None:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self.conn.close()

    def apply(self, op: ops.WriteOp) -> Any:
        """Apply one write inside the caller's open transaction."""
        match op:
            case ops.InsertTasks():
                return [self._insert(t) for t in op.tasks]
            case ops.StartTask():
                return self._start(op)
            case ops.FinishTask():
                return self._finish(op)
            case ops.DeleteTask():
                return self._delete(op)
            case ops.FireSchedules():
                return [self._fire(f) for f in op.firings]
            case ops.RecoverStale():
                return self._recover(op)
            case ops.Prune():
                return self._prune(op)
            case ops.Heartbeat():
                self.conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('heartbeat', ?)", (op.now,)
                )
                return None
            case _:
                raise TypeError(f"unknown write op {op!r}")

    def commit_batch(self, batch: Sequence[ops.WriteOp]) -> list[Any]:
        """Apply every op in one transaction and commit; roll back and raise on failure."""
        with _transaction(self.conn):
            return [self.apply(op) for op in batch]

    def _insert(self, t: ops.NewTask) -> SubmitOutcome:
        conn = self.conn
        status = t.status.value
        started = t.now if t.status is TaskStatus.RUNNING else None
        run = 0 if t.schedule is not None else 1
        # One statement in the common case (a new id); the existing row is read only when
        # the id is already taken.
        cur = conn.execute(
            "INSERT INTO tasks (id, type, status, run, params, schedule, timeout, lease, "
            "submitted_at, started_at, next_run_at) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (id) DO NOTHING",
            (
                t.id,
                t.type,
                status,
                run,
                t.params,
                t.schedule,
                t.timeout,
                t.lease,
                t.now,
                started,
                t.next_run_at,
            ),
        )
        if cur.rowcount == 1:
            return SubmitOutcome(t.id, created=True, run=run, status=t.status)
        row = conn.execute(
            "SELECT status, run, schedule IS NOT NULL FROM tasks WHERE id = ?", (t.id,)
        ).fetchone()
        old_status, old_run, is_schedule = row
        # Dedup by caller id: a live or completed task, or any schedule, answers as itself.
        if is_schedule or old_status != TaskStatus.FAILED.value:
            return SubmitOutcome(t.id, created=False, run=old_run, status=TaskStatus(old_status))
        # A failed one-shot task runs again as run + 1; keep the failed run in the history.
        self._archive_run(t.id)
        run = old_run if t.schedule is not None else old_run + 1
        conn.execute(
            "UPDATE tasks SET type = ?, status = ?, run = ?, params = ?, result = NULL, "
            "error = NULL, schedule = ?, timeout = ?, lease = ?, submitted_at = ?, "
            "started_at = ?, completed_at = NULL, next_run_at = ? WHERE id = ?",
            (
                t.type,
                status,
                run,
                t.params,
                t.schedule,
                t.timeout,
                t.lease,
                t.now,
                started,
                t.next_run_at,
                t.id,
            ),
        )
        return SubmitOutcome(t.id, created=True, run=run, status=t.status)

    def _archive_run(self, task_id: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO task_runs (task_id, run, status, started_at, completed_at, "
            "result, error) SELECT id, run, status, started_at, completed_at, result, error "
            "FROM tasks WHERE id = ?",
            (task_id,),
        )

    def _start(self, op: ops.StartTask) -> bool:
        cur = self.conn.execute(
            "UPDATE tasks SET status = 'running', started_at = ? "
            "WHERE id = ? AND lease = ? AND status = 'queued'",
            (op.now, op.id, op.lease),
        )
        if cur.rowcount and op.is_schedule:
            self.conn.execute(
                "UPDATE task_runs SET status = 'running', started_at = ? "
                "WHERE task_id = ? AND run = ?",
                (op.now, op.id, op.run),
            )
        return cur.rowcount == 1

    def _finish(self, op: ops.FinishTask) -> bool:
        # The lease guard is what keeps a removed task removed: an UPDATE never inserts, and
        # a row deleted (or re-submitted under a new lease) no longer matches this actor's
        # lease, so a handler finishing in the same instant cannot resurrect or clobber it.
        cur = self.conn.execute(
            "UPDATE tasks SET status = ?, result = ?, error = ?, completed_at = ? "
            "WHERE id = ? AND lease = ? AND status IN ('running', 'queued')",
            (op.status.value, op.result, op.error, op.now, op.id, op.lease),
        )
        if cur.rowcount and op.is_schedule:
            self.conn.execute(
                "UPDATE task_runs SET status = ?, result = ?, error = ?, completed_at = ? "
                "WHERE task_id = ? AND run = ?",
                (op.status.value, op.result, op.error, op.now, op.id, op.run),
            )
        return cur.rowcount == 1

    def _delete(self, op: ops.DeleteTask) -> bool:
        cur = self.conn.execute("DELETE FROM tasks WHERE id = ?", (op.id,))
        self.conn.execute("DELETE FROM task_runs WHERE task_id = ?", (op.id,))
        return cur.rowcount == 1

    def _fire(self, f: ops.Firing) -> Runnable | None:
        # next_run_at advances in the same commit that marks the firing running: a crash
        # mid-run never fires the same instant twice. The expected-value guard makes a
        # concurrent remove or a second evaluation of the same instant a no-op.
        if not f.fire:
            self.conn.execute(
                "UPDATE tasks SET next_run_at = ? WHERE id = ? AND next_run_at = ? "
                "AND schedule IS NOT NULL",
                (f.next_run_at, f.id, f.expected),
            )
            return None
        row = self.conn.execute(
            "UPDATE tasks SET next_run_at = ?, run = run + 1, status = ?, lease = ?, "
            "started_at = ?, completed_at = NULL, result = NULL, error = NULL "
            "WHERE id = ? AND next_run_at = ? AND schedule IS NOT NULL "
            "RETURNING run, type, params, timeout",
            (f.next_run_at, f.status.value, f.lease, f.now, f.id, f.expected),
        ).fetchone()
        if row is None:
            return None
        run, type_, params, timeout = row
        started = f.now if f.status is TaskStatus.RUNNING else None
        self.conn.execute(
            "INSERT OR REPLACE INTO task_runs (task_id, run, status, started_at) "
            "VALUES (?, ?, ?, ?)",
            (f.id, run, f.status.value, started),
        )
        return Runnable(
            f.id, type_, run, _unjson(params), timeout, f.lease, f.status, is_schedule=True
        )

    def _recover(self, op: ops.RecoverStale) -> list[Runnable]:
        """Settle rows a previous process left active; return those to start again."""
        conn = self.conn
        rows = conn.execute(
            "SELECT id, type, status, run, params, timeout, schedule IS NOT NULL "
            "FROM tasks WHERE status IN ('running', 'queued')"
        ).fetchall()
        again: list[Runnable] = []
        interrupted = _json(
            ErrorInfo(
                "interrupted by restart",
                type="Interrupted",
                hint="the process stopped while the task ran; resubmit to run it again",
                retryable=True,
            ).to_json()
        )
        for id_, type_, status, run, params, timeout, is_schedule in rows:
            if type_ not in op.known_types:
                error = _json(
                    ErrorInfo(
                        f"no handler is registered for task type {type_!r}",
                        type="UnknownTaskType",
                        hint="start sidecar with the plugin that provides this type",
                    ).to_json()
                )
                self._fail(id_, run, error, op.now, is_schedule)
            elif is_schedule:
                # Schedules are never stopped by recovery: the firing failed, the schedule
                # carries on from its (already advanced) next_run_at.
                self._fail(id_, run, interrupted, op.now, is_schedule)
            elif status == TaskStatus.QUEUED.value or type_ in op.idempotent_types:
                # A queued task never started, and an idempotent one is safe to repeat:
                # both start again under the same run number with a fresh lease.
                lease = new_lease()
                conn.execute(
                    "UPDATE tasks SET status = 'queued', lease = ?, started_at = NULL WHERE id = ?",
                    (lease, id_),
                )
                again.append(
                    Runnable(
                        id_,
                        type_,
                        run,
                        _unjson(params),
                        timeout,
                        lease,
                        TaskStatus.QUEUED,
                        is_schedule=False,
                    )
                )
            else:
                self._fail(id_, run, interrupted, op.now, is_schedule)
        return again

    def _fail(self, id_: str, run: int, error: str | None, now: str, is_schedule: bool) -> None:
        self.conn.execute(
            "UPDATE tasks SET status = 'failed', error = ?, completed_at = ? WHERE id = ?",
            (error, now, id_),
        )
        if is_schedule:
            self.conn.execute(
                "UPDATE task_runs SET status = 'failed', error = ?, completed_at = ? "
                "WHERE task_id = ? AND run = ?",
                (error, now, id_, run),
            )

    def _prune(self, op: ops.Prune) -> int:
        # Chunked so one prune never holds the write lock long; terminal one-shot rows only.
        cur = self.conn.execute(
            "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE submitted_at < ? "
            "AND schedule IS NULL AND status IN ('completed', 'failed') AND completed_at < ? "
            "ORDER BY submitted_at LIMIT ?)",
            (op.cutoff, op.cutoff, op.limit),
        )
        removed = cur.rowcount
        self.conn.execute(
            "DELETE FROM task_runs WHERE rowid IN (SELECT rowid FROM task_runs "
            "WHERE completed_at < ? LIMIT ?)",
            (op.cutoff, op.limit),
        )
        return removed


def read_get(conn: sqlite3.Connection, task_id: str) -> TaskResult | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return None if row is None else _row_to_result(row)


# One page is read as a single JSON value, i.e. one sqlite3_step. The sqlite3 module
# releases and re-takes the GIL around every row it steps, and while the event loop is busy
# each re-take can wait out a whole GIL switch interval (a convoy): stepping 100 rows from
# the reader thread put list p99 at ~27 ms under concurrent submits, against ~13 ms for the
# same page read in one step (tools/bench_bigdb.py).
_PAGE = (
    "SELECT json_group_array(json_array(submitted_at, id, type, status, run, json(params), "
    "json(result), json(error), json(schedule), started_at, completed_at, next_run_at)) "
    "FROM (SELECT * FROM tasks {where}ORDER BY submitted_at DESC, id DESC LIMIT ?)"
)


def read_list(
    conn: sqlite3.Connection,
    limit: int,
    status: str | None,
    task_type: str | None,
    before: str | None,
) -> list[TaskResult]:
    where: list[str] = []
    args: list[Any] = []
    if before is not None:
        # An unknown cursor compares with NULL: an empty page.
        where.append("(submitted_at, id) < (SELECT submitted_at, id FROM tasks WHERE id = ?)")
        args.append(before)
    if status is not None:
        where.append("status = ?")
        args.append(status)
    if task_type is not None:
        where.append("type = ?")
        args.append(task_type)
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    (page,) = conn.execute(_PAGE.format(where=clause), (*args, limit)).fetchone()
    rows = json.loads(page)
    # An aggregate's order is not guaranteed by SQL; restore newest first explicitly.
    rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
    return [
        TaskResult(
            id=id_,
            type=type_,
            status=TaskStatus(status_),
            run=run,
            params=params,
            result=result,
            error=None if error is None else ErrorInfo.from_json(error),
            schedule=None if schedule is None else Schedule.from_json(schedule),
            submitted_at=parse_ts(submitted),
            started_at=None if started is None else parse_ts(started),
            completed_at=None if completed is None else parse_ts(completed),
            next_run_at=None if next_run is None else parse_ts(next_run),
        )
        for (
            submitted,
            id_,
            type_,
            status_,
            run,
            params,
            result,
            error,
            schedule,
            started,
            completed,
            next_run,
        ) in rows
    ]


def read_runs(conn: sqlite3.Connection, task_id: str) -> list[RunRecord] | None:
    current = read_get(conn, task_id)
    if current is None:
        return None
    # One step for the whole history, as for list pages (see _PAGE).
    (history,) = conn.execute(
        "SELECT json_group_array(json_array(run, status, started_at, completed_at, "
        "json(result), json(error))) FROM task_runs WHERE task_id = ?",
        (task_id,),
    ).fetchone()
    rows = sorted(json.loads(history), key=lambda r: r[0])
    runs = [
        RunRecord(
            task_id=task_id,
            run=run,
            status=TaskStatus(status),
            started_at=None if started is None else parse_ts(started),
            completed_at=None if completed is None else parse_ts(completed),
            result=result,
            error=None if error is None else ErrorInfo.from_json(error),
        )
        for run, status, started, completed, result, error in rows
    ]
    # One-shot tasks archive only superseded runs; the current run lives on the row itself.
    if current.schedule is None and current.run not in {r.run for r in runs}:
        runs.append(
            RunRecord(
                task_id=task_id,
                run=current.run,
                status=current.status,
                started_at=current.started_at,
                completed_at=current.completed_at,
                result=current.result,
                error=current.error,
            )
        )
    return runs


def read_next_due(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT MIN(next_run_at) FROM tasks WHERE schedule IS NOT NULL").fetchone()
    return row[0]


def read_due(conn: sqlite3.Connection, now: str, limit: int) -> list[DueSchedule]:
    # One step for up to `limit` rows, as for list pages (see _PAGE).
    (due,) = conn.execute(
        "SELECT json_group_array(json_array(next_run_at, id, type, json(schedule))) FROM "
        "(SELECT * FROM tasks WHERE schedule IS NOT NULL AND next_run_at <= ? "
        "ORDER BY next_run_at LIMIT ?)",
        (now, limit),
    ).fetchone()
    rows = sorted(json.loads(due), key=lambda r: (r[0], r[1]))
    return [
        DueSchedule(id_, type_, Schedule.from_json(sched), nxt) for nxt, id_, type_, sched in rows
    ]


def read_integrity(conn: sqlite3.Connection) -> str:
    return conn.execute("PRAGMA integrity_check").fetchone()[0]


def dumps(value: Any) -> str | None:
    """JSON text for a column (compact)."""
    return _json(value)
