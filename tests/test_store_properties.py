"""Property-based tests of the store: random operation sequences against a plain-dict model.

The synchronous layer (``sidecar.store.db``) is the single source of truth for task state,
so the state machine drives it directly: no actors, no threads, hundreds of sequences in a
few seconds. Every step commits through ``Database.commit_batch`` like the store actor does,
and ``reopen`` closes the file and opens it again, so nothing may live only in memory.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from sidecar.clock import format_ts
from sidecar.models import TaskStatus
from sidecar.store import db as dbq
from sidecar.store import open_database, ops

from .conftest import EPOCH

ACTIVE = (TaskStatus.RUNNING, TaskStatus.QUEUED)


@dataclass
class Model:
    """What the store must hold for one id."""

    status: TaskStatus
    run: int
    lease: int
    params: dict
    seq: int  # submission order; the store orders by submitted_at, then id
    old_leases: list[int] = field(default_factory=list)
    history: list[TaskStatus] = field(default_factory=list)  # superseded runs' statuses


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # Hypothesis builds one machine per example; tmp_path would be shared between them.
        self.dir = Path(tempfile.mkdtemp(prefix="sidecar-props-"))
        self.path = self.dir / "sidecar.db"
        self.db = open_database(self.path)
        self.model: dict[str, Model] = {}
        self.gone: set[str] = set()  # ids deleted at least once (and not resubmitted)
        self.step = 0
        self.next_lease = 1
        self.ids = 0

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _now(self) -> tuple[str, int]:
        # A strictly increasing wall clock, one microsecond per step.
        self.step += 1
        return format_ts(EPOCH + timedelta(microseconds=self.step)), self.step

    def _lease(self) -> int:
        self.next_lease += 1
        return self.next_lease

    def _submit(self, task_id: str, params: dict, queued: bool) -> None:
        now, seq = self._now()
        lease = self._lease()
        status = TaskStatus.QUEUED if queued else TaskStatus.RUNNING
        row = ops.NewTask(
            id=task_id,
            type="noop",
            params=dbq.dumps(params),
            schedule=None,
            timeout=None,
            status=status,
            lease=lease,
            now=now,
            next_run_at=None,
        )
        ((out,),) = self.db.commit_batch([ops.InsertTasks((row,))])
        assert out.id == task_id
        old = self.model.get(task_id)
        if old is None:
            assert out.created and out.run == 1 and out.status is status
            self.model[task_id] = Model(status, 1, lease, params, seq)
            self.gone.discard(task_id)
        elif old.status is TaskStatus.FAILED:
            # A failed one-shot task runs again as run + 1 with the new params.
            assert out.created and out.run == old.run + 1 and out.status is status
            old.history.append(old.status)
            old.old_leases.append(old.lease)
            old.status, old.run, old.lease, old.params, old.seq = (
                status,
                old.run + 1,
                lease,
                params,
                seq,
            )
        else:
            # Running, queued or completed: deduplicated, nothing changes.
            assert not out.created and out.run == old.run and out.status is old.status

    @initialize()
    def start_empty(self) -> None:
        assert dbq.read_list(self.db.conn, 1000, None, None, None) == []

    @rule(params=st.dictionaries(st.sampled_from("abc"), st.integers()), queued=st.booleans())
    def submit_new(self, params: dict, queued: bool) -> None:
        # Deterministic ids: hypothesis replays and shrinks by re-drawing the same choices.
        self.ids += 1
        self._submit(str(uuid.UUID(int=self.ids)), params, queued)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), params=st.dictionaries(st.sampled_from("abc"), st.integers()))
    def submit_existing(self, data: st.DataObject, params: dict) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.model)))
        self._submit(task_id, params, queued=False)

    @precondition(lambda self: self.gone)
    @rule(data=st.data())
    def submit_deleted(self, data: st.DataObject) -> None:
        # A deleted id is free again: it starts over at run 1.
        self._submit(data.draw(st.sampled_from(sorted(self.gone))), {}, queued=False)

    @precondition(lambda self: any(m.status is TaskStatus.QUEUED for m in self.model.values()))
    @rule(data=st.data(), right_lease=st.booleans())
    def start(self, data: st.DataObject, right_lease: bool) -> None:
        queued = sorted(k for k, m in self.model.items() if m.status is TaskStatus.QUEUED)
        task_id = data.draw(st.sampled_from(queued))
        m = self.model[task_id]
        lease = m.lease if right_lease else self._lease()
        now, _ = self._now()
        (started,) = self.db.commit_batch([ops.StartTask(task_id, m.run, lease, now)])
        assert started is right_lease
        if right_lease:
            m.status = TaskStatus.RUNNING

    def _finish(self, data: st.DataObject, status: TaskStatus, lease_kind: str) -> None:
        pool = sorted(self.model) + sorted(self.gone)
        task_id = data.draw(st.sampled_from(pool))
        m = self.model.get(task_id)
        if m is None:
            lease = self._lease()  # any lease: the row is gone
        elif lease_kind == "current":
            lease = m.lease
        elif lease_kind == "stale" and m.old_leases:
            lease = data.draw(st.sampled_from(m.old_leases))
        else:
            lease = self._lease()
        now, _ = self._now()
        result = dbq.dumps({"ok": True}) if status is TaskStatus.COMPLETED else None
        error = None if status is TaskStatus.COMPLETED else dbq.dumps({"message": "boom"})
        op = ops.FinishTask(task_id, m.run if m else 1, lease, status, result, error, now)
        (finished,) = self.db.commit_batch([op])
        expect = m is not None and lease == m.lease and m.status in ACTIVE
        assert finished is expect, (task_id, lease_kind, m)
        if expect:
            m.status = status
        if m is None:
            # A finish after delete never resurrects the row.
            assert dbq.read_get(self.db.conn, task_id) is None

    @precondition(lambda self: self.model or self.gone)
    @rule(data=st.data(), lease_kind=st.sampled_from(["current", "stale", "random"]))
    def complete(self, data: st.DataObject, lease_kind: str) -> None:
        self._finish(data, TaskStatus.COMPLETED, lease_kind)

    @precondition(lambda self: self.model or self.gone)
    @rule(data=st.data(), lease_kind=st.sampled_from(["current", "stale", "random"]))
    def fail(self, data: st.DataObject, lease_kind: str) -> None:
        self._finish(data, TaskStatus.FAILED, lease_kind)

    @precondition(lambda self: self.model or self.gone)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.model) + sorted(self.gone)))
        (deleted,) = self.db.commit_batch([ops.DeleteTask(task_id)])
        assert deleted is (task_id in self.model)
        self.model.pop(task_id, None)
        self.gone.add(task_id)

    @rule()
    def reopen(self) -> None:
        self.db.close()
        self.db = open_database(self.path)

    @invariant()
    def records_match_the_model(self) -> None:
        conn = self.db.conn
        listed = dbq.read_list(conn, 1000, None, None, None)
        # Newest first: by submission time (a re-run counts as a new submission).
        expected_order = sorted(self.model, key=lambda k: self.model[k].seq, reverse=True)
        assert [r.id for r in listed] == expected_order
        for rec in listed:
            m = self.model[rec.id]
            assert (rec.status, rec.run, rec.params) == (m.status, m.run, m.params)
            assert (rec.completed_at is not None) == m.status.terminal
            if m.status is TaskStatus.FAILED:
                assert rec.error is not None and rec.error.message == "boom"
            else:
                assert rec.error is None
        for task_id in self.gone:
            assert dbq.read_get(conn, task_id) is None
            assert dbq.read_runs(conn, task_id) is None

    @invariant()
    def history_keeps_every_superseded_run(self) -> None:
        for task_id, m in self.model.items():
            runs = dbq.read_runs(self.db.conn, task_id)
            assert [r.run for r in runs] == list(range(1, m.run + 1))
            assert [r.status for r in runs] == [*m.history, m.status]


StoreMachine.TestCase.settings = settings(
    max_examples=75,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_store_state_machine = StoreMachine.TestCase
