"""Small leaf helpers shared by every package: atomic writes, the JSON default, seeding. Imports nothing from vidnas."""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "atomic_write_json",
    "replace_own_json",
    "json_default",
    "seed_everything",
]


def atomic_write(path: str | os.PathLike, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` then rename onto ``path``: a crash never leaves a half-written file.

    Args:
        path: final destination; parent folders are created.
        writer: writes the whole content to the temporary path it is given (same folder, so the rename is atomic).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=json_default) + "\n")


def replace_own_json(path: str | os.PathLike, obj: dict[str, Any], keys: Iterable[str]) -> bool:
    """Write ``obj`` as JSON atomically at ``path``, unless ``path`` holds a file its writer did not write: an existing
    file is replaced only when it is a JSON object with every one of ``keys`` (the writer's own marks). Returns False,
    writing nothing, otherwise."""
    target = Path(path)
    if target.exists():
        try:
            ours = set(keys) <= json.loads(target.read_text()).keys()
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            return False
    atomic_write_json(target, obj)
    return True


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for the library's records: tensors and arrays as lists, tuples and sets as lists,
    paths as strings; anything else raises TypeError naming the type."""
    if hasattr(o, "tolist"):  # tensors and numpy arrays
        return o.tolist()
    if isinstance(o, tuple | set):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
