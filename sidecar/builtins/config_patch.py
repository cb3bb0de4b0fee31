"""``config-patch``: merge a JSON merge patch (RFC 7386) into a TOML or JSON file under home.

TOML files keep their comments and layout (tomlkit edits the parsed document in place);
the write is atomic (temp file in the same directory, fsync, ``os.replace``, fsync of the
directory), so a crash leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, Literal

import pydantic
import tomlkit
import tomlkit.exceptions
from pydantic_core import PydanticCustomError

from .. import threads
from ..errors import TaskError
from ..handlers import TaskContext, handler
from ._common import OutsideHome, Params, check_home_path, resolve_inside_home

__all__ = ["ConfigPatchParams", "config_patch", "merge_patch"]

_FORMATS_BY_SUFFIX = {".toml": "toml", ".json": "json"}


class ConfigPatchParams(Params):
    """Params of ``config-patch``.

    Attributes:
        file: path relative to home; must resolve inside it (no ``..``, not absolute,
            no symlink leading out).
        format: ``"toml"`` or ``"json"``; inferred from a ``.toml`` / ``.json`` suffix.
        create: create the file (and missing parent directories) when it does not exist.
        patch: a JSON object merged with RFC 7386 semantics: objects merge, ``null``
            deletes, anything else replaces.
    """

    # Field order is validation order: ``format`` needs ``file``, ``patch`` needs ``format``.
    file: str
    format: Literal["toml", "json"] | None = pydantic.Field(None, validate_default=True)
    create: bool = False
    patch: dict[str, Any]

    @pydantic.field_validator("file")
    @classmethod
    def _file_inside_home(cls, value: str, info: pydantic.ValidationInfo) -> str:
        return check_home_path(value, info)

    @pydantic.field_validator("format")
    @classmethod
    def _infer_format(cls, value: str | None, info: pydantic.ValidationInfo) -> str | None:
        if value is not None:
            return value
        file = info.data.get("file")
        if file is None:
            return None  # ``file`` already failed; that error is the one to report
        inferred = _FORMATS_BY_SUFFIX.get(Path(file).suffix.lower())
        if inferred is None:
            raise PydanticCustomError(
                "format_unknown",
                "cannot infer the format of {file} from its extension; "
                "set format to 'toml' or 'json'",
                {"file": repr(file)},
            )
        return inferred

    @pydantic.field_validator("patch")
    @classmethod
    def _patch_fits_format(
        cls, value: dict[str, Any], info: pydantic.ValidationInfo
    ) -> dict[str, Any]:
        if info.data.get("format") == "toml":
            where = _null_in_array(value, "")
            if where is not None:
                raise PydanticCustomError(
                    "toml_null",
                    "TOML cannot store null inside an array (at {where})",
                    {"where": where},
                )
        return value


def _null_in_array(value: Any, path: str, in_array: bool = False) -> str | None:
    """The path of the first ``null`` TOML could not store, if any."""
    if value is None and in_array:
        return path or "."
    if isinstance(value, dict):
        for key, item in value.items():
            found = _null_in_array(item, f"{path}.{key}" if path else key, in_array)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _null_in_array(item, f"{path}[{index}]", True)
            if found:
                return found
    return None


@handler("config-patch", params=ConfigPatchParams, idempotent=True)
async def config_patch(ctx: TaskContext, params: ConfigPatchParams) -> dict[str, Any]:
    """Apply the patch. Result: ``{"file", "changed", "sha256"}`` (digest of the final bytes).

    Raises:
        TaskError: the file escapes home (checked again now: the tree may have changed
            since submit), does not exist without ``create``, does not parse (the parser's
            message; the file is untouched), or cannot be written.
    """
    if ctx.home is None:
        raise TaskError("config-patch needs a runtime with a home directory")
    # One worker-thread call does the whole read-modify-write: it never blocks the trio
    # thread, and it is not abandoned on cancellation, so a write is never left half-done.
    return await threads.run_sync(_apply, ctx.home, params)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch on plain JSON values; returns the merged value.

    ``target`` may be mutated; pass a copy to keep the original.
    """
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = merge_patch(target.get(key), value)
    return target


_locks_guard = threading.Lock()
_locks: dict[Path, threading.Lock] = {}


def _lock_for(path: Path) -> threading.Lock:
    """One lock per real path, so two patches of one file cannot lose an update."""
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def _apply(home: Path, params: ConfigPatchParams) -> dict[str, Any]:
    try:
        target = resolve_inside_home(home, params.file)
    except OutsideHome as exc:
        raise TaskError(f"file {params.file!r} {exc}") from None
    with _lock_for(target):
        try:
            original: bytes | None = target.read_bytes()
        except FileNotFoundError:
            original = None
        except OSError as exc:
            raise TaskError(f"cannot read {params.file}: {exc.strerror or exc}") from None
        if original is None and not params.create:
            raise TaskError(f"{params.file} does not exist", hint="set create: true to create it")
        if params.format == "toml":
            updated = _patch_toml(params.file, original, params.patch)
        else:
            updated = _patch_json(params.file, original, params.patch)
        changed = original is None or updated != original
        if changed:
            mode = 0o644 if original is None else target.stat().st_mode & 0o7777
            try:
                _atomic_write(target, updated, mode)
            except OSError as exc:
                raise TaskError(
                    f"cannot write {params.file}: {exc.strerror or exc}", retryable=True
                ) from None
        return {
            "file": params.file,
            "changed": changed,
            "sha256": hashlib.sha256(updated).hexdigest(),
        }


def _decode(file: str, data: bytes, kind: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TaskError(f"{file} is not valid {kind}: not UTF-8 ({exc.reason})") from None


def _patch_toml(file: str, original: bytes | None, patch: dict[str, Any]) -> bytes:
    text = "" if original is None else _decode(file, original, "TOML")
    try:
        doc = tomlkit.parse(text)
    except (tomlkit.exceptions.TOMLKitError, ValueError) as exc:
        raise TaskError(f"{file} is not valid TOML: {exc}") from None
    try:
        _merge_toml(doc, patch)
    except (tomlkit.exceptions.TOMLKitError, TypeError, ValueError) as exc:
        raise TaskError(f"cannot apply the patch to {file}: {exc}") from None
    out = doc.as_string()
    # Deleting the last table leaves the blank line that separated it behind.
    if out.endswith("\n\n") and not text.endswith("\n\n"):
        out = out.rstrip("\n") + "\n"
    return out.encode("utf-8")


def _merge_toml(target: MutableMapping[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 applied in place to a tomlkit container, so untouched items keep their
    comments, order and formatting."""
    for key, value in patch.items():
        if value is None:
            if key in target:
                del target[key]
            continue
        existing = target.get(key) if key in target else None
        if isinstance(value, dict) and isinstance(existing, MutableMapping):
            _merge_toml(existing, value)
        elif key in target and _same_json(existing, value):
            continue  # rewriting an equal value would still reformat the line
        else:
            target[key] = merge_patch(None, value) if isinstance(value, dict) else value


def _same_json(existing: Any, value: Any) -> bool:
    """Equal as JSON, telling ``true`` from ``1`` and ``1`` from ``1.0``."""
    plain = existing.unwrap() if hasattr(existing, "unwrap") else existing
    try:
        return json.dumps(plain, sort_keys=True, default=str) == json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return False


_INDENT = re.compile(rb"^[\[{][ \t]*\r?\n([ \t]+)\S")


def _patch_json(file: str, original: bytes | None, patch: dict[str, Any]) -> bytes:
    if original is None:
        data: Any = {}
    else:
        try:
            data = json.loads(_decode(file, original, "JSON"))
        except json.JSONDecodeError as exc:
            raise TaskError(f"{file} is not valid JSON: {exc}") from None
    merged = merge_patch(copy.deepcopy(data), patch)
    if original is not None and _same_json(data, merged):
        return original  # unchanged: keep the file's own formatting byte for byte
    if original is not None and b"\n" not in original.strip():
        text = json.dumps(merged, ensure_ascii=False, separators=(",", ":"))
    else:
        match = _INDENT.match(original or b"")
        indent = match.group(1).decode() if match else 2
        text = json.dumps(merged, ensure_ascii=False, indent=indent)
    if original is None or original.endswith(b"\n"):
        text += "\n"
    return text.encode("utf-8")


def _atomic_write(target: Path, data: bytes, mode: int) -> None:
    """Replace ``target`` with ``data`` so readers see the old or the new file, whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    replaced = False
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        replaced = True
    finally:
        if not replaced:  # never leave a half-written temp file behind
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    # The rename is durable only once the directory entry is on disk.
    dir_fd = os.open(target.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
