"""The `sidecar` CLI: option parsing (flags and SIDECAR_* env) and the client commands run
against an in-process `serve()` on an ephemeral port."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import trio
from conftest import Gate, make_handlers

from sidecar import cli
from sidecar.http import ServeOptions, serve


@pytest.fixture
async def server_url(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("SIDECAR_TOKEN", raising=False)
    gate = Gate()
    options = ServeOptions(home=tmp_path / "home", port=0, grace=1.0, entry_points=False)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            partial(
                serve, options, handlers=make_handlers(gate), signals=(), shutdown_trigger=stop.wait
            )
        )
        yield urls[0]
        gate.release.set()
        stop.set()


async def run_cli(*argv: str) -> int:
    return await trio.to_thread.run_sync(cli.main, list(argv))


async def test_submit_wait_get_list_cancel_status(server_url, capsys):
    assert (
        await run_cli("submit", "noop", "-p", "name=x", "-p", "n:=5", "--url", server_url, "--json")
        == 0
    )
    task_id = json.loads(capsys.readouterr().out)["id"]

    assert await run_cli("wait", task_id, "--url", server_url, "--json") == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["status"] == "completed"
    assert rec["result"] == {"ok": True, "params": {"name": "x", "n": 5}}

    assert await run_cli("get", task_id, "--url", server_url) == 0
    out = capsys.readouterr().out
    assert task_id in out and "completed" in out

    assert await run_cli("list", "--url", server_url) == 0
    assert task_id in capsys.readouterr().out
    assert await run_cli("list", "--url", server_url, "--json", "--status", "failed") == 0
    assert json.loads(capsys.readouterr().out) == []

    assert await run_cli("status", "--url", server_url, "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["status"] == "Initializing" and status["live"] is True

    assert await run_cli("cancel", task_id, "--url", server_url) == 0
    assert await run_cli("get", task_id, "--url", server_url) == 2
    assert "task not found" in capsys.readouterr().err


async def test_submit_wait_exits_1_when_the_task_fails(server_url, capsys):
    assert await run_cli("submit", "boom", "--wait", "--url", server_url) == 1
    out = capsys.readouterr().out
    assert "failed" in out and "it broke" in out


async def test_wait_timeout_exits_3_and_bad_input_exits_2(server_url, capsys):
    assert await run_cli("submit", "gate", "--url", server_url, "--json") == 0
    task_id = json.loads(capsys.readouterr().out)["id"]
    assert await run_cli("wait", task_id, "--timeout", "0.2", "--url", server_url) == 3
    assert "still running" in capsys.readouterr().err

    assert await run_cli("submit", "nope", "--url", server_url) == 2
    assert "unknown task type" in capsys.readouterr().err
    assert await run_cli("submit", "noop", "--params-json", "[1]", "--url", server_url) == 2
    assert await run_cli("submit", "noop", "-p", "novalue", "--url", server_url) == 2


async def test_schedule_and_runs(server_url, capsys):
    assert await run_cli("submit", "noop", "--cron", "@daily", "--url", server_url, "--json") == 0
    task_id = json.loads(capsys.readouterr().out)["id"]
    assert await run_cli("runs", task_id, "--url", server_url, "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert await run_cli("wait", task_id, "--url", server_url) == 2
    assert "schedule" in capsys.readouterr().err


async def test_unreachable_server_exits_3(capsys):
    assert await run_cli("status", "--url", "http://127.0.0.1:9") == 3
    assert "cannot reach" in capsys.readouterr().err


def test_serve_options_come_from_flags_or_sidecar_env(monkeypatch):
    for key in ("SIDECAR_PORT", "SIDECAR_HOME", "SIDECAR_HANDLERS", "SIDECAR_ALLOW_EXEC"):
        monkeypatch.delenv(key, raising=False)
    args = cli._build_parser().parse_args(["serve"])
    assert args.home == Path("sidecar-home")
    assert args.host == "127.0.0.1" and args.port == 7777 and args.grace == 10.0
    assert args.auth == "none" and args.allow_exec is False

    monkeypatch.setenv("SIDECAR_PORT", "8123")
    monkeypatch.setenv("SIDECAR_HOME", "/data")
    monkeypatch.setenv("SIDECAR_ALLOW_EXEC", "true")
    monkeypatch.setenv("SIDECAR_LOG_FORMAT", "json")
    args = cli._build_parser().parse_args(["serve"])
    assert (args.port, args.home, args.allow_exec, args.log_format) == (
        8123,
        Path("/data"),
        True,
        "json",
    )
    args = cli._build_parser().parse_args(["serve", "--port", "9000"])
    assert args.port == 9000

    monkeypatch.setenv("SIDECAR_PORT", "eighty")
    with pytest.raises(SystemExit, match="SIDECAR_PORT"):
        cli._build_parser()


def test_durability_retention_and_deadline_flags(monkeypatch):
    for key in ("SYNCHRONOUS", "RETENTION_DAYS", "SHUTDOWN_TIMEOUT"):
        monkeypatch.delenv(f"SIDECAR_{key}", raising=False)
    args = cli._build_parser().parse_args(["serve"])
    assert (args.synchronous, args.retention_days, args.shutdown_timeout) == ("normal", None, None)

    monkeypatch.setenv("SIDECAR_SYNCHRONOUS", "FULL")
    monkeypatch.setenv("SIDECAR_RETENTION_DAYS", "7")
    monkeypatch.setenv("SIDECAR_SHUTDOWN_TIMEOUT", "30")
    args = cli._build_parser().parse_args(["serve"])
    assert (args.synchronous, args.retention_days, args.shutdown_timeout) == ("full", 7.0, 30.0)
    args = cli._build_parser().parse_args(["serve", "--synchronous", "normal"])
    assert args.synchronous == "normal"
    with pytest.raises(SystemExit):
        cli._build_parser().parse_args(["serve", "--synchronous", "off"])


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--retention-days", "0"], {}, "retention days must be a positive number"),
        (["--shutdown-timeout", "-1"], {}, "shutdown timeout must be a positive number"),
        ([], {"SIDECAR_SYNCHRONOUS": "off"}, "synchronous must be 'normal' or 'full'"),
    ],
)
def test_serve_refuses_out_of_range_options_before_starting(
    tmp_path, monkeypatch, capsys, argv, env, message
):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    home = tmp_path / "home"
    assert cli.main(["serve", "--home", str(home), "--port", "0", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not home.exists()
