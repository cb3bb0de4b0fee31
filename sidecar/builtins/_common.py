"""Helpers the built-in handlers share: params model base, paths confined to home, tails.

Submit-time checks read the validation context the runtime passes to
:meth:`sidecar.handlers.Handler.validate`: ``{"home": Path | None, "allow_exec": bool}``.
A context without a ``"home"`` key (a bare ``validate(params)`` call) gets the lexical
checks only; ``"home": None`` (an in-memory runtime) rejects any path under home.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import pydantic
from pydantic_core import PydanticCustomError

__all__ = [
    "DB_FILE_PREFIX",
    "OutsideHome",
    "Params",
    "Tail",
    "check_home_path",
    "resolve_inside_home",
]

# The runtime keeps its SQLite database (and -wal/-shm/-journal siblings) in home; no
# built-in may write or wait on those files.
DB_FILE_PREFIX = "sidecar.db"


class Params(pydantic.BaseModel):
    """Base of every built-in params model: strict JSON types, no unknown keys, frozen."""

    model_config = pydantic.ConfigDict(
        extra="forbid", strict=True, frozen=True, populate_by_name=True
    )


class OutsideHome(ValueError):
    """A path does not stay inside the home directory."""


def _lexical(value: str, *, allow_home: bool) -> PurePosixPath:
    """Reject what can be rejected without touching the file system."""
    if not value:
        raise OutsideHome("must be a non-empty path relative to the home directory")
    if "\0" in value:
        raise OutsideHome("must not contain NUL bytes")
    if "\\" in value:
        raise OutsideHome("must use '/' as the separator")
    path = PurePosixPath(value)
    if path.is_absolute():
        raise OutsideHome("must be relative to the home directory, not absolute")
    if ".." in path.parts:
        raise OutsideHome("must not contain '..'")
    if not path.parts and not allow_home:
        raise OutsideHome("must name a path below the home directory")
    return path


def resolve_inside_home(home: Path, value: str, *, allow_home: bool = False) -> Path:
    """Resolve ``value`` (relative, ``/``-separated) against ``home``, following symlinks.

    Blocking (``realpath`` touches the file system): call it from a worker thread when
    running under trio, except for the cheap submit-time check.

    Raises:
        OutsideHome: when the path is absolute, contains ``..``, or resolves (through a
            symlink) outside ``home``, or names the runtime's database.
    """
    rel = _lexical(value, allow_home=allow_home)
    real_home = Path(os.path.realpath(home))
    target = Path(os.path.realpath(real_home.joinpath(*rel.parts)))
    if target != real_home and not target.is_relative_to(real_home):
        raise OutsideHome("resolves outside the home directory (through a symlink)")
    if target == real_home and not allow_home:
        raise OutsideHome("must name a path below the home directory")
    if target.parent == real_home and target.name.startswith(DB_FILE_PREFIX):
        raise OutsideHome("must not name the sidecar database")
    return target


def check_home_path(value: str, info: pydantic.ValidationInfo, *, allow_home: bool = False) -> str:
    """Submit-time check for a params field naming a path under home.

    Returns the value unchanged; handlers resolve it again when they run, because the
    file system may have changed in between (a symlink planted after submit).
    """
    context: dict[str, Any] = info.context or {}
    try:
        if "home" not in context:
            _lexical(value, allow_home=allow_home)
            return value
        home = context["home"]
        if home is None:
            raise OutsideHome("needs a runtime with a home directory")
        resolve_inside_home(Path(home), value, allow_home=allow_home)
    except OutsideHome as exc:
        raise PydanticCustomError("outside_home", str(exc)) from None
    return value


class Tail:
    """The last ``limit`` bytes of a stream, decoded leniently on demand."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self.total = 0
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self._buf += chunk
        if len(self._buf) > self.limit:
            del self._buf[: len(self._buf) - self.limit]

    def text(self) -> str:
        return self._buf.decode("utf-8", errors="replace")
