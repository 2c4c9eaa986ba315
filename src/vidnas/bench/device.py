"""Where a measurement was taken: stored beside every latency table and benchmark report."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

__all__ = ["device_signature", "auto_threads"]


def _cpu_model() -> str:
    # /proc/cpuinfo names the CPU on Linux; platform.processor() is often empty or just the architecture there
    cpuinfo = Path("/proc/cpuinfo")
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")) and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_signature() -> dict[str, Any]:
    """Describe the machine and software that latencies were measured on.

    Returns:
        ``{"cpu": model name, "cpu_count": logical CPUs, "num_threads": torch intra-op threads,
        "torch": version, "python": version, "platform": OS string, "machine": architecture,
        "cuda": GPU name or None}``.
    """
    cuda = None
    if torch.cuda.is_available():
        cuda = torch.cuda.get_device_name(torch.cuda.current_device())
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "num_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cuda": cuda,
    }


def auto_threads(*, reserve: int = 0, cpu_count: int | None = None, load: float | None = None) -> int:
    """The default intra-op thread count for inference (``--threads auto``): the cores nobody else is using.

    ``cpu_count - round(1-minute load average) - reserve``, at least 1. On a shared machine a second intra-op thread
    that has to wait for a core slows every parallel kernel down to the other process's time slice: measured here
    (docs/RESULTS.md §16) 2.2-4x per frame (median; up to 9x on average) with a load average of 3.7 on 2 cores, for
    a tiny model as for EfficientNet-Lite0 and MobileNetV2 at 360x480.

    Args:
        reserve: cores to leave to other threads of this process (``vidnas predict``: 1, for its reader and writer).
        cpu_count: logical CPUs (default ``os.cpu_count()``).
        load: 1-minute load average (default ``os.getloadavg()[0]``; 0 where the OS has none).
    """
    n = int(cpu_count if cpu_count is not None else (os.cpu_count() or 1))
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):
            load = 0.0
    return max(1, n - int(round(load)) - int(reserve))
