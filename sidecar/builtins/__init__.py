"""Built-in task types, registered by every runtime unless ``builtins=False``."""

from __future__ import annotations

from ..handlers import Handler
from .readiness import mark_not_ready, mark_ready

__all__ = ["builtin_handlers"]


def builtin_handlers() -> list[Handler]:
    """Every built-in handler, in a fresh list."""
    return [mark_ready, mark_not_ready]
