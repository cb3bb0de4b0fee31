"""exec runs real processes, so these tests use real time; each stays around a second."""

import os
import signal
import sys
import textwrap

import pytest
import trio

from sidecar.builtins import exec_ as exec_module
from sidecar.builtins.exec_ import exec_
from sidecar.errors import TaskError

PY = sys.executable


@pytest.fixture
def allowed(home):
    return {"home": home, "allow_exec": True}


def gone(pid: int) -> bool:
    """True when no process has ``pid`` (a zombie nobody reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def group_gone(pgid: int) -> bool:
    """True when no live process is in the group (unreaped zombies of orphans are dead)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and not gone(int(entry)):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    pgrp = int(f.read().rsplit(")", 1)[1].split()[2])
            except FileNotFoundError:
                continue
            if pgrp == pgid:
                return False
    return True


async def wait_for_file(path, timeout=5.0):
    with trio.fail_after(timeout):
        while not path.exists() or not path.read_text().strip():
            await trio.sleep(0.01)
    return path.read_text()


# A child that records its pid and a grandchild's (same process group) and then waits.
FAMILY = textwrap.dedent(
    """
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open("pids.tmp", "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    os.rename("pids.tmp", "pids")
    print("started", flush=True)
    time.sleep(60)
    """
)


async def test_exec_runs_in_home_and_returns_exit_code_and_tails(home, run_handler):
    result = await run_handler(
        exec_,
        {
            "argv": [PY, "-c", "import os,sys; print(os.getcwd()); sys.stderr.write('warn')"],
        },
    )
    assert result == {"exitCode": 0, "stdoutTail": f"{home}\n", "stderrTail": "warn"}


async def test_exec_env_adds_to_the_inherited_environment_and_cwd_is_under_home(
    home, run_handler, monkeypatch
):
    monkeypatch.setenv("SIDECAR_TEST_INHERITED", "yes")
    (home / "work").mkdir()
    code = "import os; print(os.getcwd(), os.environ['X'], os.environ['SIDECAR_TEST_INHERITED'])"
    result = await run_handler(exec_, {"argv": [PY, "-c", code], "env": {"X": "1"}, "cwd": "work"})
    assert result["stdoutTail"] == f"{home / 'work'} 1 yes\n"


async def test_exec_keeps_only_the_last_4_kib_of_each_stream(run_handler):
    code = "import sys; sys.stdout.write('a' * 10000 + 'END'); sys.stderr.write('b' * 5000)"
    result = await run_handler(exec_, {"argv": [PY, "-c", code]})
    assert len(result["stdoutTail"].encode()) == 4096
    assert result["stdoutTail"].endswith("aEND")
    assert result["stderrTail"] == "b" * 4096


async def test_nonzero_exit_fails_naming_the_code_and_keeps_the_result(run_handler):
    code = "import sys; print('partial'); sys.exit(3)"
    with pytest.raises(TaskError, match=r"^exited with code 3$") as info:
        await run_handler(exec_, {"argv": [PY, "-c", code]})
    assert info.value.result == {"exitCode": 3, "stdoutTail": "partial\n", "stderrTail": ""}


async def test_death_by_signal_names_the_signal(run_handler):
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    with pytest.raises(TaskError, match=r"exited with code -9 \(killed by SIGKILL\)"):
        await run_handler(exec_, {"argv": [PY, "-c", code]})


async def test_a_missing_program_fails_clearly(run_handler):
    with pytest.raises(TaskError, match="cannot run 'no-such-program-here'"):
        await run_handler(exec_, {"argv": ["no-such-program-here"]})


async def test_timeout_terminates_the_whole_group_and_fails_with_the_result(home, run_handler):
    start = trio.current_time()
    with pytest.raises(TaskError, match=r"^timed out after 0\.5s$") as info:
        await run_handler(exec_, {"argv": [PY, "-c", FAMILY], "timeout": 0.5})
    assert trio.current_time() - start < 2.5
    leader, grandchild = map(int, (home / "pids").read_text().split())
    assert info.value.result["exitCode"] == -signal.SIGTERM
    assert info.value.result["stdoutTail"] == "started\n"
    assert gone(leader) and gone(grandchild) and group_gone(leader)


async def test_cancellation_mid_run_kills_the_process_group(home, run_handler):
    with trio.move_on_after(10) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_handler, exec_, {"argv": [PY, "-c", FAMILY]})
            leader, grandchild = map(int, (await wait_for_file(home / "pids")).split())
            assert not gone(leader) and not gone(grandchild)
            nursery.cancel_scope.cancel()
    assert not scope.cancelled_caught
    assert gone(leader) and gone(grandchild) and group_gone(leader)


async def test_a_child_ignoring_sigterm_is_killed_after_the_grace(home, run_handler, monkeypatch):
    monkeypatch.setattr(exec_module, "TERM_GRACE", 0.3)
    code = textwrap.dedent(
        """
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open("pids", "w").write(str(os.getpid()))
        time.sleep(60)
        """
    )
    with pytest.raises(TaskError, match="timed out") as info:
        await run_handler(exec_, {"argv": [PY, "-c", code], "timeout": 0.3})
    assert info.value.result["exitCode"] == -signal.SIGKILL
    assert gone(int((home / "pids").read_text()))


async def test_processes_left_behind_by_a_finished_program_are_ended(home, run_handler):
    code = textwrap.dedent(
        """
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(child.pid)
        """
    )
    start = trio.current_time()
    result = await run_handler(exec_, {"argv": [PY, "-c", code]})
    assert trio.current_time() - start < 2
    assert result["exitCode"] == 0
    assert gone(int(result["stdoutTail"]))


async def test_a_runtime_without_allow_exec_refuses_to_run(make_ctx, home):
    params = exec_.validate({"argv": ["true"]}, {"home": home, "allow_exec": True})
    with pytest.raises(TaskError, match="exec is disabled") as info:
        await exec_(make_ctx(allow_exec=False), params)
    assert "--allow-exec" in info.value.hint


async def test_cwd_that_became_a_symlink_out_of_home_is_refused(make_ctx, home, tmp_path):
    (home / "work").mkdir()
    params = exec_.validate({"argv": ["true"], "cwd": "work"}, {"home": home, "allow_exec": True})
    (home / "work").rmdir()
    (home / "work").symlink_to(tmp_path)
    with pytest.raises(TaskError, match="resolves outside the home directory"):
        await exec_(make_ctx(), params)


async def test_cwd_must_be_a_directory(run_handler, home):
    (home / "file").write_text("")
    with pytest.raises(TaskError, match="is not a directory"):
        await run_handler(exec_, {"argv": ["true"], "cwd": "file"})


@pytest.mark.parametrize(
    "context", [None, {}, {"home": None}, {"home": "/tmp", "allow_exec": False}]
)
def test_exec_is_disabled_unless_the_runtime_allows_it(invalid, context):
    for params in ({"argv": ["true"]}, {}, {"argv": "rm -rf /"}):
        err = invalid(exec_, params, context)
        assert str(err) == "exec is disabled"


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({}, "argv", "Field required"),
        ({"argv": []}, "argv", "at least 1 item"),
        ({"argv": "echo hi"}, "argv", "valid list"),
        ({"argv": ["echo", 1]}, "argv.1", "valid string"),
        ({"argv": [""]}, "argv", "argv[0] must name a program"),
        ({"argv": ["echo", "a\0b"]}, "argv", "NUL"),
        ({"argv": ["true"], "env": {"A=B": "x"}}, "env", "not a valid environment variable"),
        ({"argv": ["true"], "env": {"A": 1}}, "env.A", "valid string"),
        ({"argv": ["true"], "timeout": 0}, "timeout", "greater than 0"),
        ({"argv": ["true"], "cwd": "../x"}, "cwd", "must not contain '..'"),
        ({"argv": ["true"], "cwd": "/tmp"}, "cwd", "not absolute"),
        ({"argv": ["true"], "shell": True}, "shell", "Extra inputs"),
    ],
)
def test_bad_params_are_rejected_at_submit_naming_the_field(invalid, allowed, params, field, words):
    err = invalid(exec_, params, allowed)
    assert err.field == field, str(err)
    assert words in str(err)


def test_cwd_symlinked_out_of_home_is_rejected_at_submit(invalid, allowed, home, tmp_path):
    (home / "out").symlink_to(tmp_path)
    err = invalid(exec_, {"argv": ["true"], "cwd": "out"}, allowed)
    assert err.field == "cwd"
    assert "resolves outside" in str(err)


def test_cwd_may_be_home_itself(allowed):
    assert exec_.validate({"argv": ["true"], "cwd": "."}, allowed).cwd == "."


def test_exec_is_not_idempotent():
    assert exec_.idempotent is False
