"""Faults (issue 6): a disk that stops writing, and database files sidecar must refuse.

A failing disk is injected with ``open_runtime(store_fault_hook=...)``, which runs in the
writer thread before each commit (as root, a read-only file does not stop writes, and a
loop-mounted full filesystem is not available in CI). Where the failure must happen in the
*middle* of a transaction, the hook shrinks SQLite's ``max_page_count`` instead, so a large
batch really runs out of space part-way, exactly like a full disk.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import trio

import sidecar
from sidecar import TaskStatus
from sidecar.errors import StoreUnavailable
from sidecar.http import create_app
from sidecar.metrics import Metrics
from sidecar.store import StoreActor, open_database, ops

from .conftest import noop

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
FULL = "database or disk is full"


class Disk:
    """A store fault hook: while ``broken``, every commit fails as a full disk does."""

    def __init__(self) -> None:
        self.broken = False
        self.failures = 0

    def __call__(self) -> None:
        if self.broken:
            self.failures += 1
            raise sqlite3.OperationalError(FULL)


async def test_a_failing_disk_is_503_while_reads_go_on_and_it_recovers_without_restart(
    tmp_path,
):
    disk = Disk()
    async with sidecar.open_runtime(tmp_path, handlers=[noop], store_fault_hook=disk) as rt:
        client = create_app(rt).test_client()
        resp = await client.post("/v0/tasks", json={"type": "noop", "params": {"n": 1}})
        assert resp.status_code == 201
        done = (await resp.get_json())["id"]
        assert (await rt.wait(done, timeout=5)).status is TaskStatus.COMPLETED

        disk.broken = True
        refused = str(uuid.uuid4())
        resp = await client.post("/v0/tasks", json={"type": "noop", "id": refused})
        assert resp.status_code == 503
        assert resp.content_type == "application/json"
        error = (await resp.get_json())["error"]
        assert "store unavailable" in error and FULL in error
        resp = await client.post("/v0/tasks/batch", json={"tasks": [{"type": "noop"}] * 3})
        assert resp.status_code == 503
        assert FULL in (await resp.get_json())["error"]

        assert (await client.get("/v0/livez")).status_code == 503
        resp = await client.get("/v0/livez?verbose=1")
        assert resp.status_code == 503
        assert FULL in (await resp.get_json())["error"]
        assert rt.store_error is not None and FULL in rt.store_error

        # The process stays up and keeps serving what is already stored.
        resp = await client.get(f"/v0/tasks/{done}")
        assert resp.status_code == 200
        assert (await resp.get_json())["status"] == "completed"
        listed = await (await client.get("/v0/tasks")).get_json()
        assert [r["id"] for r in listed] == [done]  # nothing of the refused submits
        assert (await client.get(f"/v0/tasks/{refused}")).status_code == 404
        assert (await client.get("/v0/status")).status_code == 200

        disk.broken = False
        assert (await client.get("/v0/livez")).status_code == 200
        assert rt.store_error is None
        resp = await client.post("/v0/tasks", json={"type": "noop", "id": refused})
        assert resp.status_code == 201  # created now: the failed attempt left nothing behind
        rec = await rt.wait(refused, timeout=5)
        assert rec.status is TaskStatus.COMPLETED and rec.run == 1
    assert disk.failures >= 4


async def test_under_intermittent_faults_the_db_holds_exactly_the_acknowledged_submits(
    tmp_path, wall_clock, autojump_clock
):
    rng = random.Random(6)

    def flaky_disk() -> None:
        if rng.random() < 0.3:
            raise sqlite3.OperationalError("disk I/O error")

    acknowledged: set[str] = set()
    refused: set[str] = set()
    async with sidecar.open_runtime(
        tmp_path, handlers=[noop], clock=wall_clock, store_fault_hook=flaky_disk
    ) as rt:

        async def submit(i: int) -> None:
            task_id = str(uuid.uuid4())
            try:
                await rt.submit("noop", {"i": i}, id=task_id)
            except StoreUnavailable:
                refused.add(task_id)
            else:
                acknowledged.add(task_id)

        for wave in range(15):  # waves of 4: group commits of varying size
            async with trio.open_nursery() as nursery:
                for i in range(4):
                    nursery.start_soon(submit, wave * 4 + i)
        stored = {rec.id for rec in await rt.list(limit=1000)}
        for task_id in acknowledged:  # and every outcome gets written eventually
            assert (await rt.wait(task_id, timeout=60)).status is TaskStatus.COMPLETED
    assert refused, "the fault pattern should refuse some submits"
    assert acknowledged, "a failed batch is retried op by op, so others still commit"
    assert stored == acknowledged


async def test_a_disk_that_fills_mid_transaction_leaves_no_partial_rows(tmp_path):
    db = await trio.to_thread.run_sync(open_database, tmp_path / "sidecar.db")
    limit: int | None = None
    changes: list[int] = []

    def disk() -> None:
        # Runs in the writer thread, on the writer's connection, before each commit.
        changes.append(db.conn.total_changes)
        db.conn.execute(f"PRAGMA max_page_count = {limit or 1_000_000}")

    def page_count(conn: sqlite3.Connection) -> int:
        return conn.execute("PRAGMA page_count").fetchone()[0]

    def count(conn: sqlite3.Connection) -> int:
        return conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]

    def new(i: int) -> ops.NewTask:
        return ops.NewTask(
            id=f"t-{i:04d}",
            type="noop",
            params='{"pad":"' + "x" * 2000 + '"}',
            schedule=None,
            timeout=None,
            status=TaskStatus.COMPLETED,
            lease=1,
            now="2026-01-01T00:00:00.000000Z",
            next_run_at=None,
        )

    batch = ops.InsertTasks(tuple(new(i) for i in range(200)))  # ~100 pages of rows
    actor = StoreActor(db, metrics=Metrics(), fault_hook=disk)
    async with trio.open_nursery() as nursery:
        store = await nursery.start(actor.run)
        limit = await store.read(page_count) + 3  # room for a few rows, not for 200
        with pytest.raises(StoreUnavailable, match=FULL):
            await store.write(batch)
        await store.write(ops.Heartbeat("2026-01-01T00:00:01.000000Z"))  # fits; lets us look
        assert changes[-1] - changes[-2] > 0, "rows were inserted before the disk filled up"
        assert await store.read(count) == 0, "and all of them were rolled back"

        limit = None  # space freed: the same batch now goes in whole
        assert all(r.created for r in await store.write(batch))
        assert await store.read(count) == 200
        store.close()
    check = await trio.to_thread.run_sync(_integrity, tmp_path / "sidecar.db")
    assert check == "ok"


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


async def test_an_outcome_the_disk_refused_is_retried_and_recorded_once_it_clears(
    tmp_path, wall_clock, autojump_clock
):
    release_event = trio.Event()

    @sidecar.handler("held-here")
    async def held_here(ctx: sidecar.TaskContext, params: dict) -> str:
        await release_event.wait()
        return "released"

    disk = Disk()
    async with sidecar.open_runtime(
        tmp_path, handlers=[held_here], clock=wall_clock, store_fault_hook=disk
    ) as rt:
        task_id = await rt.submit("held-here")
        disk.broken = True
        release_event.set()
        await trio.sleep(60)  # the scheduler retries FinishTask with backoff meanwhile
        assert disk.failures >= 5
        rec = await rt.get(task_id)
        assert rec is not None and rec.status is TaskStatus.RUNNING  # not durable yet

        disk.broken = False
        rec = await rt.wait(task_id, timeout=30)
        assert rec.status is TaskStatus.COMPLETED
        assert (rec.run, rec.result) == (1, "released")
        assert [r.status for r in await rt.runs(task_id)] == [TaskStatus.COMPLETED]


def _serve_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}


async def _start_fault_server(tmp_path: Path, flag: Path) -> tuple[trio.Process, str]:
    port_file = tmp_path / "url"
    log = (tmp_path / "serve.log").open("wb")
    with log:
        proc = await trio.lowlevel.open_process(
            [
                sys.executable,
                str(HERE / "fault_serve.py"),
                str(tmp_path / "home"),
                str(port_file),
                str(flag),
            ],
            cwd=REPO,
            env=_serve_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    with trio.fail_after(15):
        while not port_file.exists():
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            await trio.sleep(0.02)
    return proc, port_file.read_text().strip()


@pytest.mark.e2e
async def test_a_real_server_on_a_failing_disk_answers_503_and_recovers(tmp_path):
    flag = tmp_path / "disk-full"
    proc, url = await _start_fault_server(tmp_path, flag)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            resp = await client.post("/v0/tasks", json={"type": "mark-ready"})
            assert resp.status_code == 201
            done = resp.json()["id"]
            resp = await client.get(f"/v0/tasks/{done}", params={"wait": 5})
            assert resp.json()["status"] == "completed"

            flag.touch()
            resp = await client.post("/v0/tasks", json={"type": "mark-ready"})
            assert resp.status_code == 503
            assert FULL in resp.json()["error"]
            assert (await client.get("/v0/livez")).status_code == 503
            resp = await client.get("/v0/livez", params={"verbose": 1})
            assert resp.status_code == 503 and FULL in resp.json()["error"]
            assert (await client.get(f"/v0/tasks/{done}")).json()["status"] == "completed"
            assert [r["id"] for r in (await client.get("/v0/tasks")).json()] == [done]

            flag.unlink()
            assert (await client.get("/v0/livez")).status_code == 200
            resp = await client.post("/v0/tasks", json={"type": "mark-ready"})
            assert resp.status_code == 201
        proc.terminate()
        with trio.fail_after(15):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
    assert "store write failed" in (tmp_path / "serve.log").read_text()


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database\n" * 200)


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL);")
    conn.execute("INSERT INTO invoices (total) VALUES (9.5)")
    conn.commit()
    conn.close()


def _newer(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE tasks (id TEXT PRIMARY KEY); CREATE TABLE task_runs (task_id TEXT);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT); PRAGMA user_version = 99;"
    )
    conn.close()


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_garbage, "is not a readable SQLite database"),
        (_foreign, "is a SQLite database but not a sidecar one"),
        (_newer, "has schema version 99, newer than this sidecar understands"),
    ],
    ids=["garbage", "foreign-sqlite", "newer-version"],
)
async def test_serve_refuses_a_db_file_it_cannot_use_and_leaves_it_untouched(
    tmp_path, make, message
):
    home = tmp_path / "home"
    await trio.Path(home).mkdir()
    db = home / "sidecar.db"
    await trio.to_thread.run_sync(make, db)
    before = await trio.Path(db).read_bytes()
    with trio.fail_after(20):
        result = await trio.run_process(
            [sys.executable, "-m", "sidecar", "serve", "--home", str(home), "--port", "0"],
            cwd=REPO,
            env=_serve_env(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    err = result.stderr.decode()
    assert result.returncode != 0
    assert message in err
    assert str(db) in err
    assert "Traceback" not in err
    assert await trio.Path(db).read_bytes() == before
    assert sorted(p.name for p in await trio.Path(home).iterdir()) == ["sidecar.db"]


async def test_a_remove_the_disk_refused_leaves_the_task_running_untouched(
    tmp_path, wall_clock, autojump_clock
):
    release_event = trio.Event()

    @sidecar.handler("held-for-remove")
    async def held_for_remove(ctx: sidecar.TaskContext, params: dict) -> str:
        await release_event.wait()
        return "released"

    disk = Disk()
    async with sidecar.open_runtime(
        tmp_path, handlers=[held_for_remove], clock=wall_clock, store_fault_hook=disk
    ) as rt:
        task_id = await rt.submit("held-for-remove")
        disk.broken = True
        with pytest.raises(StoreUnavailable):
            await rt.remove(task_id)
        disk.broken = False
        # The refused remove changed nothing: the task still runs and finishes normally,
        # rather than being cancelled with its row left 'running' and no actor behind it.
        release_event.set()
        rec = await rt.wait(task_id, timeout=30)
        assert (rec.status, rec.result) == (TaskStatus.COMPLETED, "released")
