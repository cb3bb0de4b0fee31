"""The embedded runtime end to end on a file DB: lifecycle, dedup, recovery, shutdown."""

from __future__ import annotations

import sqlite3
import time
import uuid

import pytest
import trio

import sidecar
from sidecar import TaskStatus

from .conftest import noop

gate = trio.Event()


@sidecar.handler("boom")
async def boom(ctx: sidecar.TaskContext, params: dict) -> None:
    raise RuntimeError(f"boom {params.get('n')}")


@sidecar.handler("explain")
async def explain(ctx: sidecar.TaskContext, params: dict) -> None:
    raise sidecar.TaskError(
        "disk quota exceeded", hint="free space under /data", retryable=True, result={"used": 99}
    )


@sidecar.handler("slow")
async def slow(ctx: sidecar.TaskContext, params: dict) -> dict:
    await trio.sleep(params.get("seconds", 5))
    return {"slept": params.get("seconds", 5)}


@sidecar.handler("slow-idempotent", idempotent=True)
async def slow_idempotent(ctx: sidecar.TaskContext, params: dict) -> dict:
    await trio.sleep(params.get("seconds", 5))
    return {"run": ctx.run}


@sidecar.handler("flaky")
async def flaky(ctx: sidecar.TaskContext, params: dict) -> dict:
    if params.get("fail"):
        raise ValueError("asked to fail")
    return {"run": ctx.run}


@sidecar.handler("limited", concurrency=2)
async def limited(ctx: sidecar.TaskContext, params: dict) -> None:
    await trio.sleep(10)


@sidecar.handler("bad-result")
async def bad_result(ctx: sidecar.TaskContext, params: dict) -> object:
    return {"not json": object()}


@sidecar.handler("bad-error-result")
async def bad_error_result(ctx: sidecar.TaskContext, params: dict) -> None:
    raise sidecar.TaskError("failed with junk", result={"x": object()})


@sidecar.handler("timeboxed", timeout=2)
async def timeboxed(ctx: sidecar.TaskContext, params: dict) -> None:
    await trio.sleep(60)


@sidecar.handler("progress")
async def progress(ctx: sidecar.TaskContext, params: dict) -> str:
    ctx.report_progress({"step": 1})
    await trio.sleep(10)
    return "done"


ALL = [
    noop,
    boom,
    explain,
    slow,
    slow_idempotent,
    flaky,
    limited,
    bad_result,
    bad_error_result,
    timeboxed,
    progress,
]


def runtime(home, clock, **kw):
    return sidecar.open_runtime(home, handlers=ALL, clock=clock, **kw)


async def test_whole_lifecycle_on_a_file_db(home, wall_clock, autojump_clock):
    async with runtime(home, wall_clock) as rt:
        task_id = await rt.submit("noop", {"w": 10})
        assert uuid.UUID(task_id).version == 7
        rec = await rt.wait(task_id)
        assert rec.status is TaskStatus.COMPLETED
        assert rec.result == {"echo": {"w": 10}}
        assert rec.params == {"w": 10}
        assert rec.run == 1
        assert rec.submitted_at.tzinfo is not None and rec.completed_at >= rec.started_at
        assert [r.id for r in await rt.list()] == [task_id]
        assert await rt.remove(task_id) is True
        assert await rt.get(task_id) is None
        assert await rt.remove(task_id) is False
    assert (home / "sidecar.db").exists()


async def test_wire_form_is_camel_case_rfc3339(home, wall_clock, autojump_clock):
    async with runtime(home, wall_clock) as rt:
        rec = await rt.wait(await rt.submit("explain"))
    wire = sidecar.record_to_wire(rec)
    assert wire["status"] == "failed"
    assert wire["error"] == "disk quota exceeded (hint: free space under /data)"
    assert wire["errorDetail"] == {
        "message": "disk quota exceeded",
        "type": "TaskError",
        "hint": "free space under /data",
        "retryable": True,
    }
    assert wire["result"] == {"used": 99}
    assert wire["submittedAt"].endswith("Z") and wire["submittedAt"].startswith("2026-01-01T")
    assert "nextRunAt" not in wire and "schedule" not in wire


async def test_bad_input_raises_clear_value_errors(home, wall_clock, autojump_clock):
    async with runtime(home, wall_clock) as rt:
        with pytest.raises(sidecar.UnknownTaskType, match="unknown task type 'nope'"):
            await rt.submit("nope")
        with pytest.raises(sidecar.InvalidTask, match="id must be a UUID"):
            await rt.submit("noop", id="not-a-uuid")
        with pytest.raises(sidecar.InvalidTask, match="params must be a JSON object"):
            await rt.submit("noop", [1, 2])
        with pytest.raises(sidecar.InvalidTask, match="timeout"):
            await rt.submit("noop", timeout=-1)
        with pytest.raises(ValueError):
            await rt.submit("", {})
        assert await rt.list() == []


async def test_dedup_by_caller_id_runs_nothing_twice(home, wall_clock, autojump_clock):
    task_id = str(uuid.uuid4())
    async with runtime(home, wall_clock) as rt:
        first = await rt.submit_ex("slow", {"seconds": 5}, id=task_id)
        assert first.created and first.id == task_id
        while_running = await rt.submit_ex("slow", {"seconds": 5}, id=task_id)
        assert not while_running.created and while_running.status is TaskStatus.RUNNING
        await rt.wait(task_id)
        after = await rt.submit_ex("slow", {"seconds": 5}, id=task_id)
        assert not after.created and after.status is TaskStatus.COMPLETED
        rec = await rt.get(task_id)
        assert rec.run == 1 and rec.status is TaskStatus.COMPLETED


async def test_failed_task_resubmitted_runs_again_as_run_two(home, wall_clock, autojump_clock):
    task_id = str(uuid.uuid4())
    async with runtime(home, wall_clock) as rt:
        await rt.submit("flaky", {"fail": True}, id=task_id)
        first = await rt.wait(task_id)
        assert first.status is TaskStatus.FAILED and first.error.message == "asked to fail"
        await trio.sleep(1)
        out = await rt.submit_ex("flaky", {"fail": False}, id=task_id)
        assert out.created and out.run == 2
        second = await rt.wait(task_id)
        assert second.status is TaskStatus.COMPLETED
        assert second.result == {"run": 2} and second.params == {"fail": False}
        assert second.submitted_at > first.submitted_at
        runs = await rt.runs(task_id)
        assert [(r.run, r.status) for r in runs] == [
            (1, TaskStatus.FAILED),
            (2, TaskStatus.COMPLETED),
        ]


async def test_records_persist_across_reopen_and_dedup_against_them(
    home, wall_clock, autojump_clock
):
    ids = [str(uuid.uuid4()) for _ in range(3)]
    async with runtime(home, wall_clock) as rt:
        for i, task_id in enumerate(ids):
            await rt.submit("noop", {"i": i}, id=task_id)
        for task_id in ids:
            await rt.wait(task_id)
    async with runtime(home, wall_clock) as rt:
        for i, task_id in enumerate(ids):
            rec = await rt.get(task_id)
            assert rec.status is TaskStatus.COMPLETED
            assert rec.params == {"i": i} and rec.result == {"echo": {"i": i}}
        again = await rt.submit_ex("noop", {"i": 0}, id=ids[0])
        assert not again.created
        assert len(await rt.list()) == 3


async def test_recovery_fails_interrupted_tasks_and_reruns_idempotent_ones(
    home, wall_clock, autojump_clock
):
    plain_id, idem_id = str(uuid.uuid4()), str(uuid.uuid4())
    async with runtime(home, wall_clock, grace=0) as rt:
        await rt.submit("slow", {"seconds": 100}, id=plain_id)
        await rt.submit("slow-idempotent", {"seconds": 100}, id=idem_id)
        await trio.sleep(1)
    # Cancelled past grace: the rows stay 'running', exactly as after a crash.
    conn = sqlite3.connect(home / "sidecar.db")
    statuses = dict(conn.execute("SELECT id, status FROM tasks"))
    conn.close()
    assert statuses == {plain_id: "running", idem_id: "running"}
    async with runtime(home, wall_clock) as rt:
        plain = await rt.get(plain_id)
        assert plain.status is TaskStatus.FAILED
        assert plain.error.message == "interrupted by restart" and plain.error.retryable
        idem = await rt.wait(idem_id)
        assert idem.status is TaskStatus.COMPLETED and idem.run == 1
        assert idem.result == {"run": 1}
        # The interrupted task can simply be resubmitted.
        assert (await rt.submit_ex("slow", {"seconds": 1}, id=plain_id)).run == 2


async def test_recovery_fails_rows_whose_type_has_no_handler(home, wall_clock, autojump_clock):
    task_id = str(uuid.uuid4())
    async with runtime(home, wall_clock, grace=0) as rt:
        await rt.submit("slow", {"seconds": 100}, id=task_id)
        await trio.sleep(1)
    async with sidecar.open_runtime(home, handlers=[noop], clock=wall_clock) as rt:
        rec = await rt.get(task_id)
        assert rec.status is TaskStatus.FAILED
        assert "no handler is registered for task type 'slow'" in rec.error.message


async def test_shutdown_drains_running_tasks_within_grace(home, wall_clock, autojump_clock):
    async with runtime(home, wall_clock, grace=10) as rt:
        task_id = await rt.submit("slow", {"seconds": 3})
        start = trio.current_time()
    assert 3 <= trio.current_time() - start < 10
    conn = sqlite3.connect(home / "sidecar.db")
    status, result = conn.execute(
        "SELECT status, result FROM tasks WHERE id=?", (task_id,)
    ).fetchone()
    conn.close()
    assert status == "completed" and result == '{"slept":3}'


async def test_shutdown_cancels_past_grace_and_still_closes_cleanly(
    home, wall_clock, autojump_clock
):
    async with runtime(home, wall_clock, grace=2) as rt:
        task_id = await rt.submit("slow", {"seconds": 1000})
        start = trio.current_time()
    assert 2 <= trio.current_time() - start < 10
    conn = sqlite3.connect(home / "sidecar.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT status FROM tasks WHERE id=?", (task_id,)).fetchone()[0] == (
        "running"
    )
    conn.close()
    assert not (home / "sidecar.db-wal").exists() or (home / "sidecar.db-wal").stat().st_size == 0


async def test_submit_after_shutdown_raises_shutting_down(home, wall_clock, autojump_clock):
    async with runtime(home, wall_clock) as rt:
        rt.begin_shutdown()
        with pytest.raises(sidecar.ShuttingDown):
            await rt.submit("noop")
    with pytest.raises(sidecar.ShuttingDown):
        await rt.submit("noop")
    assert isinstance(sidecar.ShuttingDown(), RuntimeError)


async def test_thousands_of_concurrent_submits_lose_nothing(home, wall_clock, autojump_clock):
    ids: list[str] = []
    async with runtime(home, wall_clock) as rt:

        async def one(i: int) -> None:
            ids.append(await rt.submit("noop", {"i": i}))

        async with trio.open_nursery() as n:
            for i in range(1500):
                n.start_soon(one, i)
    conn = sqlite3.connect(home / "sidecar.db")
    rows = dict(conn.execute("SELECT id, status FROM tasks"))
    conn.close()
    assert len(ids) == len(set(ids)) == 1500
    assert set(rows) == set(ids)
    assert set(rows.values()) == {"completed"}


async def test_remove_while_running_never_resurrects(home, wall_clock, autojump_clock):
    async with runtime(home, wall_clock) as rt:
        for _ in range(50):
            task_id = await rt.submit("slow", {"seconds": 1})
            # Remove at the very instant the handler returns.
            await trio.sleep(1)
            assert await rt.remove(task_id)
            await trio.sleep(0.5)
            assert await rt.get(task_id) is None
        assert await rt.list() == []
    conn = sqlite3.connect(home / "sidecar.db")
    assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0
    conn.close()


async def test_remove_cancels_a_running_handler(home, wall_clock, autojump_clock):
    async with runtime(home, wall_clock) as rt:
        task_id = await rt.submit("slow", {"seconds": 1000})
        await trio.sleep(1)
        start = trio.current_time()
        assert await rt.remove(task_id)
        with pytest.raises(sidecar.TaskNotFound):
            await rt.wait(task_id)
    assert trio.current_time() - start < 1  # shutdown did not wait for it


async def test_handler_exceptions_are_isolated(home, wall_clock, autojump_clock):
    async with runtime(home, wall_clock) as rt:
        slow_id = await rt.submit("slow", {"seconds": 2})
        bad = [await rt.submit("boom", {"n": i}) for i in range(5)]
        unserializable = await rt.submit("bad-result")
        for i, task_id in enumerate(bad):
            rec = await rt.wait(task_id)
            assert rec.status is TaskStatus.FAILED
            assert rec.error.message == f"boom {i}" and rec.error.type == "RuntimeError"
        rec = await rt.wait(unserializable)
        assert rec.status is TaskStatus.FAILED and rec.error.type == "TypeError"
        rec = await rt.wait(await rt.submit("bad-error-result"))
        assert rec.status is TaskStatus.FAILED and rec.error.message == "failed with junk"
        assert rec.result is None
        assert (await rt.wait(slow_id)).status is TaskStatus.COMPLETED
        assert (await rt.wait(await rt.submit("noop"))).status is TaskStatus.COMPLETED


async def test_per_task_timeout_fails_the_task(home, wall_clock, autojump_clock):
    async with runtime(home, wall_clock) as rt:
        default = await rt.wait(await rt.submit("timeboxed"))
        assert default.status is TaskStatus.FAILED and default.error.type == "Timeout"
        assert default.error.message == "timed out after 2s" and default.error.retryable
        override = await rt.wait(await rt.submit("slow", {"seconds": 100}, timeout=0.5))
        assert override.error.message == "timed out after 0.5s"
        assert (override.completed_at - override.started_at).total_seconds() == pytest.approx(
            0.5, abs=0.01
        )


async def test_concurrency_limits_queue_tasks(home, wall_clock, autojump_clock):
    async with runtime(home, wall_clock, concurrency=3) as rt:
        ids = [await rt.submit("slow", {"seconds": 10}) for _ in range(5)]
        statuses = [(await rt.get(i)).status for i in ids]
        assert statuses.count(TaskStatus.RUNNING) == 3
        assert statuses.count(TaskStatus.QUEUED) == 2
        gauge = rt.metrics.registry.get_sample_value
        assert (gauge("sidecar_tasks_running"), gauge("sidecar_tasks_queued")) == (3, 2)
        start = trio.current_time()
        for task_id in ids:
            await rt.wait(task_id)
        assert trio.current_time() - start == pytest.approx(20, abs=0.1)
        per_type = [await rt.submit("limited") for _ in range(3)]
        assert [(await rt.get(i)).status for i in per_type].count(TaskStatus.QUEUED) == 1


async def test_readiness_flips_before_the_record_shows_completed(home, wall_clock, autojump_clock):
    async with runtime(home, wall_clock) as rt:
        assert rt.ready is False
        task_id = await rt.submit("mark-ready")
        rec = await rt.wait(task_id)
        assert rec.status is TaskStatus.COMPLETED and rt.ready is True
        await rt.wait(await rt.submit("mark-not-ready"))
        assert rt.ready is False
    async with runtime(home, wall_clock) as rt:
        assert rt.ready is False  # readiness is not persisted


async def test_progress_shows_while_running(home, wall_clock, autojump_clock):
    async with runtime(home, wall_clock) as rt:
        task_id = await rt.submit("progress")
        await trio.sleep(1)
        assert (await rt.get(task_id)).progress == {"step": 1}
        assert sidecar.record_to_wire(await rt.get(task_id))["progress"] == {"step": 1}
        done = await rt.wait(task_id)
        assert done.progress is None and done.result == "done"


async def test_wait_with_timeout_returns_the_current_record(home, wall_clock, autojump_clock):
    async with runtime(home, wall_clock) as rt:
        task_id = await rt.submit("slow", {"seconds": 100})
        rec = await rt.wait(task_id, timeout=5)
        assert rec.status is TaskStatus.RUNNING
        with pytest.raises(sidecar.TaskNotFound):
            await rt.wait(str(uuid.uuid4()))
        await rt.remove(task_id)


async def test_retention_prunes_old_terminal_records(home, wall_clock, autojump_clock):
    async with runtime(home, wall_clock, retention_days=1) as rt:
        old = await rt.submit("noop")
        await rt.wait(old)
        running = await rt.submit("slow", {"seconds": 4 * 86400})
        await trio.sleep(2 * 86400)
        assert await rt.get(old) is None
        assert (await rt.get(running)).status is TaskStatus.RUNNING
        await rt.remove(running)


async def test_submit_many_commits_valid_and_reports_invalid(home, wall_clock, autojump_clock):
    async with runtime(home, wall_clock) as rt:
        results = await rt.submit_many(
            [
                sidecar.TaskRequest("noop", {"i": 1}),
                sidecar.TaskRequest("nope"),
                sidecar.TaskRequest("noop", id="bad"),
                sidecar.TaskRequest("noop", {"i": 2}),
            ]
        )
        assert isinstance(results[0], sidecar.SubmitOutcome) and results[0].created
        assert isinstance(results[1], sidecar.UnknownTaskType)
        assert isinstance(results[2], sidecar.InvalidTask)
        assert isinstance(results[3], sidecar.SubmitOutcome)
        for res in (results[0], results[3]):
            assert (await rt.wait(res.id)).status is TaskStatus.COMPLETED


async def test_list_filters_and_validates(home, wall_clock, autojump_clock):
    async with runtime(home, wall_clock) as rt:
        ok = await rt.submit("noop")
        bad = await rt.submit("boom")
        await rt.wait(ok)
        await rt.wait(bad)
        assert [r.id for r in await rt.list(status="failed")] == [bad]
        assert [r.id for r in await rt.list(type="noop")] == [ok]
        assert [r.id for r in await rt.list(limit=1)] == [bad]
        assert [r.id for r in await rt.list(before=bad)] == [ok]
        with pytest.raises(sidecar.InvalidTask, match="limit"):
            await rt.list(limit=0)
        with pytest.raises(sidecar.InvalidTask, match="status must be one of"):
            await rt.list(status="bogus")


async def test_in_memory_runtime_for_tests(wall_clock, autojump_clock):
    async with sidecar.open_runtime(None, handlers=[noop], clock=wall_clock) as rt:
        rec = await rt.wait(await rt.submit("noop", {"x": 1}))
        assert rec.result == {"echo": {"x": 1}}
        await rt.ping()


async def test_exception_in_the_body_propagates_unwrapped_after_draining(
    home, wall_clock, autojump_clock
):
    with pytest.raises(KeyError):
        async with runtime(home, wall_clock, grace=10) as rt:
            task_id = await rt.submit("slow", {"seconds": 3})
            raise KeyError("caller bug")
    conn = sqlite3.connect(home / "sidecar.db")
    assert conn.execute("SELECT status FROM tasks WHERE id=?", (task_id,)).fetchone()[0] == (
        "completed"
    )
    conn.close()


async def test_newer_schema_refuses_to_start(home, wall_clock):
    home.mkdir()
    conn = sqlite3.connect(home / "sidecar.db")
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(sidecar.SchemaTooNew):
        async with runtime(home, wall_clock):
            pass


async def test_duplicate_handler_type_is_rejected(home):
    @sidecar.handler("noop")
    async def other(ctx, params):
        return None

    with pytest.raises(sidecar.HandlerConflict, match="registered twice"):
        async with sidecar.open_runtime(home, handlers=[noop, other]):
            pass


async def test_task_events_are_logged_with_task_id_and_type(
    home, wall_clock, autojump_clock, caplog
):
    caplog.set_level("DEBUG", logger="sidecar")
    async with runtime(home, wall_clock) as rt:
        ok = await rt.submit("noop")
        await rt.wait(ok)
        bad = await rt.submit("explain")
        await rt.wait(bad)
    events = [
        (r.getMessage(), r.task_id, r.task_type)
        for r in caplog.records
        if getattr(r, "task_id", None) in (ok, bad)
    ]
    assert ("task started", ok, "noop") in events
    assert ("task completed", ok, "noop") in events
    assert ("task failed: disk quota exceeded", bad, "explain") in events
    assert ("task failed", bad, "explain") in events


async def test_end_grace_cancels_running_tasks_and_still_closes_cleanly(
    home, wall_clock, autojump_clock
):
    async with runtime(home, wall_clock, grace=600) as rt:
        task_id = await rt.submit("slow", {"seconds": 1000})
        await trio.sleep(1)
        start = trio.current_time()
        rt.end_grace()
        with pytest.raises(sidecar.ShuttingDown):
            await rt.submit("noop")
    assert trio.current_time() - start < 1
    conn = sqlite3.connect(home / "sidecar.db")
    assert conn.execute("SELECT status FROM tasks WHERE id=?", (task_id,)).fetchone()[0] == (
        "running"
    )
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


async def test_a_submit_cut_off_by_shutdown_answers_shutting_down(home, wall_clock):
    # Real clock: the writer thread really is slow while the grace period runs out.
    commits = 0

    def slow_disk() -> None:
        nonlocal commits
        commits += 1
        if commits > 1:  # after start-up recovery
            time.sleep(0.3)

    outcome: list[str] = []

    async def caller(rt: sidecar.Runtime) -> None:
        try:
            await rt.submit("noop")
            outcome.append("accepted")
        except sidecar.ShuttingDown:
            outcome.append("shutting down")

    with trio.fail_after(10):
        async with (
            trio.open_nursery() as callers,
            runtime(home, wall_clock, grace=0, store_fault_hook=slow_disk) as rt,
        ):
            callers.start_soon(caller, rt)
            await trio.sleep(0.05)
    assert outcome == ["shutting down"]


async def test_retention_prunes_a_schedules_old_run_history(home, wall_clock, autojump_clock):
    async with runtime(home, wall_clock, retention_days=1) as rt:
        sid = await rt.submit("noop", schedule=sidecar.Schedule("@hourly"))
        await trio.sleep(3 * 86400 + 60)
        runs = await rt.runs(sid)
        # 72 firings happened; only about a day's worth (plus one prune period) is kept.
        assert (await rt.get(sid)).run == 72
        assert 24 <= len(runs) <= 24 + 7
        oldest = min(r.started_at for r in runs)
        assert (wall_clock.now() - oldest).total_seconds() <= (24 + 7) * 3600


async def test_non_json_numbers_are_refused_and_never_break_listing(
    home, wall_clock, autojump_clock
):
    async with runtime(home, wall_clock) as rt:
        with pytest.raises(sidecar.InvalidParams, match="params must be plain JSON"):
            await rt.submit("noop", {"x": float("nan")})
        with pytest.raises(sidecar.InvalidParams, match="params must be plain JSON"):
            await rt.submit("noop", {"x": float("inf")})

        @sidecar.handler("nan-result")
        async def nan_result(ctx: sidecar.TaskContext, params: dict) -> float:
            return float("nan")

    async with sidecar.open_runtime(home, handlers=[nan_result], clock=wall_clock) as rt:
        rec = await rt.wait(await rt.submit("nan-result"))
        assert rec.status is TaskStatus.FAILED and rec.error.type == "ValueError"
        assert [r.id for r in await rt.list()] == [rec.id]
