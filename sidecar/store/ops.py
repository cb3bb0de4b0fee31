"""Write operations the store actor applies, as frozen records.

Column values arrive already serialized (JSON text, fixed-width UTC timestamps) so the
writer thread does only SQLite work. Each op's effect is documented in ``db.Database``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..models import TaskStatus

__all__ = [
    "DeleteTask",
    "FinishTask",
    "FireSchedules",
    "Firing",
    "Heartbeat",
    "InsertTasks",
    "NewTask",
    "Prune",
    "RecoverStale",
    "StartTask",
    "WriteOp",
    "new_lease",
]


# Rows deleted per prune transaction: short enough never to stall other writers.
PRUNE_CHUNK = 5000


def new_lease() -> int:
    """A fresh token naming one actor's claim on a row (see ``Database._finish``)."""
    return random.getrandbits(62)


@dataclass(frozen=True, slots=True)
class NewTask:
    id: str
    type: str
    params: str | None
    schedule: str | None
    timeout: float | None
    status: TaskStatus
    lease: int
    now: str
    next_run_at: str | None


@dataclass(frozen=True, slots=True)
class InsertTasks:
    """Insert or deduplicate each task; the reply is one ``SubmitOutcome`` per task."""

    tasks: tuple[NewTask, ...]


@dataclass(frozen=True, slots=True)
class StartTask:
    """A queued task got capacity: ``queued`` → ``running``."""

    id: str
    run: int
    lease: int
    now: str
    is_schedule: bool = False


@dataclass(frozen=True, slots=True)
class FinishTask:
    """Record a run's outcome, only if this actor's lease still owns the row."""

    id: str
    run: int
    lease: int
    status: TaskStatus
    result: str | None
    error: str | None
    now: str
    is_schedule: bool = False


@dataclass(frozen=True, slots=True)
class DeleteTask:
    id: str


@dataclass(frozen=True, slots=True)
class Firing:
    """Advance one schedule from ``expected`` to ``next_run_at``; fire it when ``fire``."""

    id: str
    expected: str
    next_run_at: str
    fire: bool
    status: TaskStatus
    lease: int
    now: str


@dataclass(frozen=True, slots=True)
class FireSchedules:
    firings: tuple[Firing, ...]


@dataclass(frozen=True, slots=True)
class RecoverStale:
    now: str
    known_types: frozenset[str]
    idempotent_types: frozenset[str]


@dataclass(frozen=True, slots=True)
class Prune:
    cutoff: str
    limit: int = PRUNE_CHUNK


@dataclass(frozen=True, slots=True)
class Heartbeat:
    now: str


WriteOp = (
    InsertTasks
    | StartTask
    | FinishTask
    | DeleteTask
    | FireSchedules
    | RecoverStale
    | Prune
    | Heartbeat
)
