"""The ``sidecar`` command: ``serve`` runs the sidecar; the other commands talk to one over HTTP.

Every ``serve`` option can also come from a ``SIDECAR_*`` environment variable (the flag wins).
Client commands use ``--url`` (``SIDECAR_URL``, default ``http://127.0.0.1:7777``) and send
``SIDECAR_TOKEN`` as a bearer token when it is set.

Exit codes: 0 success; 1 the awaited task failed; 2 bad usage or a request the server
rejected (4xx), or ``serve`` could not start; 3 the server could not be reached, answered
5xx, or a wait timed out. ``serve`` also ends with 70 when shutdown overran
``--shutdown-timeout`` and running tasks were abandoned, and with 128 + the signal number
(143 SIGTERM, 130 SIGINT) when a second signal cut the drain short.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["main"]

DEFAULT_URL = "http://127.0.0.1:7777"
EXIT_OK, EXIT_TASK_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
# One long-poll request waits at most this long; the client loops until the task is done.
POLL_CHUNK_SECONDS = 30.0


def _env(name: str, default: Any = None, conv: Callable[[str], Any] = str) -> Any:
    raw = os.environ.get(f"SIDECAR_{name}")
    if raw is None or raw == "":
        return default
    try:
        return conv(raw)
    except ValueError:
        raise SystemExit(f"sidecar: error: invalid SIDECAR_{name}={raw!r}") from None


def _env_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _env_list(raw: str) -> list[str]:
    return [part for part in raw.replace(",", " ").split() if part]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar",
        description="A durable task runtime with an HTTP API (v0, wire-compatible with the Go "
        "sidecar).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the sidecar (runtime + HTTP API)",
        description="Run the sidecar. Every option also reads SIDECAR_<OPTION> (e.g. "
        "SIDECAR_PORT, SIDECAR_HANDLERS=a:b,c:d); the token for --auth token comes from "
        "SIDECAR_TOKEN or --token-file, never from a flag.",
    )
    serve.add_argument(
        "--home",
        type=Path,
        default=_env("HOME", Path("sidecar-home"), Path),
        help="data directory; the DB is HOME/sidecar.db (default ./sidecar-home)",
    )
    serve.add_argument(
        "--host",
        default=_env("HOST", "127.0.0.1"),
        help="address to bind (default 127.0.0.1; 0.0.0.0 must be explicit)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=_env("PORT", 7777, int),
        help="port to bind (default 7777; 0 picks a free port)",
    )
    serve.add_argument(
        "--port-file",
        type=Path,
        default=_env("PORT_FILE", None, Path),
        help="write the bound URL (http://host:port) to this file once listening",
    )
    serve.add_argument(
        "--grace",
        type=float,
        default=_env("GRACE", 10.0, float),
        help="seconds running tasks get to finish at shutdown (default 10)",
    )
    serve.add_argument(
        "--handlers",
        action="append",
        metavar="MODULE:ATTR",
        default=None,
        help="load handlers from MODULE:ATTR (a handler or a list); repeatable",
    )
    serve.add_argument(
        "--no-entry-points",
        action="store_true",
        default=_env("NO_ENTRY_POINTS", False, _env_bool),
        help="do not load handlers from the sidecar.handlers entry points",
    )
    serve.add_argument(
        "--concurrency",
        type=int,
        default=_env("CONCURRENCY", None, int),
        help="at most this many tasks run at once (default unlimited)",
    )
    serve.add_argument(
        "--auth",
        choices=("none", "token", "trusted-header"),
        default=_env("AUTH", "none"),
        help="none | token (Authorization: Bearer $SIDECAR_TOKEN) | trusted-header "
        "(X-Remote-User set by an authenticating proxy)",
    )
    serve.add_argument(
        "--token-file",
        type=Path,
        default=_env("TOKEN_FILE", None, Path),
        help="read the bearer token from this file instead of SIDECAR_TOKEN",
    )
    serve.add_argument(
        "--allow-exec",
        action="store_true",
        default=_env("ALLOW_EXEC", False, _env_bool),
        help="enable the built-in exec task type",
    )
    serve.add_argument(
        "--max-body",
        type=int,
        default=_env("MAX_BODY", 1024 * 1024, int),
        help="request body limit in bytes (default 1 MiB)",
    )
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=_env("LOG_FORMAT", "text"),
        help="log lines as text or JSON",
    )
    serve.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (default INFO)",
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        default=_env("ACCESS_LOG", False, _env_bool),
        help="log every HTTP request (off by default: it costs throughput)",
    )
    serve.add_argument(
        "--graceful-timeout",
        type=float,
        default=_env("GRACEFUL_TIMEOUT", 5.0, float),
        help="at shutdown, wait at most this long for in-flight requests (default 5)",
    )
    serve.add_argument(
        "--shutdown-timeout",
        type=float,
        metavar="SECONDS",
        default=_env("SHUTDOWN_TIMEOUT", None, float),
        help="hard deadline from the first signal: past it the process exits with status 70, "
        "abandoning tasks that ignore cancellation (default graceful-timeout + grace + 10)",
    )
    serve.add_argument(
        "--synchronous",
        type=str.lower,
        choices=("normal", "full"),
        default=_env("SYNCHRONOUS", "normal", str.lower),
        help="SQLite durability: normal survives a process crash, full also power loss "
        "(default normal)",
    )
    serve.add_argument(
        "--retention-days",
        type=float,
        metavar="N",
        default=_env("RETENTION_DAYS", None, float),
        help="prune finished tasks and run history older than N days (default: keep all)",
    )
    serve.set_defaults(func=_cmd_serve)

    client = argparse.ArgumentParser(add_help=False)
    client.add_argument(
        "--url",
        default=_env("URL", DEFAULT_URL),
        help=f"sidecar base URL (SIDECAR_URL, default {DEFAULT_URL})",
    )
    client.add_argument("--json", action="store_true", help="print JSON instead of tables")

    submit = sub.add_parser("submit", parents=[client], help="submit a task")
    submit.add_argument("type", help="task type")
    submit.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a param: KEY=text (a string) or KEY:=JSON (number, bool, object...); repeatable",
    )
    submit.add_argument("--params-json", metavar="JSON", help="all params as one JSON object")
    submit.add_argument("--id", help="task id (a UUID) for idempotent submission")
    submit.add_argument("--cron", help="run on this cron schedule instead of once")
    submit.add_argument("--timezone", help="IANA time zone of --cron (default UTC)")
    submit.add_argument("--timeout", type=float, help="task timeout in seconds")
    submit.add_argument("--wait", action="store_true", help="wait until the task finishes")
    submit.set_defaults(func=_cmd_submit)

    get = sub.add_parser("get", parents=[client], help="show one task")
    get.add_argument("id")
    get.set_defaults(func=_cmd_get)

    ls = sub.add_parser("list", parents=[client], help="list tasks, newest first")
    ls.add_argument("--status", choices=("queued", "running", "completed", "failed", "scheduled"))
    ls.add_argument("--type")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--before", metavar="ID", help="page: tasks older than this id")
    ls.set_defaults(func=_cmd_list)

    runs = sub.add_parser("runs", parents=[client], help="run history of a schedule")
    runs.add_argument("id")
    runs.set_defaults(func=_cmd_runs)

    cancel = sub.add_parser(
        "cancel",
        parents=[client],
        help="cancel a running task or stop a schedule (deletes the record)",
    )
    cancel.add_argument("id")
    cancel.set_defaults(func=_cmd_cancel)

    status = sub.add_parser("status", parents=[client], help="readiness and liveness")
    status.set_defaults(func=_cmd_status)

    wait = sub.add_parser("wait", parents=[client], help="wait until a task finishes")
    wait.add_argument("id")
    wait.add_argument("--timeout", type=float, help="give up after this many seconds")
    wait.set_defaults(func=_cmd_wait)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sidecar`` console script; returns the exit code."""
    args = _build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


# ---- serve ------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import trio

    from .errors import SidecarError
    from .http.logs import configure_logging
    from .http.serve import ServeOptions, serve
    from .tuning import tune_gc

    token = os.environ.get("SIDECAR_TOKEN") or None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip() or None
        except OSError as exc:
            return _usage(f"cannot read --token-file: {exc}")
    handlers = args.handlers if args.handlers is not None else _env("HANDLERS", [], _env_list)
    options = ServeOptions(
        home=args.home,
        host=args.host,
        port=args.port,
        grace=args.grace,
        handlers=tuple(handlers),
        concurrency=args.concurrency,
        auth=args.auth,
        token=token,
        allow_exec=args.allow_exec,
        max_body=args.max_body,
        port_file=args.port_file,
        graceful_timeout=args.graceful_timeout,
        shutdown_timeout=args.shutdown_timeout,
        synchronous=args.synchronous,
        retention_days=args.retention_days,
        access_log=args.access_log,
        entry_points=not args.no_entry_points,
    )
    try:
        options.check()
        configure_logging(args.log_format, args.log_level)
    except ValueError as exc:
        return _usage(str(exc))
    log = logging.getLogger("sidecar")
    # Start-up problems an operator fixes (bad handler spec, conflict, newer DB, port in
    # use) get one line each and no traceback; they may arrive wrapped in exception groups
    # from the nurseries they surfaced in.
    operator_errors = (SidecarError, ValueError, ImportError, OSError)
    tune_gc()  # this process owns the interpreter; see sidecar/tuning.py
    try:
        trio.run(serve, options)
    except operator_errors as exc:
        log.error("cannot start: %s", exc)
        return EXIT_USAGE
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if not all(isinstance(leaf, operator_errors) for leaf in leaves):
            raise
        for leaf in leaves:
            log.error("cannot start: %s", leaf)
        return EXIT_USAGE
    return EXIT_OK


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _usage(message: str) -> int:
    print(f"sidecar: error: {message}", file=sys.stderr)
    return EXIT_USAGE


# ---- client -----------------------------------------------------------------------------


class _Failed(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _Client:
    """A thin httpx wrapper that turns transport and HTTP errors into exit codes."""

    def __init__(self, url: str) -> None:
        import httpx

        headers = {}
        token = os.environ.get("SIDECAR_TOKEN")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._httpx = httpx
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30.0)
        self.url = url

    def request(self, method: str, path: str, *, ok: Sequence[int] = (200,), **kw: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kw)
        except self._httpx.TimeoutException:
            raise _Failed(f"{self.url} did not answer in time", EXIT_UNAVAILABLE) from None
        except self._httpx.TransportError as exc:
            raise _Failed(f"cannot reach {self.url}: {exc}", EXIT_UNAVAILABLE) from None
        if resp.status_code not in ok:
            try:
                message = resp.json().get("error") or resp.reason_phrase
            except (ValueError, AttributeError):
                message = resp.text.strip() or resp.reason_phrase
            code = EXIT_USAGE if 400 <= resp.status_code < 500 else EXIT_UNAVAILABLE
            raise _Failed(f"{message} (HTTP {resp.status_code})", code)
        return resp

    def close(self) -> None:
        self.http.close()


def _client_command(fn: Callable[[argparse.Namespace, _Client], int]) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        client = _Client(args.url)
        try:
            return fn(args, client)
        except _Failed as exc:
            print(f"sidecar: error: {exc}", file=sys.stderr)
            return exc.code
        finally:
            client.close()

    return run


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _console() -> Any:
    from rich.console import Console

    # Piped output (scripts, logs) is not wrapped at 80 columns: ids must stay whole.
    return Console() if sys.stdout.isatty() else Console(width=200)


def _short_ts(value: Any) -> str:
    """``2026-11-26T17:08:47.214Z`` → ``2026-11-26 17:08:47`` for tables (UTC)."""
    return "" if not value else str(value)[:19].replace("T", " ")


def _parse_params(args: argparse.Namespace) -> dict[str, Any] | None:
    params: dict[str, Any] = {}
    if args.params_json is not None:
        try:
            loaded = json.loads(args.params_json)
        except ValueError as exc:
            _die(f"--params-json is not valid JSON: {exc}")
        if not isinstance(loaded, dict):
            _die("--params-json must be a JSON object")
        params.update(loaded)
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _die(f"-p expects KEY=VALUE or KEY:=JSON, got {item!r}")
        if key.endswith(":"):
            key = key[:-1]
            try:
                params[key] = json.loads(value)
            except ValueError as exc:
                _die(f"-p {key}:= value is not valid JSON: {exc}")
        else:
            params[key] = value
    return params if (params or args.params_json is not None) else None


def _die(message: str) -> NoReturn:
    raise _Failed(message, EXIT_USAGE)


@_client_command
def _cmd_submit(args: argparse.Namespace, client: _Client) -> int:
    body: dict[str, Any] = {"type": args.type}
    params = _parse_params(args)
    if params is not None:
        body["params"] = params
    if args.id:
        body["id"] = args.id
    if args.timeout is not None:
        body["timeout"] = args.timeout
    if args.cron:
        body["schedule"] = {"cron": args.cron}
        if args.timezone:
            body["schedule"]["timezone"] = args.timezone
    elif args.timezone:
        _die("--timezone needs --cron")
    if args.wait and args.cron:
        _die("--wait cannot be used with --cron: a schedule keeps firing")
    resp = client.request("POST", "/v0/tasks", json=body, ok=(201, 202))
    task_id = resp.json()["id"]
    if args.wait:
        return _wait_and_show(args, client, task_id, timeout=None)
    if args.json:
        _print_json({"id": task_id, "created": resp.status_code == 201})
    else:
        what = "submitted" if resp.status_code == 201 else "already submitted (deduplicated)"
        print(f"{what}: {task_id}")
    return EXIT_OK


@_client_command
def _cmd_get(args: argparse.Namespace, client: _Client) -> int:
    rec = client.request("GET", f"/v0/tasks/{args.id}").json()
    _show_record(args, rec)
    return EXIT_OK


@_client_command
def _cmd_list(args: argparse.Namespace, client: _Client) -> int:
    query: dict[str, Any] = {"limit": args.limit}
    for key in ("status", "type", "before"):
        if getattr(args, key):
            query[key] = getattr(args, key)
    records = client.request("GET", "/v0/tasks", params=query).json()
    if args.json:
        _print_json(records)
        return EXIT_OK
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    table.add_column("ID", no_wrap=True, min_width=36)
    for col in ("TYPE", "STATUS", "RUN", "SUBMITTED (UTC)", "COMPLETED (UTC)", "ERROR"):
        table.add_column(col, overflow="ellipsis", no_wrap=True)
    for rec in records:
        table.add_row(
            _text(rec["id"]),
            _text(rec["type"]),
            _styled_status(rec["status"]),
            _text(rec.get("run")),
            _text(_short_ts(rec.get("submittedAt"))),
            _text(_short_ts(rec.get("completedAt"))),
            _text((rec.get("error") or "")[:60]),
        )
    console = _console()
    console.print(table)
    if not records:
        console.print("[dim]no tasks[/dim]")
    return EXIT_OK


@_client_command
def _cmd_runs(args: argparse.Namespace, client: _Client) -> int:
    runs = client.request("GET", f"/v0/tasks/{args.id}/runs").json()
    if args.json:
        _print_json(runs)
        return EXIT_OK
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("RUN", "STATUS", "STARTED (UTC)", "COMPLETED (UTC)", "ERROR"):
        table.add_column(col, no_wrap=True, overflow="ellipsis")
    for run in runs:
        table.add_row(
            _text(run["run"]),
            _styled_status(run["status"]),
            _text(_short_ts(run.get("startedAt"))),
            _text(_short_ts(run.get("completedAt"))),
            _text((run.get("error") or "")[:60]),
        )
    _console().print(table)
    return EXIT_OK


@_client_command
def _cmd_cancel(args: argparse.Namespace, client: _Client) -> int:
    client.request("DELETE", f"/v0/tasks/{args.id}", ok=(204,))
    if args.json:
        _print_json({"id": args.id, "deleted": True})
    else:
        print(f"cancelled and removed: {args.id}")
    return EXIT_OK


@_client_command
def _cmd_status(args: argparse.Namespace, client: _Client) -> int:
    status = client.request("GET", "/v0/status").json()["status"]
    live = client.request("GET", "/v0/livez", params={"verbose": "1"}, ok=(200, 503))
    live_error = None if live.status_code == 200 else live.json().get("error")
    out = {
        "url": client.url,
        "status": status,
        "ready": status == "Ready",
        "live": live_error is None,
    }
    if live_error:
        out["liveError"] = live_error
    if args.json:
        _print_json(out)
    else:
        console = _console()
        style = "green" if status == "Ready" else "yellow"
        console.print(f"{client.url}: [{style}]{status}[/{style}]")
        if live_error:
            console.print(f"store: [red]not live[/red] ({live_error})")
        else:
            console.print("store: [green]live[/green]")
    return EXIT_OK


@_client_command
def _cmd_wait(args: argparse.Namespace, client: _Client) -> int:
    return _wait_and_show(args, client, args.id, timeout=args.timeout)


def _wait_and_show(
    args: argparse.Namespace, client: _Client, task_id: str, *, timeout: float | None
) -> int:
    """Long-poll until the task is terminal, showing a spinner with the elapsed time."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    with Progress(
        SpinnerColumn(),
        TextColumn("waiting for {task.fields[task_id]} ({task.fields[status]})"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=args.json,
    ) as progress:
        bar = progress.add_task("wait", total=None, task_id=task_id, status="…")
        rec = client.request("GET", f"/v0/tasks/{task_id}").json()
        if rec.get("schedule") is not None:
            _die(f"{task_id} is a schedule, not a one-shot task: see `sidecar runs {task_id}`")
        progress.update(bar, status=rec["status"])
        while rec["status"] not in ("completed", "failed"):
            chunk = POLL_CHUNK_SECONDS
            if deadline is not None:
                chunk = max(0.0, min(chunk, deadline - time.monotonic()))
            resp = client.request(
                "GET",
                f"/v0/tasks/{task_id}",
                params={"wait": f"{chunk:g}"},
                timeout=chunk + 10.0,
            )
            rec = resp.json()
            progress.update(bar, status=rec["status"])
            if rec["status"] in ("completed", "failed"):
                break
            if deadline is not None and time.monotonic() >= deadline:
                _show_record(args, rec)
                raise _Failed(
                    f"{task_id} still {rec['status']} after {timeout:g}s", EXIT_UNAVAILABLE
                )
    _show_record(args, rec)
    return EXIT_TASK_FAILED if rec["status"] == "failed" else EXIT_OK


def _styled_status(status: str) -> Any:
    from rich.text import Text

    color = {
        "completed": "green",
        "failed": "red",
        "running": "cyan",
        "queued": "yellow",
        "scheduled": "magenta",
    }.get(status, "white")
    return Text(status, style=color)


def _text(value: Any) -> Any:
    # Record fields are user data: never let rich read "[...]" in them as markup.
    from rich.text import Text

    return Text("" if value is None else str(value))


def _show_record(args: argparse.Namespace, rec: dict[str, Any]) -> None:
    if args.json:
        _print_json(rec)
        return
    from rich.table import Table

    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rec.items():
        if key == "errorDetail":
            continue
        if key == "status":
            shown = _styled_status(value)
        elif isinstance(value, dict | list):
            shown = _text(json.dumps(value, ensure_ascii=False))
        else:
            shown = _text(value)
        table.add_row(key, shown)
    _console().print(table)


if __name__ == "__main__":
    sys.exit(main())
