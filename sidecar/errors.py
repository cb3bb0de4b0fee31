"""The exceptions sidecar raises, as one tree so callers can catch by kind.

::

    SidecarError
    ├── InvalidTask (ValueError)          bad input: fix the request and retry
    │   ├── UnknownTaskType               no handler is registered for the type
    │   └── InvalidParams                 params failed the handler's schema
    ├── TaskNotFound (LookupError)        no record with that id
    ├── ShuttingDown (RuntimeError)       the runtime stopped accepting work
    ├── StoreUnavailable (RuntimeError)   the SQLite store cannot read or write now
    ├── SchemaTooNew (RuntimeError)       the DB was written by a newer sidecar
    ├── StoreCorrupt (RuntimeError)       the file is not a sidecar SQLite DB
    └── HandlerConflict (ValueError)      two handlers claim one task type

    TaskError (Exception)                 raised *by handlers* to fail a task with
                                          operator-actionable detail

Bad input is always a ``ValueError`` subclass with a message a user can act on.
"""

from __future__ import annotations

__all__ = [
    "HandlerConflict",
    "InvalidParams",
    "InvalidTask",
    "SchemaTooNew",
    "ShuttingDown",
    "SidecarError",
    "StoreCorrupt",
    "StoreUnavailable",
    "TaskError",
    "TaskNotFound",
    "UnknownTaskType",
]


class SidecarError(Exception):
    """Base class of every error sidecar raises on its own account."""


class InvalidTask(SidecarError, ValueError):
    """A submission is malformed: bad id, bad schedule, bad params."""


class UnknownTaskType(InvalidTask):
    """No handler is registered for the submitted task type."""

    def __init__(self, task_type: str, known: list[str] | None = None) -> None:
        self.task_type = task_type
        hint = f" (known types: {', '.join(sorted(known))})" if known else ""
        super().__init__(f"unknown task type {task_type!r}{hint}")


class InvalidParams(InvalidTask):
    """Submitted params failed the handler's params schema.

    ``field`` names the first offending field (dotted path), when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class TaskNotFound(SidecarError, LookupError):
    """No task record has the given id."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"task not found: {task_id}")


class ShuttingDown(SidecarError, RuntimeError):
    """The runtime is shutting down (or closed) and accepts no new work."""

    def __init__(self, message: str = "sidecar is shutting down") -> None:
        super().__init__(message)


class StoreUnavailable(SidecarError, RuntimeError):
    """The store could not complete an operation (disk full, read-only, I/O error).

    Nothing was half-written: the transaction that failed was rolled back.
    """


class SchemaTooNew(SidecarError, RuntimeError):
    """The database schema is newer than this code understands; the file is untouched."""


class StoreCorrupt(SidecarError, RuntimeError):
    """The database file is not a readable sidecar SQLite database; the file is untouched."""


class HandlerConflict(SidecarError, ValueError):
    """Two handlers were registered for one task type."""


class TaskError(Exception):
    """Raise from a handler to fail its task with operator-actionable detail.

    Args:
        message: what went wrong, for the task record's ``error``.
        hint: what an operator can do about it (appended to the wire ``error``).
        retryable: whether resubmitting the same task may succeed.
        result: an optional JSON value stored on the failed record as its ``result``.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        retryable: bool = False,
        result: object = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.retryable = retryable
        self.result = result
