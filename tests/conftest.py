"""Shared fixtures: a file DB in tmp_path, a running runtime, a trio-derived wall clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import sidecar
from sidecar.testing import WallClock

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def wall_clock() -> WallClock:
    """Wall clock = 2026-01-01T00:00Z + trio time (pair with ``autojump_clock``)."""
    return WallClock(EPOCH)


@sidecar.handler("noop")
async def noop(ctx: sidecar.TaskContext, params: dict) -> dict:
    return {"echo": params}


@pytest.fixture
def home(tmp_path):
    """A fresh home directory; the DB lives at ``home / 'sidecar.db'``."""
    return tmp_path / "home"
