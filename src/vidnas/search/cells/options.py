"""The settings of a dynamic-cell search: ``SearchOptions`` (beyond the config), the checks of ``cells.*``, and the
sizes the search works at.

Proxy budget (``cells.proxy_scale`` < 1): the search caches the static outputs at the data size times the scale
(rounded to multiples of 32, ``proxy_size``), so every candidate trains and is scored on smaller maps; the cost is
still measured at the deployment size (``cells.latency_size``, default the data size: ``deployment_size``) and the
top-k cells train at the full size (``search_data_config(cfg, proxy=False)``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vidnas.config import Config
from vidnas.search.cells.meta_split import META_SPLITS

__all__ = [
    "SAMPLERS",
    "SearchOptions",
    "proxy_size",
    "search_data_config",
    "deployment_size",
    "check_cells_config",
]


@dataclass(frozen=True)
class SearchOptions:
    """Search settings beyond ``CellsConfig`` (the paper's numbers live there).

    Attributes:
        batch_size: candidates per PPO update; None = ``max(1, cells.workers)`` (one per worker).
        ppo_epochs: optimisation passes per PPO update.
        early_stop_tolerance: tol of the halfway rule (``evaluate.EarlyStopRule``).
        early_stop_min_history: candidates needed before anything stops early.
        max_steps_per_epoch: cap on a candidate's steps per epoch (quick runs), None = all.
        inject_failure: testing aid: an op or aggregation name whose candidates raise in the worker.
        shard_size: windows per disk-cache shard.
        cache_batch_size: windows per static forward while caching.
        ray_address: Ray cluster address for ``--executor ray`` (None = a local Ray).
        worker_threads: torch threads per worker process (None = cores / workers).
        plots: draw the plots at the end of the search.
        show_progress: tqdm bars.
    """

    batch_size: int | None = None
    ppo_epochs: int = 4
    early_stop_tolerance: float = 0.1
    early_stop_min_history: int = 2
    max_steps_per_epoch: int | None = None
    inject_failure: str | None = None
    shard_size: int = 256
    cache_batch_size: int = 8
    ray_address: str | None = None
    worker_threads: int | None = None
    plots: bool = True
    show_progress: bool = True


SAMPLERS: tuple[str, ...] = ("ppo", "random")


def proxy_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(height, width) * scale`` rounded to multiples of 32 (at least 32); the size itself when ``scale`` is 1."""
    if scale == 1.0:
        return int(height), int(width)
    return max(32, round(height * scale / 32) * 32), max(32, round(width * scale / 32) * 32)


def search_data_config(cfg: Config, *, proxy: bool = True) -> Any:
    """The data config of the search: ``cells.seq_len``-frame causal windows, every frame supervised, no augmentation
    (the static outputs are cached once, so there is nothing to augment per epoch); at the proxy size
    (``proxy_size``) unless ``proxy`` is False (the top-k training)."""
    h, w = proxy_size(cfg.data.height, cfg.data.width, cfg.cells.proxy_scale if proxy else 1.0)
    return dataclasses.replace(cfg.data, window=cfg.cells.seq_len, temporal="causal", supervise="all", augment=False,
                               height=h, width=w)


def deployment_size(cfg: Config) -> tuple[int, int]:
    """(H, W) at which candidates are timed: ``cells.latency_size``, else the data size."""
    size = cfg.cells.latency_size or (cfg.data.height, cfg.data.width)
    return int(size[0]), int(size[1])


def check_cells_config(cells: Any) -> None:
    """Raise ValueError naming the first bad ``cells.*`` value of the search loop (before any work)."""
    if cells.candidates < 1:
        raise ValueError(f"cells.candidates must be >= 1, got {cells.candidates}")
    if cells.meta_split not in META_SPLITS:
        raise ValueError(f"cells.meta_split={cells.meta_split!r}: valid values are {', '.join(META_SPLITS)}")
    if cells.sampler not in SAMPLERS:
        raise ValueError(f"cells.sampler={cells.sampler!r}: valid values are {', '.join(SAMPLERS)}")
    if cells.latency_weight > 0:
        raise ValueError(f"cells.latency_weight must be <= 0 (the exponent of latency / target; MnasNet uses -0.07), "
                         f"got {cells.latency_weight}")
    if cells.latency_frames < 0 or cells.latency_warmup < 0:
        raise ValueError(f"cells.latency_frames and cells.latency_warmup must be >= 0, got {cells.latency_frames} "
                         f"and {cells.latency_warmup}")
    if cells.latency_weight and not cells.latency_frames:
        raise ValueError(f"cells.latency_weight={cells.latency_weight} needs the cost measurement: "
                         "cells.latency_frames must be > 0")
    if cells.latency_target_ms is not None and not cells.latency_target_ms > 0:
        raise ValueError(f"cells.latency_target_ms must be > 0 (or null: the static network), got "
                         f"{cells.latency_target_ms}")
    if cells.latency_size is not None and min(cells.latency_size) < 32:
        raise ValueError(f"cells.latency_size must be at least 32x32, got {cells.latency_size}")
    if not 0.0 < cells.proxy_scale <= 1.0:
        raise ValueError(f"cells.proxy_scale must be in (0, 1], got {cells.proxy_scale}")
    if cells.controller_lr <= 0 or cells.entropy_weight < 0:
        raise ValueError(f"cells.controller_lr must be > 0 and cells.entropy_weight >= 0, got {cells.controller_lr} "
                         f"and {cells.entropy_weight}")
