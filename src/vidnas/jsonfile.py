"""One codec for the library's versioned JSON files: architecture files, cell genotypes, latency tables.

A record class subclasses ``JsonFile`` and implements ``to_dict()`` (with ``"schema_version"`` first) and
``from_dict(data, source)``; it inherits ``to_json``, ``from_json``, ``save`` (atomic) and ``load``, whose errors all
name the file. ``check_header`` validates the envelope every ``from_dict`` starts with: a JSON object, the right
schema version, no unknown field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from vidnas.utils import atomic_write_text, json_default

__all__ = ["JsonFile", "check_header", "where"]

R = TypeVar("R", bound="JsonFile")


def where(source: str | os.PathLike | None) -> str:
    """``"SOURCE: "`` (the prefix of every error about a file), or ``""``."""
    return f"{source}: " if source is not None and str(source) else ""


def check_header(data: Any, *, version: int, error: type[Exception], source: str | os.PathLike | None = None,
                 fields: Iterable[str] | None = None, required: bool = True) -> dict[str, Any]:
    """Check a decoded file's envelope; returns ``data`` (a dict).

    Args:
        data: the decoded JSON.
        version: the schema version this reader understands.
        error: exception type raised (its message names ``source`` and the field).
        source: the file name, for messages.
        fields: the valid keys besides ``schema_version`` (None: any key).
        required: a missing ``schema_version`` is an error (else it is accepted as ``version``).
    """
    w = where(source)
    if not isinstance(data, dict):
        raise error(f"{w}expected a JSON object, got {type(data).__name__}")
    if "schema_version" not in data and required:
        raise error(f"{w}field 'schema_version' is missing (this reader understands {version})")
    got = data.get("schema_version", version)
    if got != version:
        raise error(f"{w}field 'schema_version': unsupported version {got!r}; this reader understands {version} (a "
                    f"file of schema_version {got!r} needs another vidnas version)")
    if fields is not None:
        valid = list(fields)
        for key in data:
            if key != "schema_version" and key not in valid:
                raise error(f"{w}unknown field {key!r}; valid fields: schema_version, {', '.join(valid)}")
    return data


class JsonFile:
    """Mixin: JSON text and atomic files for a record with ``to_dict`` / ``from_dict(data, source)``.

    Class attributes:
        FILE_KIND: what the file is, for "not found" messages ("architecture file").
        FILE_ERROR: the exception type of every error (a ``ValueError`` subclass).
    """

    FILE_KIND: ClassVar[str] = "file"
    FILE_ERROR: ClassVar[type[Exception]] = ValueError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls: type[R], data: Any, source: str | None = None) -> R:
        raise NotImplementedError

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of ``to_dict()``."""
        return json.dumps(self.to_dict(), indent=indent, default=json_default)

    @classmethod
    def from_json(cls: type[R], text: str, source: str | None = None) -> R:
        """Parse ``to_json`` output; ``source`` (a file name) prefixes every error."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise cls.FILE_ERROR(f"{where(source)}invalid JSON: {e}") from e
        return cls.from_dict(data, source=source)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``to_json()`` to ``path`` atomically (a crash never leaves half a file)."""
        return atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls: type[R], path: str | os.PathLike) -> R:
        """Read a file written by ``save``; errors name the file (and the field)."""
        p = Path(path)
        if not p.is_file():
            raise cls.FILE_ERROR(f"{cls.FILE_KIND} not found: {p}")
        try:
            text = p.read_text()
        except UnicodeDecodeError as e:
            raise cls.FILE_ERROR(f"{p}: not a {cls.FILE_KIND} (not JSON text: {e.reason} at byte {e.start})") from e
        return cls.from_json(text, source=str(p))
