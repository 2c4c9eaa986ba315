"""Checkpoint files: written atomically, so a run killed mid-save resumes from the previous epoch intact.

Below ``models`` (which loads them) and ``engine`` (which writes them); imports only torch and ``vidnas.utils``.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import torch

from vidnas.utils import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError"]

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or does not fit the model; the message names the file."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save(state)`` to a temporary file, then rename onto ``path``.

    Raises:
        CheckpointError: the file cannot be written (a full disk, a read-only folder); the previous ``path`` is
            intact then, and the message says so.
    """
    path = Path(path)
    try:
        return atomic_write(path, lambda tmp: torch.save(state, tmp))
    except OSError as e:
        what = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
        raise CheckpointError(f"cannot write {path}: {what}; {kept} (free space, then continue with --resume)") from e
    except RuntimeError as e:  # torch.save reports a failed write (e.g. ENOSPC) as a RuntimeError
        kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
        raise CheckpointError(f"cannot write {path}: {e}; {kept} (free space, then continue with --resume)") from e


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; raise CheckpointError naming the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises several unrelated types for a corrupt file
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a vidnas checkpoint (no 'model' entry)")
    return state
