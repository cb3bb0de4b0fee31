"""Prometheus metrics for one runtime, on a registry of its own (no global state).

Actors record through this object; ``/v0/metrics`` renders ``registry``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_DURATION_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 1, 5, 30, 120, 600, 3600)
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
_LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 60)


@dataclass(frozen=True, slots=True)
class TypeMetrics:
    submitted: Counter
    deduplicated: Counter
    completed: Counter
    failed: Counter
    duration: Histogram


class Metrics:
    """The runtime's counters, gauges and histograms."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._per_type: dict[str, TypeMetrics] = {}
        self.submitted = Counter(
            "sidecar_tasks_submitted", "Task submissions that started a run", ["type"], registry=r
        )
        self.deduplicated = Counter(
            "sidecar_tasks_deduplicated",
            "Submissions answered by an existing task",
            ["type"],
            registry=r,
        )
        self.completed = Counter(
            "sidecar_tasks_completed", "Task runs that completed", ["type"], registry=r
        )
        self.failed = Counter("sidecar_tasks_failed", "Task runs that failed", ["type"], registry=r)
        self.duration = Histogram(
            "sidecar_task_duration_seconds",
            "Handler run time",
            ["type"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.running = Gauge("sidecar_tasks_running", "Task actors running a handler", registry=r)
        self.queued = Gauge("sidecar_tasks_queued", "Tasks waiting for capacity", registry=r)
        self.batch_size = Histogram(
            "sidecar_store_batch_size",
            "Writes committed per group commit",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "sidecar_store_commit_seconds",
            "Time to apply and commit one batch",
            buckets=_COMMIT_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "sidecar_store_errors", "Batches the store failed to commit", registry=r
        )
        self.lateness = Histogram(
            "sidecar_scheduler_lateness_seconds",
            "Schedule firing time minus due time",
            buckets=_LATENESS_BUCKETS,
            registry=r,
        )
        self.overlap_skips = Counter(
            "sidecar_scheduler_overlap_skips",
            "Firings skipped: previous run still running",
            ["type"],
            registry=r,
        )
        self.misfires = Counter(
            "sidecar_scheduler_misfires",
            "Schedules that missed instants while down",
            ["policy"],
            registry=r,
        )

    def for_type(self, task_type: str) -> TypeMetrics:
        """The per-type children, cached: ``labels()`` on every task is measurable."""
        found = self._per_type.get(task_type)
        if found is None:
            found = self._per_type[task_type] = TypeMetrics(
                submitted=self.submitted.labels(task_type),
                deduplicated=self.deduplicated.labels(task_type),
                completed=self.completed.labels(task_type),
                failed=self.failed.labels(task_type),
                duration=self.duration.labels(task_type),
            )
        return found

    def render(self) -> bytes:
        """Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
