"""The one training loop, shared by training, the ST-NAS supernet phases, the cell fine-tuning and the cell training.

What every trainer here does, and does the same way so that runs resume exactly:

* ``epoch_seed(seed, epoch)``: the seed of an epoch depends only on the run seed and the epoch;
* ``epoch_loader``: a shuffling loader whose order depends only on (seed, epoch) (a ``DistributedSampler`` under
  torchrun, each rank its shard);
* ``steps_per_epoch``: items / (batch x world size), capped by ``train.max_steps_per_epoch``;
* ``fit``: the outer loop over epochs ``start_epoch .. epochs - 1``: re-seed, ``begin(epoch)``, the epoch's steps,
  the BatchNorm statistics of rank 0 (under torchrun), ``validate(epoch)``, ``end(EpochResult)`` (log, checkpoint,
  early stop), a barrier;
* ``run_epoch``: the step loop with its progress bar: at most ``steps`` batches, each through ``step(i, batch) ->
  logs`` (a dict with ``"loss"``), returning every step's logs;
* ``backward_step``: one optimiser step on a loss (one or several optimisers), with or without fp16 loss scaling,
  with optional gradient clipping: the AMP backward and step, written once.

What a step computes (the forward pass, the loss, the schedule) stays with its trainer.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler
from tqdm.auto import tqdm

from vidnas.engine.distributed import DistInfo, barrier, sync_buffers
from vidnas.utils import seed_everything

__all__ = [
    "epoch_seed",
    "epoch_loader",
    "steps_per_epoch",
    "EpochResult",
    "fit",
    "run_epoch",
    "backward_step",
    "mean_loss",
]

Step = Callable[[int, Any], dict[str, float]]
EpochStep = Callable[[int, int, Any], dict[str, float]]


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


_END = object()


def run_epoch(batches: Iterable[Any], step: Step, *, steps: int, desc: str, show_progress: bool = False,
              on_step: Callable[[int, dict[str, float]], None] | None = None,
              waits: list[float] | None = None) -> list[dict[str, float]]:
    """Run ``step(i, batch)`` on at most ``steps`` batches, with a progress bar showing the loss.

    Args:
        batches: the epoch's batches (a loader).
        step: one training step; returns its logs, ``"loss"`` among them.
        steps: the cap on steps this epoch.
        desc: the progress bar's label.
        show_progress: draw the bar (rank 0 only, usually).
        on_step: called after every step with (step index, logs), e.g. to log them.
        waits: when given, the seconds spent waiting for each batch (the loader's ``iter`` and ``next``: decoding,
            augmentation, collation, or waiting on loader workers) are appended to it.

    Returns:
        Every step's logs, in order.
    """
    out: list[dict[str, float]] = []
    bar = tqdm(total=steps, desc=desc, leave=False, disable=not show_progress, dynamic_ncols=True)
    try:
        t0 = time.perf_counter()
        it = iter(batches)
        for i in itertools.count():
            batch = next(it, _END)  # as enumerate(batches): the batch after the last step is fetched, then dropped
            if batch is _END or i >= steps:
                break
            if waits is not None:
                waits.append(time.perf_counter() - t0)
            logs = step(i, batch)
            out.append(logs)
            if on_step is not None:
                on_step(i, logs)
            bar.set_postfix(loss=f"{logs['loss']:.3f}")
            bar.update(1)
            t0 = time.perf_counter()
    finally:
        bar.close()
    return out


def mean_loss(logs: list[dict[str, float]]) -> float:
    """Mean ``"loss"`` over an epoch's step logs (0 for an empty epoch)."""
    return sum(x["loss"] for x in logs) / max(len(logs), 1)


@dataclass
class EpochResult:
    """One epoch of ``fit``.

    Attributes:
        epoch: its index (0-based).
        logs: every step's logs, in order (``"loss"`` among them).
        val: what ``validate(epoch)`` returned (empty without validation, or when it skipped this epoch).
        seconds: wall time of the epoch's seeding, ``begin``, steps and buffer sync (not validation).
        data_seconds: the part of ``seconds`` spent waiting for batches (``run_epoch``'s ``waits``): the loader's
            share of a step is ``data_seconds / seconds``.
    """

    epoch: int
    logs: list[dict[str, float]]
    val: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    data_seconds: float = 0.0

    @property
    def loss(self) -> float:
        """The mean step loss of the epoch (``mean_loss``)."""
        return mean_loss(self.logs)


def fit(step: EpochStep, batches: Callable[[int], Iterable[Any]], *, epochs: int, steps: int, start_epoch: int = 0,
        seed: int | None = None, desc: str = "epoch", begin: Callable[[int], None] | None = None,
        validate: Callable[[int], dict[str, float]] | None = None,
        end: Callable[[EpochResult], bool | None] | None = None, model: torch.nn.Module | None = None,
        dist_info: DistInfo | None = None, show_progress: bool = False) -> list[EpochResult]:
    """The outer training loop: epochs ``start_epoch .. epochs - 1``, each in this order:

    1. ``seed_everything(epoch_seed(seed, epoch))`` when ``seed`` is given (python, numpy, torch: a resumed run
       draws what the uninterrupted one would);
    2. ``begin(epoch)``: e.g. ``dataset.set_epoch``, ``model.train()``, freezing or thawing weights;
    3. ``run_epoch`` over ``batches(epoch)``: at most ``steps`` calls ``step(epoch, i, batch) -> logs``, with a
       progress bar ``"{desc} {epoch + 1}/{epochs}"`` (rank 0 only under torchrun);
    4. under torchrun (``dist_info`` enabled): ``sync_buffers(model)``, every rank takes rank 0's buffers (BatchNorm
       statistics) before validation and checkpointing;
    5. ``validate(epoch) -> metrics`` (an empty dict on epochs it skips);
    6. ``end(EpochResult)``: log, checkpoint (resume starts at the epoch after the last checkpoint: pass it as
       ``start_epoch``), early stop: a true return ends the loop after this epoch;
    7. ``barrier()`` under torchrun (rank 0 may be writing the checkpoint).

    Args:
        step: one training step of epoch ``epoch``, batch ``i`` (``backward_step`` inside); returns its logs.
        batches: the batches of an epoch, e.g. ``lambda e: epoch_loader(ds, ..., seed=seed, epoch=e)``.
        epochs: the total number of epochs (the loop ends before epoch ``epochs``).
        steps: the cap on steps per epoch (``steps_per_epoch``).
        start_epoch: the first epoch to run (a resumed run's).
        seed: the run seed of the per-epoch re-seeding; None leaves the global generators alone.
        desc: the progress bar's label.
        begin: called at the start of every epoch, after seeding.
        validate: called after the steps (and the buffer sync).
        end: called last in every epoch; returns True to stop early.
        model: the model whose buffers are synchronised (needed with ``dist_info``).
        dist_info: the process group (None: a single process).
        show_progress: draw the step bar (on rank 0).

    Returns:
        The epochs run, in order.
    """
    distributed = dist_info is not None and dist_info.enabled
    if distributed and model is None:
        raise ValueError("fit under torchrun needs the model whose buffers it synchronises")
    main = dist_info is None or dist_info.is_main
    synced = model if distributed else None
    out: list[EpochResult] = []
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        if seed is not None:
            seed_everything(epoch_seed(seed, epoch))
        if begin is not None:
            begin(epoch)
        waits: list[float] = []
        logs = run_epoch(batches(epoch), lambda i, batch, epoch=epoch: step(epoch, i, batch), steps=steps,
                         desc=f"{desc} {epoch + 1}/{epochs}", show_progress=show_progress and main, waits=waits)
        if synced is not None and dist_info is not None:
            sync_buffers(synced, dist_info)  # BN statistics: rank 0's on every rank
        result = EpochResult(epoch, logs, seconds=time.perf_counter() - t0, data_seconds=sum(waits))
        if validate is not None:
            result.val = validate(epoch)
        out.append(result)
        stop = bool(end(result)) if end is not None else False
        if distributed:
            barrier()
        if stop:
            break
    return out


def backward_step(loss: torch.Tensor, optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
                  scaler: torch.amp.GradScaler | None = None, *, clip: float | None = None,
                  before_step: Callable[[], None] | None = None) -> torch.Tensor | None:
    """One optimiser step on ``loss``: the backward pass and the update of every trainer, written once.

    In order: ``zero_grad`` of every optimiser; ``backward`` of ``loss``, multiplied by the loss scale when
    ``scaler`` is an enabled ``GradScaler`` (fp16, ``vidnas.precision.grad_scaler``); when ``clip`` or
    ``before_step`` needs the true gradients, ``scaler.unscale_`` of every optimiser; with ``clip``, the global L2
    norm of the optimisers' gradients clipped: ``g <- g * min(1, clip / ||g||_2)``; ``before_step()``; the step of
    every optimiser in the given order (under fp16 skipped when a gradient is inf or NaN); ``scaler.update()``.

    Args:
        loss: the scalar loss of the step.
        optimizers: one optimiser or several over disjoint parameters (all stepped on the same gradients).
        scaler: a ``GradScaler``; None or a disabled one gives the plain float32 step.
        clip: the maximum global gradient norm; None = no clipping.
        before_step: called after the backward pass (and unscaling) and before any optimiser step, e.g. to read
            gradients.

    Returns:
        The global gradient norm before clipping (a scalar tensor) with ``clip``, else None.
    """
    opts = [optimizers] if isinstance(optimizers, torch.optim.Optimizer) else list(optimizers)
    if scaler is not None and not scaler.is_enabled():
        scaler = None  # a disabled scaler passes everything through: the plain step
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None and (clip is not None or before_step is not None):
        for opt in opts:
            scaler.unscale_(opt)
    norm = None
    if clip is not None:
        norm = torch.nn.utils.clip_grad_norm_([p for opt in opts for g in opt.param_groups for p in g["params"]],
                                              clip)
    if before_step is not None:
        before_step()
    for opt in opts:
        if scaler is not None:
            scaler.step(opt)  # unscales first (unless done above); skips the step on inf/NaN gradients
        else:
            opt.step()
    if scaler is not None:
        scaler.update()
    return norm
