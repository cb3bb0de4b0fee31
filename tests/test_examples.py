"""The README's examples, run as written (so the README stays true)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import trio

import sidecar
from sidecar.testing import WallClock

README = Path(__file__).resolve().parents[1] / "README.md"


@sidecar.handler("snapshot")
async def snapshot(ctx: sidecar.TaskContext, params: dict) -> None:
    return None


async def test_readme_embedding_example_runs(tmp_path, monkeypatch, autojump_clock):
    code = re.search(r"## Embedding\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    code = code.replace("trio.run(main)", "")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    await namespace["main"]()
    assert (tmp_path / "data" / "sidecar.db").exists()


async def test_readme_schedule_test_example_holds(autojump_clock):
    clock = WallClock(datetime(2026, 1, 1, tzinfo=UTC))
    async with sidecar.open_runtime(None, handlers=[snapshot], clock=clock) as rt:
        sid = await rt.submit("snapshot", schedule=sidecar.Schedule("*/5 * * * *"))
        await trio.sleep(24 * 3600 + 60)
        assert len(await rt.runs(sid)) == 288
