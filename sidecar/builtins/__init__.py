"""Built-in task types, registered by every runtime unless ``builtins=False``.

Each module holds one task type (or a pair), its params model and its handler; the
contract and examples are in docs/handlers.md.
"""

from __future__ import annotations

from ..handlers import Handler
from .await_condition import await_condition
from .config_patch import config_patch
from .exec_ import exec_
from .http_request import http_request
from .readiness import mark_not_ready, mark_ready
from .sleep import sleep

__all__ = ["builtin_handlers"]


def builtin_handlers() -> list[Handler]:
    """Every built-in handler, in a fresh list.

    ``exec`` is always listed; its params validation rejects submissions ("exec is
    disabled") unless the runtime passes ``allow_exec=True`` in the validation context.
    """
    return [
        mark_ready,
        mark_not_ready,
        sleep,
        config_patch,
        await_condition,
        http_request,
        exec_,
    ]
