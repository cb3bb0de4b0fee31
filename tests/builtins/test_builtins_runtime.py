"""The built-ins through a real runtime: submit-time 400s, stored results and errors."""

import os
import sys
import textwrap

import pytest
import trio

import sidecar
from sidecar.errors import InvalidParams
from sidecar.models import TaskStatus


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


async def test_every_builtin_is_registered(home):
    async with sidecar.open_runtime(home) as rt:
        assert set(rt.handlers.types()) >= {
            "mark-ready",
            "mark-not-ready",
            "sleep",
            "config-patch",
            "await-condition",
            "http-request",
            "exec",
        }
        assert rt.handlers.idempotent_types() >= {"sleep", "config-patch", "await-condition"}


async def test_sleep_runs_on_the_runtime_clock(autojump_clock, home, wall_clock):
    async with sidecar.open_runtime(home, clock=wall_clock) as rt:
        task_id = await rt.submit("sleep", {"seconds": 30})
        rec = await rt.wait(task_id)
    assert rec.status is TaskStatus.COMPLETED
    assert rec.result == {"slept": 30.0}


async def test_config_patch_result_is_stored_and_traversal_is_refused_at_submit(home):
    async with sidecar.open_runtime(home) as rt:
        with pytest.raises(InvalidParams) as info:
            await rt.submit("config-patch", {"file": "../escape.toml", "patch": {}})
        assert info.value.field == "file"
        (home / "node.toml").write_text("# keep me\n[a]\nb = 1\n")
        task_id = await rt.submit("config-patch", {"file": "node.toml", "patch": {"a": {"b": 2}}})
        rec = await rt.wait(task_id, timeout=10)
    assert rec.status is TaskStatus.COMPLETED, rec.error
    assert rec.result["changed"] is True
    assert (home / "node.toml").read_text() == "# keep me\n[a]\nb = 2\n"


async def test_a_broken_config_file_fails_the_task_and_stays_untouched(home):
    async with sidecar.open_runtime(home) as rt:
        (home / "node.json").write_bytes(b'{"a": ')
        task_id = await rt.submit("config-patch", {"file": "node.json", "patch": {"a": 1}})
        rec = await rt.wait(task_id, timeout=10)
    assert rec.status is TaskStatus.FAILED
    assert rec.error.type == "TaskError"
    assert rec.error.message.startswith("node.json is not valid JSON: Expecting value")
    assert (home / "node.json").read_bytes() == b'{"a": '


async def test_exec_is_refused_at_submit_unless_allowed(home):
    async with sidecar.open_runtime(home) as rt:
        with pytest.raises(InvalidParams, match="exec is disabled"):
            await rt.submit("exec", {"argv": ["true"]})


async def test_exec_failure_stores_the_result_on_the_failed_record(home):
    code = "import sys; print('out'); sys.exit(4)"
    async with sidecar.open_runtime(home, allow_exec=True) as rt:
        task_id = await rt.submit("exec", {"argv": [sys.executable, "-c", code]})
        rec = await rt.wait(task_id, timeout=10)
    assert rec.status is TaskStatus.FAILED
    assert rec.error.message == "exited with code 4"
    assert rec.result == {"exitCode": 4, "stdoutTail": "out\n", "stderrTail": ""}
    wire = sidecar.models.record_to_wire(rec)
    assert wire["error"] == "exited with code 4" and wire["result"]["exitCode"] == 4


async def test_the_task_timeout_kills_exec_process_group(home):
    code = textwrap.dedent(
        """
        import os, time
        open("pid", "w").write(str(os.getpid()))
        time.sleep(60)
        """
    )
    async with sidecar.open_runtime(home, allow_exec=True) as rt:
        task_id = await rt.submit("exec", {"argv": [sys.executable, "-c", code]}, timeout=0.5)
        rec = await rt.wait(task_id, timeout=10)
    assert rec.status is TaskStatus.FAILED
    assert "timed out" in rec.error.message
    assert gone(int((home / "pid").read_text()))


async def test_removing_a_running_exec_task_kills_its_process(home):
    code = textwrap.dedent(
        """
        import os, time
        open("pid.tmp", "w").write(str(os.getpid()))
        os.rename("pid.tmp", "pid")
        time.sleep(60)
        """
    )
    async with sidecar.open_runtime(home, allow_exec=True) as rt:
        task_id = await rt.submit("exec", {"argv": [sys.executable, "-c", code]})
        with trio.fail_after(5):
            while not (home / "pid").exists():
                await trio.sleep(0.01)
        pid = int((home / "pid").read_text())
        assert await rt.remove(task_id)
    assert gone(pid)


async def test_await_condition_progress_shows_on_the_running_record(home):
    async with sidecar.open_runtime(home) as rt:
        task_id = await rt.submit(
            "await-condition", {"file": "flag", "interval": 0.02, "timeout": 10}
        )
        with trio.fail_after(5):
            while (rec := await rt.get(task_id)).progress is None:
                await trio.sleep(0.01)
        assert rec.status is TaskStatus.RUNNING
        assert rec.progress["last"] == {"exists": False}
        assert sidecar.models.record_to_wire(rec)["progress"]["attempts"] >= 1
        (home / "flag").write_text("")
        rec = await rt.wait(task_id, timeout=10)
    assert rec.status is TaskStatus.COMPLETED
    assert rec.result["last"] == {"exists": True}


async def test_an_in_memory_runtime_refuses_paths_under_home():
    async with sidecar.open_runtime(None) as rt:
        with pytest.raises(InvalidParams, match="needs a runtime with a home directory"):
            await rt.submit("config-patch", {"file": "a.toml", "patch": {}})
