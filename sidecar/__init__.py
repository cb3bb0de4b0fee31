"""sidecar: a durable task runtime for trio.

Embed it::

    async with sidecar.open_runtime("./data", handlers=[resize]) as rt:
        task_id = await rt.submit("resize", {"w": 10})
        result = await rt.wait(task_id)
"""

from .clock import Clock, SystemClock
from .errors import (
    HandlerConflict,
    InvalidParams,
    InvalidTask,
    SchemaTooNew,
    ShuttingDown,
    SidecarError,
    StoreCorrupt,
    StoreUnavailable,
    TaskError,
    TaskNotFound,
    UnknownTaskType,
)
from .handlers import Handler, TaskContext, handler
from .models import (
    ErrorInfo,
    RunRecord,
    Schedule,
    SubmitOutcome,
    TaskResult,
    TaskStatus,
    record_to_wire,
    run_to_wire,
)
from .runtime import Runtime, TaskRequest, open_runtime

__all__ = [
    "Clock",
    "ErrorInfo",
    "Handler",
    "HandlerConflict",
    "InvalidParams",
    "InvalidTask",
    "RunRecord",
    "Runtime",
    "Schedule",
    "SchemaTooNew",
    "ShuttingDown",
    "SidecarError",
    "StoreCorrupt",
    "StoreUnavailable",
    "SubmitOutcome",
    "SystemClock",
    "TaskContext",
    "TaskError",
    "TaskNotFound",
    "TaskRequest",
    "TaskResult",
    "TaskStatus",
    "UnknownTaskType",
    "handler",
    "open_runtime",
    "record_to_wire",
    "run_to_wire",
]

__version__ = "0.1.0"
