"""Where a measurement was taken: stored beside every latency table and benchmark report."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

__all__ = ["device_signature"]


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
