"""Wall-clock latency: one callable, or several measured side by side.

The development machine is noisy (+-20% run to run) while ratios measured together are stable, so a benchmark that
compares candidates should time them with ``interleaved_timing`` rather than one after the other with ``time_fn``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["TimingStats", "time_fn", "interleaved_timing"]


@dataclass(frozen=True)
class TimingStats:
    """Summary of ``n`` timed calls, in milliseconds.

    Attributes:
        median_ms: median call time (robust to the machine's noise: prefer it for ratios).
        mean_ms: mean call time (the ST-NAS protocol averages: FPS = 1000 / mean_ms).
        std_ms: sample standard deviation (ddof = 1; 0 when n = 1).
        p90_ms: 90th percentile (linear interpolation between samples).
        n: number of timed calls.
        samples_ms: every timed call, in call order.
    """

    median_ms: float
    mean_ms: float
    std_ms: float
    p90_ms: float
    n: int
    samples_ms: tuple[float, ...] = field(default=(), repr=False)

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> TimingStats:
        """Summarise call times given in milliseconds (at least one)."""
        if not samples_ms:
            raise ValueError("need at least one timing sample")
        xs = [float(x) for x in samples_ms]
        return cls(
            median_ms=statistics.median(xs),
            mean_ms=statistics.fmean(xs),
            std_ms=statistics.stdev(xs) if len(xs) > 1 else 0.0,
            p90_ms=float(np.percentile(xs, 90)),
            n=len(xs),
            samples_ms=tuple(xs),
        )

    @property
    def fps(self) -> float:
        """Calls per second from the mean call time (``1000 / mean_ms``), as the ST-NAS FPS protocol averages."""
        return 1000.0 / self.mean_ms if self.mean_ms > 0 else float("inf")

    def to_dict(self, *, samples: bool = False) -> dict[str, Any]:
        """Plain dict for JSON; the raw samples only when ``samples`` is true."""
        d = asdict(self)
        if samples:
            d["samples_ms"] = list(self.samples_ms)
        else:
            d.pop("samples_ms")
        return d


def _check_counts(warmup: int, iters: int) -> None:
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")


def _timed_call(fn: Callable[[], Any], sync: Callable[[], Any] | None) -> float:
    t0 = time.perf_counter()
    fn()
    if sync is not None:
        # asynchronous devices (CUDA) return before the work is done: wait inside the timed region
        sync()
    return (time.perf_counter() - t0) * 1000.0


def time_fn(
    fn: Callable[[], Any],
    *,
    warmup: int,
    iters: int,
    sync: Callable[[], Any] | None = None,
) -> TimingStats:
    """Time ``iters`` calls of ``fn()`` after ``warmup`` untimed calls, under ``torch.inference_mode``.

    Args:
        fn: zero-argument callable (close over the model and its input, e.g. ``lambda: model(x)``).
        warmup: untimed calls first (allocator, caches, lazy initialisation).
        iters: timed calls; each one is a sample, measured with ``time.perf_counter``.
        sync: called after every call inside the timed region, e.g. ``torch.cuda.synchronize`` on a GPU.

    Returns:
        Statistics over the ``iters`` samples.
    """
    _check_counts(warmup, iters)
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        if sync is not None:
            sync()
        samples = [_timed_call(fn, sync) for _ in range(iters)]
    return TimingStats.from_samples(samples)


def interleaved_timing(
    fns: Mapping[str, Callable[[], Any]],
    *,
    warmup: int,
    iters: int,
    rounds: int,
    sync: Callable[[], Any] | None = None,
) -> dict[str, TimingStats]:
    """Time several candidates side by side, so slow phases of a noisy machine hit all of them alike.

    Each candidate first gets ``warmup`` untimed calls. Then ``rounds`` rounds run; in every round each candidate
    makes ``iters`` consecutive timed calls, the candidates taking turns in an order rotated by one position per round
    (round r starts with candidate ``r mod len(fns)``), so no candidate is always first or always after the same one.
    Each candidate is thus called ``warmup + rounds * iters`` times and its statistics pool ``rounds * iters``
    samples. Runs under ``torch.inference_mode``.

    Args:
        fns: name -> zero-argument callable.
        warmup: untimed calls per candidate before the first round.
        iters: timed calls per candidate per round.
        rounds: number of rounds.
        sync: called after every timed call inside the timed region (e.g. ``torch.cuda.synchronize``).

    Returns:
        name -> statistics, in the order of ``fns``.
    """
    _check_counts(warmup, iters)
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if not fns:
        raise ValueError("fns is empty: nothing to time")
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for name in names:
            for _ in range(warmup):
                fns[name]()
        if sync is not None:
            sync()
        for r in range(rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                fn = fns[name]
                samples[name].extend(_timed_call(fn, sync) for _ in range(iters))
    return {name: TimingStats.from_samples(samples[name]) for name in names}
