"""Pydantic models of the v0 wire format: they validate bodies and generate the OpenAPI document.

Request bodies are validated here (not by ``quart_schema.validate_request``) so that the
submit hot path parses JSON whatever the ``Content-Type`` (the Go sidecar accepted
``curl -d`` bodies sent as form-encoded) and so that every failure becomes one short
``{"error": ...}`` message naming the field. ``quart_schema.document_request`` still puts the
same models into ``/v0/openapi.json``.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidTask
from ..models import Schedule, TaskStatus

__all__ = [
    "MAX_BATCH",
    "MAX_LIST_LIMIT",
    "MAX_WAIT_SECONDS",
    "BatchEntry",
    "BatchRequest",
    "EmptyBody",
    "ErrorBody",
    "IdBody",
    "ListQuery",
    "MetricsText",
    "ScheduleBody",
    "StatusBody",
    "TaskRecord",
    "TaskRequestBody",
    "WaitQuery",
    "describe_validation_error",
    "parse_task_request",
]

MAX_BATCH = 1000
MAX_LIST_LIMIT = 1000
# A long-poll longer than this is clamped: proxies and load balancers commonly cut idle
# responses at a few minutes, and a client can always poll again.
MAX_WAIT_SECONDS = 300.0


class ScheduleBody(BaseModel):
    """A cron schedule. ``blockHeight`` is reserved by the Go sidecar's format and rejected."""

    model_config = ConfigDict(extra="ignore")

    cron: str = Field(description="Five cron fields or an alias such as @hourly.")
    timezone: str = Field("UTC", description="IANA time zone the expression is evaluated in.")
    misfire: Literal["run-once", "skip"] = Field(
        "run-once", description="What to do with instants missed while the process was down."
    )
    blockHeight: Any = Field(None, description="Not supported; present means 400.")


class TaskRequestBody(BaseModel):
    """``POST /v0/tasks``: one task submission."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(min_length=1, description="Task type; a handler must be registered.")
    params: dict[str, Any] | None = Field(None, description="Handler parameters (an object).")
    id: str | None = Field(
        None,
        json_schema_extra={"format": "uuid"},
        description="Client-chosen UUID; a repeat of a running/completed id deduplicates (202).",
    )
    schedule: ScheduleBody | None = None
    timeout: float | None = Field(None, gt=0, description="Per-task timeout in seconds.")


class BatchRequest(BaseModel):
    """``POST /v0/tasks/batch``: up to 1,000 task submissions, committed in one group commit."""

    tasks: list[TaskRequestBody] = Field(max_length=MAX_BATCH)


class IdBody(BaseModel):
    id: str


class BatchEntry(BaseModel):
    id: str | None = None
    status: Literal[201, 202, 400]
    error: str | None = None


class ErrorBody(BaseModel):
    error: str


class EmptyBody(BaseModel):
    """No body (probes answer with the status code alone)."""


class MetricsText(BaseModel):
    """Prometheus text exposition format."""


class StatusBody(BaseModel):
    status: Literal["Initializing", "Ready"]


class ErrorDetail(BaseModel):
    message: str
    type: str
    hint: str | None = None
    retryable: bool


class TaskRecord(BaseModel):
    """A task record as the API returns it (absent fields are omitted)."""

    id: str
    type: str
    status: TaskStatus
    run: int
    params: dict[str, Any] | None = None
    result: Any = None
    error: str | None = None
    errorDetail: ErrorDetail | None = None
    schedule: dict[str, str] | None = None
    progress: Any = None
    submittedAt: str
    startedAt: str | None = None
    completedAt: str | None = None
    nextRunAt: str | None = None


class ListQuery(BaseModel):
    """Query string of ``GET /v0/tasks``."""

    model_config = ConfigDict(extra="ignore")

    limit: int = Field(100, ge=1, le=MAX_LIST_LIMIT)
    status: TaskStatus | None = None
    type: str | None = None
    before: str | None = Field(
        None,
        json_schema_extra={"format": "uuid"},
        description="Cursor: the id of the last record seen.",
    )


class WaitQuery(BaseModel):
    """Query string of ``GET /v0/tasks/{id}``."""

    model_config = ConfigDict(extra="ignore")

    wait: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description=f"Long-poll up to this many seconds (clamped to {MAX_WAIT_SECONDS:g}).",
    )


_TASK_ADAPTER = pydantic.TypeAdapter(TaskRequestBody)

_TYPE_WORDS = {
    "dict_type": "a JSON object",
    "model_type": "a JSON object",
    "model_attributes_type": "a JSON object",
    "string_type": "a string",
    "float_type": "a number",
    "float_parsing": "a number",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "list_type": "a JSON array",
}


def describe_validation_error(exc: pydantic.ValidationError, prefix: str = "") -> str:
    """One user-facing sentence for the first problem, naming the field (``params``, ``limit``)."""
    first = exc.errors(include_url=False)[0]
    loc = ".".join(str(part) for part in first.get("loc", ()))
    where = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or "body")
    kind = first.get("type", "")
    if kind == "missing":
        return f"{where} is required"
    if kind in _TYPE_WORDS:
        return f"{where} must be {_TYPE_WORDS[kind]}"
    return f"{where}: {first.get('msg', 'invalid value')}"


def parse_task_request(data: Any, prefix: str = "") -> TaskRequestBody:
    """Validate one decoded submission.

    Raises:
        InvalidTask: with a message naming the offending field.
    """
    if not isinstance(data, dict):
        raise InvalidTask(f"{prefix.rstrip('.') or 'body'} must be a JSON object")
    schedule = data.get("schedule")
    if "blockHeight" in data or (isinstance(schedule, dict) and "blockHeight" in schedule):
        raise InvalidTask("blockHeight schedules are not supported")
    try:
        return _TASK_ADAPTER.validate_python(data)
    except pydantic.ValidationError as exc:
        raise InvalidTask(describe_validation_error(exc, prefix)) from None


def to_schedule(body: ScheduleBody | None) -> Schedule | None:
    """The runtime's :class:`Schedule` for a validated schedule body."""
    if body is None:
        return None
    return Schedule(cron=body.cron, timezone=body.timezone, misfire=body.misfire)
