"""The handler contract: ``@sidecar.handler`` and the context a handler receives.

A handler is ``async def fn(ctx: TaskContext, params) -> JSON``. When the decorator is given
``params=`` (a pydantic model, or any type pydantic can validate, such as a dataclass),
submitted params are validated *at submit time* and the handler receives the typed instance;
otherwise it receives the JSON object as a dict.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from .errors import HandlerConflict, InvalidParams, InvalidTask, UnknownTaskType

__all__ = ["Handler", "HandlerRegistry", "TaskContext", "handler"]

HandlerFn = Callable[["TaskContext", Any], Awaitable[Any]]


class TaskContext:
    """What a running handler knows about its task.

    Attributes:
        task_id: the task's id.
        task_type: the task's type.
        run: the run number (1 for a first run; schedules count firings).
        home: the runtime's home directory (``None`` for an in-memory runtime).
        log: a logger bound to this task (``task_id`` and ``task_type`` in every record).
    """

    # Slots: one context lives per running task, and memory per task is a target.
    __slots__ = ("_log", "_services", "home", "progress", "run", "task_id", "task_type")

    def __init__(
        self,
        *,
        task_id: str,
        task_type: str,
        run: int,
        home: Path | None,
        services: RuntimeServices,
    ) -> None:
        self.task_id = task_id
        self.task_type = task_type
        self.run = run
        self.home = home
        self._services = services
        self.progress: Any = None
        self._log: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger bound to this task (built on first use: most handlers never log)."""
        if self._log is None:
            self._log = logging.LoggerAdapter(
                logging.getLogger(f"sidecar.task.{self.task_type}"),
                {"task_id": self.task_id, "task_type": self.task_type},
            )
        return self._log

    def report_progress(self, value: Any) -> None:
        """Publish a JSON value as the task's ``progress`` while it runs (latest wins)."""
        self.progress = value

    @property
    def services(self) -> RuntimeServices:
        """Runtime hooks for built-in handlers (readiness, options)."""
        return self._services


@dataclass
class RuntimeServices:
    """The small slice of runtime state that built-in handlers may touch."""

    set_ready: Callable[[bool], None]
    allow_exec: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Handler:
    """A registered task type. Build one with :func:`handler`."""

    type: str
    fn: HandlerFn
    params: Any = None
    idempotent: bool = False
    timeout: float | None = None
    concurrency: int | None = None
    source: str = ""
    adapter: pydantic.TypeAdapter[Any] | None = field(default=None, compare=False, repr=False)

    def validate(self, params: Any, context: Mapping[str, Any] | None = None) -> Any:
        """Check submitted params; return what the handler will receive.

        Raises:
            InvalidParams: naming the first offending field and the problem.
        """
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise InvalidParams("params must be a JSON object", field="params")
        if self.adapter is None:
            return params
        try:
            return self.adapter.validate_python(params, context=dict(context or {}))
        except pydantic.ValidationError as exc:
            raise _params_error(exc) from None

    async def __call__(self, ctx: TaskContext, params: Any) -> Any:
        return await self.fn(ctx, params)


def _params_error(exc: pydantic.ValidationError) -> InvalidParams:
    first = exc.errors(include_url=False)[0]
    loc = ".".join(str(part) for part in first.get("loc", ()))
    msg = first.get("msg", "invalid value")
    if loc:
        return InvalidParams(f"params.{loc}: {msg}", field=loc)
    return InvalidParams(msg)


def handler(
    type: str,
    *,
    params: Any = None,
    idempotent: bool = False,
    timeout: float | None = None,
    concurrency: int | None = None,
) -> Callable[[HandlerFn], Handler]:
    """Declare an async function as the handler of a task type.

    Args:
        type: the task type name callers submit.
        params: a pydantic model (or dataclass / other type pydantic validates) for params;
            ``None`` passes the raw dict.
        idempotent: safe to re-run after a crash; start-up recovery re-runs such tasks
            instead of failing them as interrupted.
        timeout: default per-task timeout in seconds (a submit may override it).
        concurrency: at most this many tasks of this type run at once; others are ``queued``.

    Raises:
        ValueError: for an empty type or a non-positive timeout/concurrency.
    """
    if not isinstance(type, str) or not type.strip():
        raise ValueError("handler type must be a non-empty string")
    if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError("handler timeout must be a positive number of seconds")
    if concurrency is not None and concurrency < 1:
        raise ValueError("handler concurrency must be at least 1")

    def decorate(fn: HandlerFn) -> Handler:
        return Handler(
            type=type,
            fn=fn,
            params=params,
            idempotent=idempotent,
            timeout=timeout,
            concurrency=concurrency,
            source=f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', fn)!s}",
            adapter=pydantic.TypeAdapter(params) if params is not None else None,
        )

    return decorate


class HandlerRegistry:
    """Task type → :class:`Handler`. A duplicate type is an error naming both sources."""

    def __init__(self, handlers: Iterable[Handler] = ()) -> None:
        self._by_type: dict[str, Handler] = {}
        for h in handlers:
            self.add(h)

    def add(self, h: Handler, *, source: str | None = None) -> None:
        if not isinstance(h, Handler):
            raise TypeError(f"{h!r} is not a handler; decorate it with @sidecar.handler(...)")
        if source is not None:
            h = Handler(**{**h.__dict__, "source": source})
        existing = self._by_type.get(h.type)
        if existing is not None and existing is not h and existing.fn is not h.fn:
            raise HandlerConflict(
                f"task type {h.type!r} is registered twice: by {existing.source} and by {h.source}"
            )
        self._by_type[h.type] = h

    def get(self, task_type: str) -> Handler:
        try:
            return self._by_type[task_type]
        except KeyError:
            raise UnknownTaskType(task_type, list(self._by_type)) from None

    def __contains__(self, task_type: object) -> bool:
        return task_type in self._by_type

    def __iter__(self):
        return iter(self._by_type.values())

    def types(self) -> list[str]:
        return sorted(self._by_type)

    def idempotent_types(self) -> set[str]:
        return {h.type for h in self._by_type.values() if h.idempotent}


def check_type_name(task_type: Any) -> str:
    """Validate the ``type`` field of a submission."""
    if not isinstance(task_type, str) or not task_type:
        raise InvalidTask("type must be a non-empty string")
    return task_type
