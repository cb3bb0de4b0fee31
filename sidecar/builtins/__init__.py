"""Built-in task types, registered by every runtime unless ``builtins=False``.

Each module holds one task type (or a pair), its params model and its handler; the
contract and examples are in docs/handlers.md.
"""

from __future__ import annotations

from ..handlers import Handler

# Modules, not their handlers: ``from .sleep import sleep`` would shadow the submodule.
from . import await_condition, config_patch, exec_, http_request, readiness, sleep

__all__ = ["builtin_handlers"]


def builtin_handlers() -> list[Handler]:
    """Every built-in handler, in a fresh list.

    ``exec`` is always listed; its params validation rejects submissions ("exec is
    disabled") unless the runtime passes ``allow_exec=True`` in the validation context.
    """
    return [
        readiness.mark_ready,
        readiness.mark_not_ready,
        sleep.sleep,
        config_patch.config_patch,
        await_condition.await_condition,
        http_request.http_request,
        exec_.exec_,
    ]
