"""Where a measurement was taken: stored beside every latency table and benchmark report."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["device_signature", "auto_threads", "cpu_bf16_flags", "cpu_int8_flags", "cpu_flags_line", "amp_note"]

# CPU flags (/proc/cpuinfo) of native bf16 arithmetic: x86 AVX-512 BF16 and AMX, Arm BF16
BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")
# ... and of INT8 dot products (what INT8 kernels need to beat fp32): x86 AMX, AVX-512 VNNI, AVX-VNNI, Arm i8mm, dot
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "i8mm", "asimddp")


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


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("flags", "features")) and ":" in line:
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_flags() -> list[str]:
    """The CPU's native bf16 flags among ``BF16_FLAGS`` (``/proc/cpuinfo``; empty where there are none, or on a
    system without that file: PyTorch then emulates bf16 arithmetic in float32 kernels, slowly)."""
    flags = _cpu_flags()
    return [f for f in BF16_FLAGS if f in flags]


def cpu_int8_flags() -> list[str]:
    """The CPU's INT8 dot-product flags among ``INT8_FLAGS`` (``/proc/cpuinfo``; empty where there are none)."""
    flags = _cpu_flags()
    return [f for f in INT8_FLAGS if f in flags]


def cpu_flags_line() -> str:
    """One line naming the CPU's bf16 and INT8 flags and torch's kernel level: what decides which precision pays."""
    bf16, int8 = cpu_bf16_flags(), cpu_int8_flags()
    return (f"CPU flags: bf16 {', '.join(bf16) or 'none'}; int8 {', '.join(int8) or 'none'}; torch kernels "
            f"{torch.backends.cpu.get_cpu_capability()}")


def amp_note(amp: str | Sequence[str], device: str = "cpu") -> str | None:
    """One line on the CPU's bf16 support when ``amp`` (a mode or several) includes ``bf16`` on the CPU, else None.

    The run goes ahead either way: without the flags bf16 is emulated (docs/DEPLOY.md measures both kinds of CPU).
    """
    modes = [amp] if isinstance(amp, str) else list(amp)
    if "bf16" not in modes or torch.device(device).type != "cpu":
        return None
    flags = cpu_bf16_flags()
    isa = torch.backends.cpu.get_cpu_capability()
    if flags:
        return f"bf16: this CPU has native bf16 ({', '.join(flags)}; torch kernels {isa})"
    return (f"bf16: this CPU has no native bf16 (no {', '.join(BF16_FLAGS)} flag; torch kernels {isa}): bf16 runs "
            "emulated, usually slower than float32")


def device_signature() -> dict[str, Any]:
    """Describe the machine and software that latencies were measured on.

    Returns:
        ``{"cpu": model name, "cpu_count": logical CPUs, "num_threads": torch intra-op threads,
        "torch": version, "python": version, "platform": OS string, "machine": architecture,
        "cuda": GPU name or None, "cpu_bf16": the CPU's native bf16 flags (``cpu_bf16_flags``)}``.
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
        "cpu_bf16": cpu_bf16_flags(),
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
