"""The store on its own: migrations, refusal of foreign files, write ops, queries."""

from __future__ import annotations

import sqlite3

import pytest
import trio

from sidecar.clock import format_ts
from sidecar.errors import SchemaTooNew, StoreCorrupt, StoreUnavailable
from sidecar.metrics import Metrics
from sidecar.models import TaskStatus
from sidecar.store import StoreActor, open_database, ops
from sidecar.store import db as dbq
from sidecar.store.schema import SCHEMA_VERSION

from .conftest import EPOCH

NOW = format_ts(EPOCH)


def new_task(task_id: str, *, status=TaskStatus.RUNNING, lease=1, params='{"a":1}', now=NOW):
    return ops.NewTask(
        id=task_id,
        type="noop",
        params=params,
        schedule=None,
        timeout=None,
        status=status,
        lease=lease,
        now=now,
        next_run_at=None,
    )


def test_migrates_an_empty_database_to_the_current_version():
    db = open_database(None)
    assert db.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in db.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"tasks", "task_runs", "meta"} <= tables
    db.close()


def test_file_database_uses_wal_and_reopens_without_migrating_again(tmp_path):
    path = tmp_path / "sidecar.db"
    db = open_database(path)
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    assert db.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    db.commit_batch([ops.InsertTasks((new_task("a"),))])
    db.close()
    db = open_database(path, synchronous="FULL")
    assert db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert db.conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 1
    db.close()


def test_newer_schema_is_refused_and_the_file_left_untouched(tmp_path):
    path = tmp_path / "sidecar.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(SchemaTooNew, match="newer than this sidecar"):
        open_database(path)
    assert path.read_bytes() == before
    assert not (tmp_path / "sidecar.db-wal").exists()


def test_foreign_sqlite_database_is_refused_untouched(tmp_path):
    path = tmp_path / "sidecar.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreCorrupt, match="not a sidecar one"):
        open_database(path)
    assert path.read_bytes() == before


def test_garbage_file_is_refused_untouched(tmp_path):
    path = tmp_path / "sidecar.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    before = path.read_bytes()
    with pytest.raises(StoreCorrupt, match="not a readable SQLite database"):
        open_database(path)
    assert path.read_bytes() == before


def test_insert_deduplicates_live_rows_and_reruns_failed_ones():
    db = open_database(None)
    (first,) = db.commit_batch([ops.InsertTasks((new_task("a"),))])[0]
    assert first.created and first.run == 1
    (again,) = db.commit_batch([ops.InsertTasks((new_task("a", lease=2),))])[0]
    assert not again.created and again.status is TaskStatus.RUNNING
    db.commit_batch([ops.FinishTask("a", 1, 1, TaskStatus.FAILED, None, '{"message":"x"}', NOW)])
    (rerun,) = db.commit_batch([ops.InsertTasks((new_task("a", lease=3, params='{"b":2}'),))])[0]
    assert rerun.created and rerun.run == 2
    rec = dbq.read_get(db.conn, "a")
    assert rec.run == 2 and rec.params == {"b": 2} and rec.error is None
    runs = dbq.read_runs(db.conn, "a")
    assert [(r.run, r.status) for r in runs] == [(1, TaskStatus.FAILED), (2, TaskStatus.RUNNING)]


def test_finish_needs_the_current_lease_and_never_resurrects_a_deleted_row():
    db = open_database(None)
    db.commit_batch([ops.InsertTasks((new_task("a", lease=7),))])
    assert db.commit_batch([ops.DeleteTask("a")]) == [True]
    done = ops.FinishTask("a", 1, 7, TaskStatus.COMPLETED, '{"ok":true}', None, NOW)
    assert db.commit_batch([done]) == [False]
    assert dbq.read_get(db.conn, "a") is None
    db.commit_batch([ops.InsertTasks((new_task("b", lease=1),))])
    stale = ops.FinishTask("b", 1, 999, TaskStatus.COMPLETED, None, None, NOW)
    assert db.commit_batch([stale]) == [False]
    assert dbq.read_get(db.conn, "b").status is TaskStatus.RUNNING


def test_list_is_newest_first_and_pages_with_a_cursor():
    db = open_database(None)
    for i in range(25):
        ts = format_ts(EPOCH.replace(second=i))
        db.commit_batch([ops.InsertTasks((new_task(f"t{i:02d}", now=ts),))])
    page1 = dbq.read_list(db.conn, 10, None, None, None)
    assert [r.id for r in page1] == [f"t{i:02d}" for i in range(24, 14, -1)]
    page2 = dbq.read_list(db.conn, 10, None, None, page1[-1].id)
    assert [r.id for r in page2] == [f"t{i:02d}" for i in range(14, 4, -1)]
    page3 = dbq.read_list(db.conn, 10, None, None, page2[-1].id)
    assert [r.id for r in page3] == [f"t{i:02d}" for i in range(4, -1, -1)]
    assert dbq.read_list(db.conn, 10, "completed", None, None) == []
    assert len(dbq.read_list(db.conn, 100, "running", "noop", None)) == 25


def test_recovery_fails_interrupted_reruns_idempotent_and_queued():
    db = open_database(None)
    rows = [new_task("plain"), new_task("idem"), new_task("waiting", status=TaskStatus.QUEUED)]
    rows.append(
        ops.NewTask("ghost", "gone-type", None, None, None, TaskStatus.RUNNING, 1, NOW, None)
    )
    db.commit_batch([ops.InsertTasks(tuple(rows))])
    db.conn.execute("UPDATE tasks SET type = 'idem' WHERE id = 'idem'")
    (again,) = db.commit_batch(
        [ops.RecoverStale(NOW, frozenset({"noop", "idem"}), frozenset({"idem"}))]
    )
    assert sorted(r.id for r in again) == ["idem", "waiting"]
    plain = dbq.read_get(db.conn, "plain")
    assert plain.status is TaskStatus.FAILED
    assert plain.error.message == "interrupted by restart" and plain.error.retryable
    ghost = dbq.read_get(db.conn, "ghost")
    assert ghost.status is TaskStatus.FAILED and "gone-type" in ghost.error.message


def test_prune_removes_only_old_terminal_one_shot_rows():
    db = open_database(None)
    old = format_ts(EPOCH)
    db.commit_batch([ops.InsertTasks((new_task("old", now=old), new_task("live", now=old)))])
    db.commit_batch([ops.FinishTask("old", 1, 1, TaskStatus.COMPLETED, None, None, old)])
    cutoff = format_ts(EPOCH.replace(year=2027))
    assert db.commit_batch([ops.Prune(cutoff)]) == [1]
    assert dbq.read_get(db.conn, "old") is None
    assert dbq.read_get(db.conn, "live") is not None


async def test_store_actor_group_commits_concurrent_writes():
    db = open_database(None)
    metrics = Metrics()
    actor = StoreActor(db, metrics=metrics)
    async with trio.open_nursery() as n:
        store = await n.start(actor.run)
        results = {}

        async def insert(i: int) -> None:
            (res,) = await store.write(ops.InsertTasks((new_task(f"id-{i}"),)))
            results[i] = res

        async with trio.open_nursery() as writers:
            for i in range(500):
                writers.start_soon(insert, i)
        store.close()
    assert len(results) == 500 and all(r.created for r in results.values())
    batches = metrics.batch_size.collect()[0].samples
    count = next(s.value for s in batches if s.name.endswith("_count"))
    assert count < 500  # fewer transactions than writes: they were batched


async def test_store_actor_reports_a_failing_disk_and_recovers_when_it_clears():
    db = open_database(None)
    broken = True

    def fault() -> None:
        if broken:
            raise sqlite3.OperationalError("disk I/O error")

    actor = StoreActor(db, metrics=Metrics(), fault_hook=fault)
    async with trio.open_nursery() as n:
        store = await n.start(actor.run)
        with pytest.raises(StoreUnavailable, match="disk I/O error"):
            await store.write(ops.InsertTasks((new_task("a"),)))
        assert actor.last_error is not None
        assert await store.read(dbq.read_get, "a") is None  # nothing half-written
        broken = False
        (res,) = await store.write(ops.InsertTasks((new_task("a"),)))
        assert res.created and actor.last_error is None
        store.close()


class _CommitFails:
    """A connection whose next COMMIT fails, as on a disk that fills at commit time."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.fail_next_commit = True

    def execute(self, sql: str, *args):
        if sql == "COMMIT" and self.fail_next_commit:
            self.fail_next_commit = False
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction


def test_a_failed_commit_is_rolled_back_and_the_next_batch_goes_in():
    db = open_database(None)
    real = db.conn
    db.conn = _CommitFails(real)
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        db.commit_batch([ops.InsertTasks((new_task("a"),))])
    assert not real.in_transaction
    assert dbq.read_get(real, "a") is None
    (res,) = db.commit_batch([ops.InsertTasks((new_task("b"),))])[0]
    assert res.created and dbq.read_get(real, "b") is not None
