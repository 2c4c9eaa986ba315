"""Mixed precision and device placement, one place for every trainer and runner.

``train.amp`` (and ``--amp`` of the inference commands) is one of ``AMP_MODES``:

* ``none``: float32 everywhere (the default; bf16 measured about 8x slower than float32 on a CPU without native bf16,
  3x faster for Swin inference on one with AMX: docs/DEPLOY.md §1c);
* ``bf16``: ``torch.autocast(dtype=torch.bfloat16)`` around forward and loss; no loss scaling needed;
* ``fp16``: ``torch.autocast(dtype=torch.float16)`` plus a ``GradScaler`` (loss scaling, skipped steps on inf/NaN).

Parameters stay float32 (autocast casts per op), so architecture weights (alphas, betas) are float32 throughout.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

__all__ = ["AMP_MODES", "autocast", "grad_scaler", "device_type", "check_device", "loader_options"]

AMP_MODES: tuple[str, ...] = ("none", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def device_type(device: str | torch.device) -> str:
    """``"cuda"``, ``"cpu"``... of a device or device string (``"cuda:1"`` -> ``"cuda"``)."""
    return torch.device(device).type


def check_device(device: str | torch.device) -> torch.device:
    """``torch.device(device)``, refusing one this machine does not have.

    Raises:
        ValueError: an unparsable device, or CUDA asked for where none is available (the message names it).
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1): {e}") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def autocast(device: str | torch.device, amp: str) -> Any:
    """The autocast context of ``amp`` on ``device`` (a no-op context for ``none``).

    Raises:
        ValueError: an unknown mode.
    """
    if amp not in AMP_MODES:
        raise ValueError(f"amp {amp!r}: valid modes are {', '.join(AMP_MODES)}")
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type(device), dtype=_DTYPES[amp])


def grad_scaler(device: str | torch.device, amp: str) -> torch.amp.GradScaler:
    """A ``GradScaler`` enabled for ``fp16`` only (bf16 and float32 need no loss scaling): ``scale(loss).backward()``,
    ``step(optimizer)`` (unscales first, skips the step on inf/NaN gradients), ``update()``."""
    return torch.amp.GradScaler(device_type(device), enabled=amp == "fp16")


def loader_options(device: str | torch.device, num_workers: int, persistent_workers: bool) -> dict[str, Any]:
    """``DataLoader`` keyword arguments for ``device``: pinned host memory when the batches go to a GPU (with
    ``non_blocking`` copies, the copy overlaps compute), worker processes as configured."""
    return {"num_workers": num_workers, "pin_memory": device_type(device) == "cuda",
            "persistent_workers": bool(persistent_workers and num_workers > 0)}
