"""Training and scoring one sampled cell on cached static outputs [CELLS Sec. 4.1].

A candidate cell is trained on meta-train with Adam (lr 8e-3, ``cells.cell_lr``) for ``cells.cell_epochs`` epochs of
``cells.cell_batch_size`` windows. For each window the static network's frame-0 ``dec`` seeds the recurrence and the
cell runs on frames 1..T-1 (``Cell.unroll``); the loss is the sum over those frames of the mean cross-entropy of the
logits upsampled to the label size [CELLS Sec. 4: "we sum up cross-entropy loss terms at each frame after the
first"]. The accuracy reward is the geometric mean of mIoU, fwIoU and mAcc on meta-val
(``reward.reward_from_confusion``). With a ``cost.CostMeter`` the worker then times the trained cell's steady state
against the static network at the deployment size and the candidate's reward becomes
``accuracy * (latency / target) ** w`` (``reward.latency_reward``; ``w = 0``, the paper's reward, leaves it unchanged).

Early stopping (decided here; the paper says only "apply early stopping halfway through the training if the
generated architecture is un-promising", after ref. 18). After ``floor(E / 2)`` of ``E`` epochs (E >= 2) the cell is
scored on meta-val, giving its halfway reward ``R_half``. With ``mean`` the running average of the halfway rewards of
the ``n`` candidates finished before it, the candidate stops when::

    n >= min_history  and  R_half < mean - tol / sqrt(n)

``tol`` (default 0.1, ``SearchOptions.early_stop_tolerance``) shrinks as 1 / sqrt(n), like the standard error of the
running average: early in the search the average is noisy and only clear losers stop; later the rule tightens. A
stopped candidate's reward is its halfway reward (it was measured; it is low by construction) and it takes part in the
PPO update like any other. The rule compares accuracy rewards: the latency term is known whatever the training, so it
never decides whether training goes on.
"""

from __future__ import annotations

import math
import os
import socket
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from vidnas.engine.loop import EpochResult, backward_step, fit
from vidnas.metrics import ConfusionMatrix
from vidnas.models.cells import Cell, CellGenotype
from vidnas.models.layers import resize_to
from vidnas.precision import autocast, grad_scaler
from vidnas.search.cells.cache import FeatureCache
from vidnas.search.cells.cost import CostMeter
from vidnas.search.cells.reward import latency_reward, reward_from_confusion

__all__ = [
    "EarlyStopRule",
    "CandidateJob",
    "CandidateResult",
    "InjectedFailure",
    "sequence_loss",
    "train_cell",
    "score_cell",
    "evaluate_candidate",
]


class InjectedFailure(RuntimeError):
    """Raised on purpose in a worker (``SearchOptions.inject_failure``) to exercise failure handling."""


@dataclass(frozen=True)
class EarlyStopRule:
    """Halfway early-stopping rule (formula in the module docstring).

    Attributes:
        mean: running average of the halfway rewards of the finished candidates (None: none yet).
        count: n, how many candidates that average covers.
        tolerance: tol.
        min_history: no stopping before this many candidates have finished.
    """

    mean: float | None = None
    count: int = 0
    tolerance: float = 0.1
    min_history: int = 2

    def threshold(self) -> float | None:
        """``mean - tol / sqrt(n)``, or None while the history is too short to judge."""
        if self.mean is None or self.count < max(1, self.min_history):
            return None
        return self.mean - self.tolerance / math.sqrt(self.count)

    def should_stop(self, half_reward: float) -> bool:
        thr = self.threshold()
        return thr is not None and half_reward < thr


@dataclass(frozen=True)
class CandidateJob:
    """Everything a worker needs to train and score one cell (the cached tensors are given separately).

    Attributes:
        cid: candidate id (its position in the search).
        tokens: the controller's tokens.
        ops: op vocabulary.
        aggregations: aggregation vocabulary.
        num_classes: K.
        in_channels: the five cell-input channel counts.
        ignore_index: label value never counted.
        epochs: training epochs (``cells.cell_epochs``).
        lr: Adam learning rate (``cells.cell_lr``).
        batch_size: windows per step (``cells.cell_batch_size``).
        seed: seeds the cell's initialisation and the batch order.
        early_stop: the rule, None = never stop early.
        max_steps_per_epoch: cap on steps per epoch (quick runs), None = all.
        inject_failure: an op or aggregation name; a cell that uses it raises ``InjectedFailure`` (testing aid).
        device: where the cell trains (``train.device``; the cache stays on the CPU).
        latency_weight: w of the latency-aware reward (``cells.latency_weight``; 0 = accuracy only).
        latency_target_ms: T; None = the static network's frame, measured beside the cell.
        amp: mixed precision of the cell's training (``train.amp``: none | bf16 | fp16); scoring stays float32.
    """

    cid: int
    tokens: tuple[int, ...]
    ops: tuple[str, ...]
    aggregations: tuple[str, ...]
    num_classes: int
    in_channels: tuple[int, ...]
    ignore_index: int = 255
    epochs: int = 20
    lr: float = 8e-3
    batch_size: int = 48
    seed: int = 0
    early_stop: EarlyStopRule | None = None
    max_steps_per_epoch: int | None = None
    inject_failure: str | None = None
    device: str = "cpu"
    latency_weight: float = 0.0
    latency_target_ms: float | None = None
    amp: str = "none"

    def genotype(self) -> CellGenotype:
        return CellGenotype.from_tokens(list(self.tokens), ops=self.ops, aggregations=self.aggregations,
                                        name=f"candidate{self.cid}")


@dataclass
class CandidateResult:
    """Outcome of one candidate; ``to_record()`` is its line in the search log.

    A failed candidate (any exception in the worker, or a crashed worker) has ``failed=True``, ``reward=None`` and
    the error text; the search excludes it from the PPO update and from the baseline. ``reward`` is what the
    controller learns from (latency-aware when ``latency_weight`` is not 0), ``accuracy_reward`` the geometric mean
    of the scores alone, ``cost`` the ``CostMeter`` record (empty without a meter).
    """

    cid: int
    tokens: list[int]
    reward: float | None = None
    accuracy_reward: float | None = None
    cost: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    half_reward: float | None = None
    early_stopped: bool = False
    epochs_run: int = 0
    seconds: float = 0.0
    params: int = 0
    failed: bool = False
    error: str | None = None
    worker: str = ""

    @classmethod
    def failure(cls, job: CandidateJob, error: str, seconds: float = 0.0, worker: str = "") -> CandidateResult:
        return cls(cid=job.cid, tokens=list(job.tokens), failed=True, error=error, seconds=seconds, worker=worker)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


def sequence_loss(preds: list[torch.Tensor], masks: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Sum over frames of the mean cross-entropy of upsampled logits.

    Args:
        preds: T-1 logits (B, K, h8, w8), frames 1..T-1.
        masks: (B, T-1, H, W) int64.
        ignore_index: label value not counted.

    Returns:
        Scalar ``sum_t CE_t``; a frame without supervised pixels adds 0 (not NaN).
    """
    total = preds[0].new_zeros(())
    for t, pred in enumerate(preds):
        target = masks[:, t]  # (B, H, W)
        logits = resize_to(pred, target.shape[-2:])  # (B, K, H, W)
        n = (target != ignore_index).sum().clamp(min=1)
        total = total + F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum") / n
    return total


def _to(batch: dict[str, torch.Tensor], cell: Cell) -> dict[str, torch.Tensor]:
    """Move a cached batch to the cell's device (the cache lives on the CPU)."""
    device = next(cell.parameters()).device
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _forward(cell: Cell, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    preds, _ = cell.unroll(batch["dec0"], batch["layer4"], batch["layer2"], batch["layer3"])
    return preds


@torch.inference_mode()
def score_cell(cell: Cell, cache: FeatureCache, *, batch_size: int = 16) -> tuple[float, dict[str, float]]:
    """Reward and scores of ``cell`` on every supervised pixel of frames 1..T-1 of ``cache`` (eval mode)."""
    was = cell.training
    cell.eval()
    cm = ConfusionMatrix(cache.info.num_classes, ignore_index=cache.info.ignore_index)
    for batch in cache.batches(batch_size):
        batch = _to(batch, cell)
        for t, pred in enumerate(_forward(cell, batch)):
            target = batch["masks"][:, t]
            cm.update(resize_to(pred, target.shape[-2:]).argmax(1), target)
    cell.train(was)
    return reward_from_confusion(cm)


def train_cell(cell: Cell, train_cache: FeatureCache, val_cache: FeatureCache | None, *, epochs: int, lr: float,
               batch_size: int, seed: int = 0, early_stop: EarlyStopRule | None = None,
               max_steps_per_epoch: int | None = None, params: list[dict[str, Any]] | None = None,
               amp: str = "none") -> dict[str, Any]:
    """Train a cell on cached outputs with Adam; score it on ``val_cache`` at the end (and halfway for early stop).

    Args:
        cell: the cell (trained in place).
        train_cache: meta-train (or the whole train split after the search).
        val_cache: where the reward is measured; None = no scoring.
        epochs: E.
        lr: Adam learning rate.
        batch_size: windows per step.
        seed: batch order.
        early_stop: halfway rule, None = never stop.
        max_steps_per_epoch: cap on steps per epoch.
        params: optimiser parameter groups (default: all of the cell at ``lr``).
        amp: mixed precision of the forward pass and loss (``vidnas.precision``: none | bf16 | fp16, fp16 with loss
            scaling); the weights and Adam's state stay float32.

    Returns:
        ``{"reward", "metrics", "half_reward", "early_stopped", "epochs_run", "losses"}``.
    """
    if epochs < 1:
        raise ValueError(f"cells.cell_epochs must be >= 1, got {epochs}")
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(params if params is not None else cell.parameters(), lr=lr)
    device = next(cell.parameters()).device
    scaler = grad_scaler(device, amp)
    ignore = train_cache.info.ignore_index
    half = epochs // 2 if epochs >= 2 else None
    out: dict[str, Any] = {"reward": None, "metrics": {}, "half_reward": None, "early_stopped": False,
                           "epochs_run": 0, "losses": []}

    def step(epoch: int, i: int, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        batch = _to(batch, cell)
        with autocast(device, amp):
            preds = _forward(cell, batch)
        loss = sequence_loss([p.float() for p in preds], batch["masks"], ignore)
        backward_step(loss, opt, scaler)
        return {"loss": loss.item()}

    def halfway(epoch: int) -> dict[str, float]:
        if val_cache is None or half is None or epoch + 1 != half:
            return {}
        return score_cell(cell, val_cache, batch_size=batch_size)[1]  # its "reward" is the halfway reward

    def end(res: EpochResult) -> bool:
        out["losses"].append(res.loss)
        out["epochs_run"] = res.epoch + 1
        if not res.val:
            return False
        out["half_reward"] = res.val["reward"]
        if early_stop is not None and early_stop.should_stop(out["half_reward"]):
            out["reward"], out["metrics"] = out["half_reward"], res.val
            out["early_stopped"] = True
        return out["early_stopped"]

    steps = train_cache.num_batches(batch_size)
    fit(step, lambda epoch: train_cache.batches(batch_size, shuffle=True, generator=gen), epochs=epochs,
        steps=min(steps, max_steps_per_epoch) if max_steps_per_epoch is not None else steps, desc="cell",
        begin=lambda epoch: cell.train(), validate=halfway, end=end)
    if out["early_stopped"]:
        return out
    if val_cache is not None:
        out["reward"], out["metrics"] = score_cell(cell, val_cache, batch_size=batch_size)
        if out["half_reward"] is None:  # E = 1: there is no halfway point; the final score stands in for it
            out["half_reward"] = out["reward"]
    return out


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def evaluate_candidate(job: CandidateJob, train_cache: FeatureCache, val_cache: FeatureCache,
                  meter: CostMeter | None = None) -> CandidateResult:
    """Build, train and score the cell of ``job``, then measure its cost with ``meter`` (if given) and apply the
    latency term; never raises: an exception becomes a failed result.

    Deterministic for a given job up to the measured latency: the cell is initialised from
    ``torch.manual_seed(job.seed)`` and batches are drawn from a generator seeded with it.
    """
    t0 = time.perf_counter()
    try:
        if job.latency_weight and meter is None:
            raise ValueError("a latency-aware reward needs a cost meter (cells.latency_frames > 0)")
        geno = job.genotype()
        if job.inject_failure is not None:
            used = {op for layer in geno.layers for op in layer.ops} | {layer.aggregation for layer in geno.layers}
            if job.inject_failure in used:
                raise InjectedFailure(f"injected failure: candidate {job.cid} uses {job.inject_failure!r}")
        torch.manual_seed(job.seed)
        cell = Cell(geno, in_channels=job.in_channels, num_classes=job.num_classes).to(job.device)
        res = train_cell(cell, train_cache, val_cache, epochs=job.epochs, lr=job.lr, batch_size=job.batch_size,
                         seed=job.seed, early_stop=job.early_stop, max_steps_per_epoch=job.max_steps_per_epoch,
                         amp=job.amp)
        cost = meter.measure(cell) if meter is not None else {}
        if job.latency_target_ms is None:  # target: the static network's frame, timed round by round beside it
            reward = latency_reward(res["reward"], cost.get("latency_ratio"), 1.0, job.latency_weight)
        else:
            reward = latency_reward(res["reward"], cost.get("latency_ms"), job.latency_target_ms, job.latency_weight)
        return CandidateResult(
            cid=job.cid, tokens=list(job.tokens), reward=reward, accuracy_reward=res["reward"], cost=cost,
            metrics=res["metrics"],
            half_reward=res["half_reward"], early_stopped=res["early_stopped"], epochs_run=res["epochs_run"],
            seconds=time.perf_counter() - t0, params=sum(p.numel() for p in cell.parameters()),
            worker=_worker_name(),
        )
    except Exception as e:  # a candidate must never stop the search: record it and go on
        text = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"
        return CandidateResult.failure(job, text, time.perf_counter() - t0, _worker_name())
