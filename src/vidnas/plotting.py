"""The one place that sets matplotlib up (headless Agg backend) and saves figures atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: plots are files, never windows
import matplotlib.pyplot as plt  # noqa: E402

from vidnas.utils import atomic_write  # noqa: E402

__all__ = ["plt", "save_figure"]


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 110, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure atomically (format from the file suffix, PNG by default) and close it."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=fmt, **savefig_kwargs))
    finally:
        plt.close(fig)
    return path
