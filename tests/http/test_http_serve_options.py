"""`serve` options that configure the runtime reach it: durability level and retention."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

import httpx
import pytest
import trio
from conftest import Gate, make_handlers

import sidecar
import sidecar.runtime
from sidecar.http import ServeOptions, serve
from sidecar.testing import WallClock


async def serving(nursery: trio.Nursery, options: ServeOptions, stop: trio.Event) -> str:
    handlers = make_handlers(Gate())
    urls = await nursery.start(
        partial(serve, options, handlers=handlers, signals=(), shutdown_trigger=stop.wait)
    )
    return urls[0]


@pytest.mark.parametrize(("level", "pragma"), [("normal", 1), ("full", 2)])
async def test_synchronous_sets_the_pragma_on_the_write_connection(
    tmp_path, monkeypatch, level, pragma
):
    seen: list[int] = []
    real_open = sidecar.runtime.open_database

    def open_database(*args, **kwargs):
        db = real_open(*args, **kwargs)
        # Still inside the worker-thread call that owns the new connection.
        seen.append(db.conn.execute("PRAGMA synchronous").fetchone()[0])
        return db

    monkeypatch.setattr(sidecar.runtime, "open_database", open_database)
    options = ServeOptions(home=tmp_path, port=0, entry_points=False, synchronous=level)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        url = await serving(nursery, options, stop)
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/v0/livez")).status_code == 200
        stop.set()
    assert seen == [pragma]


async def test_retention_days_prunes_old_finished_tasks(tmp_path):
    # A task that finished long ago, written by a runtime whose wall clock is in 2020.
    async with sidecar.open_runtime(
        tmp_path, handlers=make_handlers(Gate()), clock=WallClock(datetime(2020, 1, 1, tzinfo=UTC))
    ) as rt:
        old = await rt.submit("noop")
        assert (await rt.wait(old)).status is sidecar.TaskStatus.COMPLETED

    options = ServeOptions(home=tmp_path, port=0, entry_points=False, retention_days=30)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        url = await serving(nursery, options, stop)
        async with httpx.AsyncClient(base_url=url) as client:
            fresh = (await client.post("/v0/tasks", json={"type": "noop"})).json()["id"]
            # The start-up prune runs in the background; it needs one short transaction.
            with trio.fail_after(5):
                while (await client.get(f"/v0/tasks/{old}")).status_code != 404:
                    await trio.sleep(0.02)
            assert (await client.get(f"/v0/tasks/{fresh}")).status_code == 200
        stop.set()
