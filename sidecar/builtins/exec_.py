"""``exec``: run a program (no shell) and record its exit code and output tails.

Disabled unless the runtime was opened with ``allow_exec=True`` (``sidecar serve
--allow-exec``): submissions are rejected with "exec is disabled", and a task that reaches
a runtime without the flag (a schedule stored earlier) fails instead of running.

The program runs in a new session, so it leads its own process group. When the task is
cancelled or times out, the whole group gets SIGTERM, then SIGKILL after a short grace;
when the program exits on its own, anything it left running in its group is ended the
same way, because those stragglers would otherwise hold the output pipes open.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pydantic
import trio
from pydantic_core import PydanticCustomError

from .. import threads
from ..errors import TaskError
from ..handlers import TaskContext, handler
from ._common import OutsideHome, Params, Tail, check_home_path, resolve_inside_home

__all__ = ["TAIL_BYTES", "ExecParams", "exec_"]

TAIL_BYTES = 4096
"""How much of the end of stdout and of stderr the result keeps."""

# SIGTERM → SIGKILL grace. Short: a task being cancelled is usually part of a shutdown
# whose own grace must cover this.
TERM_GRACE = 2.0
# After the program exits, how long output still in flight may take to arrive.
DRAIN_GRACE = 0.5
_POLL = 0.05


class ExecParams(Params):
    """Params of ``exec``.

    Attributes:
        argv: the program and its arguments, a non-empty list of strings (no shell).
        env: variables added to (or overriding) the sidecar's own environment.
        cwd: working directory relative to home (default: home); must stay inside it.
        timeout: seconds before the process group is terminated and the task fails.
    """

    argv: list[str] = pydantic.Field(min_length=1)
    env: dict[str, str] | None = None
    cwd: str | None = None
    timeout: float | None = pydantic.Field(None, gt=0, allow_inf_nan=False)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _exec_allowed(cls, data: Any, info: pydantic.ValidationInfo) -> Any:
        # Checked before anything else so a disabled sidecar reveals nothing more.
        if not (info.context or {}).get("allow_exec", False):
            raise PydanticCustomError("exec_disabled", "exec is disabled")
        return data

    @pydantic.field_validator("argv")
    @classmethod
    def _program_named(cls, value: list[str]) -> list[str]:
        if not value[0]:
            raise PydanticCustomError("argv", "argv[0] must name a program")
        if any("\0" in arg for arg in value):
            raise PydanticCustomError("argv", "arguments must not contain NUL bytes")
        return value

    @pydantic.field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, text in (value or {}).items():
            if not name or "=" in name or "\0" in name or "\0" in text:
                raise PydanticCustomError(
                    "env", "{name} is not a valid environment variable", {"name": repr(name)}
                )
        return value

    @pydantic.field_validator("cwd")
    @classmethod
    def _cwd_inside_home(cls, value: str | None, info: pydantic.ValidationInfo) -> str | None:
        return None if value is None else check_home_path(value, info, allow_home=True)


@handler("exec", params=ExecParams)
async def exec_(ctx: TaskContext, params: ExecParams) -> dict[str, Any]:
    """Run ``argv`` to completion. Result: ``{"exitCode", "stdoutTail", "stderrTail"}``.

    Raises:
        TaskError: exec is disabled in this runtime; ``cwd`` escapes home; the program
            cannot be started; it exits non-zero (``"exited with code N"``) or outlives
            ``timeout`` — in those last two cases the result is stored on the failed record.
    """
    if not ctx.services.allow_exec:
        raise TaskError("exec is disabled", hint="start the sidecar with --allow-exec")
    cwd = await threads.run_sync(_working_dir, ctx.home, params.cwd)
    env = {**os.environ, **params.env} if params.env else None
    run = _Run(TAIL_BYTES)
    deadline = math.inf if params.timeout is None else trio.current_time() + params.timeout
    with trio.CancelScope(deadline=deadline) as timer:
        await run.run(params.argv, cwd=cwd, env=env)
    result = run.result()
    if timer.cancelled_caught:
        raise TaskError(f"timed out after {params.timeout:g}s", retryable=True, result=result)
    if run.returncode:
        raise TaskError(_exit_message(run.returncode), result=result)
    return result


def _working_dir(home: Path | None, cwd: str | None) -> Path | None:
    if home is None:
        if cwd is not None:
            raise TaskError("exec with a cwd needs a runtime with a home directory")
        return None
    try:
        path = resolve_inside_home(home, cwd or ".", allow_home=True)
    except OutsideHome as exc:
        raise TaskError(f"cwd {cwd!r} {exc}") from None
    if not path.is_dir():
        raise TaskError(f"cwd {cwd!r} is not a directory")
    return path


def _exit_message(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"exited with code {code} (killed by {signal.Signals(-code).name})"
    return f"exited with code {code}"


class _Run:
    """One process-group run: its output tails and exit code."""

    def __init__(self, tail_bytes: int) -> None:
        self.stdout = Tail(tail_bytes)
        self.stderr = Tail(tail_bytes)
        self.returncode: int | None = None
        self.pid: int | None = None

    def result(self) -> dict[str, Any]:
        return {
            "exitCode": self.returncode,
            "stdoutTail": self.stdout.text(),
            "stderrTail": self.stderr.text(),
        }

    async def run(self, argv: list[str], *, cwd: Path | None, env: dict[str, str] | None) -> None:
        try:
            proc = await trio.lowlevel.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise TaskError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
        self.pid = proc.pid
        try:
            async with trio.open_nursery() as nursery:
                assert proc.stdout is not None and proc.stderr is not None
                nursery.start_soon(_drain, proc.stdout, self.stdout)
                nursery.start_soon(_drain, proc.stderr, self.stderr)
                await proc.wait()
                # Output written just before exit may still be in the pipes; stragglers in
                # the group could keep them open forever, so give draining a deadline.
                nursery.cancel_scope.deadline = trio.current_time() + DRAIN_GRACE
        finally:
            # Runs on success, error and cancellation alike; it must finish even when we
            # are being cancelled, but never wedge shutdown on an unkillable process.
            with trio.CancelScope(shield=True), trio.move_on_after(TERM_GRACE + 1):
                await _end_group(proc)
            self.returncode = proc.returncode


async def _drain(stream: trio.abc.ReceiveStream, tail: Tail) -> None:
    async with stream:
        while chunk := await stream.receive_some(65536):
            tail.feed(chunk)


async def _end_group(proc: trio.Process) -> None:
    """SIGTERM the process group led by ``proc``, SIGKILL it after ``TERM_GRACE``."""
    pgid = proc.pid
    if proc.returncode is not None and not await _group_alive(pgid):
        return
    _killpg(pgid, signal.SIGTERM)
    with trio.move_on_after(TERM_GRACE):
        await proc.wait()
        # Members other than the leader are not our children, so nothing signals their
        # exit: poll for an empty group.
        while True:
            if not await _group_alive(pgid):
                return
            await trio.sleep(_POLL)
    _killpg(pgid, signal.SIGKILL)
    await proc.wait()


async def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is still running (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Some systems refuse signals to a group holding only zombies; nothing to end.
        return False
    # Exited members stay zombies until their new parent reaps them, and in a container
    # PID 1 may never do so; look past them where /proc tells us who is who.
    return await threads.run_sync(_running_members, pgid)


def _running_members(pgid: int) -> bool:
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command name: state, ppid, pgrp, ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
