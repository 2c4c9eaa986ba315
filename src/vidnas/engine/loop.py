"""The one epoch loop, shared by training, the ST-NAS supernet phases and the cell fine-tuning.

What every trainer here does per epoch, and does the same way so that runs resume exactly:

* ``epoch_seed(seed, epoch)``: the seed of an epoch depends only on the run seed and the epoch;
* ``epoch_loader``: a shuffling loader whose order depends only on (seed, epoch) (a ``DistributedSampler`` under
  torchrun, each rank its shard);
* ``steps_per_epoch``: items / (batch x world size), capped by ``train.max_steps_per_epoch``;
* ``run_epoch``: the step loop with its progress bar: at most ``steps`` batches, each through ``step(i, batch) ->
  logs`` (a dict with ``"loss"``), returning every step's logs.

What a step does (the loss, the optimisers, the schedule) stays with its trainer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler
from tqdm.auto import tqdm

from vidnas.engine.distributed import DistInfo

__all__ = ["epoch_seed", "epoch_loader", "steps_per_epoch", "run_epoch", "mean_loss"]

Step = Callable[[int, Any], dict[str, float]]


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``: depends only on the run seed and the epoch, so resume is exact."""
    return (seed * 1_000_003 + epoch * 7_919) % (2**31 - 1)


def epoch_loader(ds: Dataset, *, batch_size: int, seed: int, epoch: int, dist_info: DistInfo | None = None,
                 num_workers: int = 0, pin_memory: bool = False, persistent_workers: bool = False) -> DataLoader:
    """A shuffling loader whose order depends only on (``seed``, ``epoch``).

    Single process: ``RandomSampler`` with a generator seeded by ``epoch_seed(seed, epoch)``. Under torchrun:
    ``DistributedSampler(seed=seed)`` at ``set_epoch(epoch)``, each rank its shard. ``pin_memory`` and
    ``persistent_workers`` as ``vidnas.precision.loader_options`` gives them for the device.
    """
    if dist_info is not None and dist_info.enabled:
        sampler: Any = DistributedSampler(ds, shuffle=True, seed=seed, drop_last=False)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=False,
                      pin_memory=pin_memory, persistent_workers=persistent_workers and num_workers > 0)


def steps_per_epoch(items: int, batch_size: int, world_size: int = 1, cap: int | None = None) -> int:
    """``ceil(items / (batch_size * world_size))``, at most ``cap`` (when set)."""
    steps = math.ceil(items / (batch_size * world_size))
    return min(steps, cap) if cap else steps


def run_epoch(batches: Iterable[Any], step: Step, *, steps: int, desc: str, show_progress: bool = False,
              on_step: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Run ``step(i, batch)`` on at most ``steps`` batches, with a progress bar showing the loss.

    Args:
        batches: the epoch's batches (a loader).
        step: one training step; returns its logs, ``"loss"`` among them.
        steps: the cap on steps this epoch.
        desc: the progress bar's label.
        show_progress: draw the bar (rank 0 only, usually).
        on_step: called after every step with (step index, logs), e.g. to log them.

    Returns:
        Every step's logs, in order.
    """
    out: list[dict[str, float]] = []
    bar = tqdm(total=steps, desc=desc, leave=False, disable=not show_progress, dynamic_ncols=True)
    try:
        for i, batch in enumerate(batches):
            if i >= steps:
                break
            logs = step(i, batch)
            out.append(logs)
            if on_step is not None:
                on_step(i, logs)
            bar.set_postfix(loss=f"{logs['loss']:.3f}")
            bar.update(1)
    finally:
        bar.close()
    return out


def mean_loss(logs: list[dict[str, float]]) -> float:
    """Mean ``"loss"`` over an epoch's step logs (0 for an empty epoch)."""
    return sum(x["loss"] for x in logs) / max(len(logs), 1)
