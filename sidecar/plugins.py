"""Load plugin handlers: ``--handlers MODULE:ATTR`` specs and the ``sidecar.handlers``
entry-point group, so a pip-installed package adds task types with no code change here.

A spec or entry point names a :class:`~sidecar.handlers.Handler` or a list/tuple of them.
Every handler loaded gets a ``source`` saying where it came from, so a duplicate task type
is a start-up error naming both places.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
from collections.abc import Iterable
from typing import Any

from .errors import HandlerConflict
from .handlers import Handler, HandlerRegistry

__all__ = ["ENTRY_POINT_GROUP", "load_handlers"]

ENTRY_POINT_GROUP = "sidecar.handlers"


def load_handlers(
    specs: Iterable[str] = (), *, entry_points: bool = True, builtins: bool = True
) -> list[Handler]:
    """Import plugin handlers, in order: ``specs`` first, then entry points.

    Args:
        specs: ``"MODULE:ATTR"`` strings; ``ATTR`` may be dotted (``pkg.mod:obj.handlers``)
            and must name a Handler or a list/tuple of Handlers.
        entry_points: also load every entry point in the ``sidecar.handlers`` group.
        builtins: check the loaded types against the built-in ones too (the runtime
            registers those unless opened with ``builtins=False``).

    Returns:
        The handlers, each with ``source`` naming its spec or entry point.

    Raises:
        ValueError: a malformed spec, a module that cannot be imported, a missing
            attribute, or something that is not a handler — the message names the spec.
        HandlerConflict: two sources (or a source and a built-in) claim one task type.
    """
    registry = HandlerRegistry()
    if builtins:
        from .builtins import builtin_handlers

        for h in builtin_handlers():
            registry.add(h, source=f"the built-in {h.type!r} ({h.source})")
    builtin_types = set(registry.types())
    loaded: list[Handler] = []
    for source, obj in _sources(specs, entry_points):
        for h in _as_handlers(obj, source):
            h = dataclasses.replace(h, source=source)
            try:
                registry.add(h)
            except HandlerConflict as exc:
                if h.type in builtin_types:
                    raise HandlerConflict(
                        f"{exc}; {h.type!r} is a built-in task type, pick another name"
                    ) from None
                raise
            if registry.get(h.type) is h:
                loaded = [x for x in loaded if x.type != h.type]  # same handler twice
                loaded.append(h)
    return loaded


def _sources(specs: Iterable[str], entry_points: bool) -> Iterable[tuple[str, Any]]:
    if isinstance(specs, str):
        raise TypeError("specs must be a list of 'MODULE:ATTR' strings, not one string")
    for spec in specs:
        yield f"--handlers {spec}", _load_spec(spec)
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            origin = f" from {dist.name} {dist.version}" if dist is not None else ""
            source = f"entry point {ep.name!r} ({ep.value}){origin}"
            try:
                obj = ep.load()
            except Exception as exc:
                raise ValueError(f"{source}: cannot load: {_describe(exc)}") from exc
            yield source, obj


def _load_spec(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    module_name, attr = module_name.strip(), attr.strip()
    if not sep or not module_name or not attr or ":" in attr:
        raise ValueError(f"--handlers {spec!r}: expected MODULE:ATTR, e.g. 'mypkg.tasks:handlers'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ValueError(f"--handlers {spec}: no module named {exc.name!r}") from exc
        raise ValueError(f"--handlers {spec}: importing {module_name}: {_describe(exc)}") from exc
    except Exception as exc:
        raise ValueError(f"--handlers {spec}: importing {module_name}: {_describe(exc)}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(
                f"--handlers {spec}: {obj.__name__ if obj is module else attr!r} "
                f"has no attribute {part!r}"
            ) from None
    return obj


def _as_handlers(obj: Any, source: str) -> list[Handler]:
    if isinstance(obj, Handler):
        return [obj]
    if isinstance(obj, list | tuple) and all(isinstance(x, Handler) for x in obj):
        return list(obj)
    hint = "decorate an async function with @sidecar.handler(...)"
    if isinstance(obj, list | tuple):
        bad = next(x for x in obj if not isinstance(x, Handler))
        raise ValueError(f"{source}: the list holds {bad!r}, which is not a handler; {hint}")
    raise ValueError(f"{source}: {type(obj).__name__} {obj!r} is not a handler; {hint}")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
