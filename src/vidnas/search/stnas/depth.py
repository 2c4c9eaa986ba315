"""The depth decision after the encoder supernet's epochs: the paper's shrink rule or the truncated-loss rule, a
latency budget, and where lambda matters (flip lambdas, the lambda path).

Two rules (``StnasConfig.depth_rule``):

* ``"paper"`` [ST-NAS Sec. 3.2]: per stage, drop trailing blocks while ``alpha_i < threshold`` (``shrink_depth``).
  With the alphas initialised at the threshold (1) and Adam moving each alpha by about ``arch_lr`` per step whatever
  the gradient's size, a block goes exactly when the mean of its gradient ``g_i + lambda * s_i`` is positive
  (``g_i = dL_task/d alpha_i``): a sign test. Its **flip lambda** is therefore ``-E[g_i] / s_i``: below it the block
  stays, above it the block goes (a negative value: it goes at any lambda). ``flip_lambdas`` computes it from the
  task-only gradients the search logs.
* ``"truncated"`` (default of user presets): after the supernet epochs, the validation loss of the supernet with one
  stage truncated at every depth is measured (``truncated_losses``) and the depths minimising
  ``L(depths) + lambda * T(depths)`` are chosen (``choose_depths``), or, in budget mode, the most accurate depths whose
  table latency fits the budget.

The truncated-loss model (all losses: mean cross-entropy over the same fixed validation batches, the supernet in eval
mode)::

    L_s(d)     loss with the alphas of blocks d+1 .. N_s of stage s set to 0, every other stage full. By Eq. 1 a zero
               alpha removes block i's term from the stage output and feeds block i+1 a zero input whose output is
               weighted by 0 as well: the stage computes exactly the weighted sum of its first d blocks.
    L_full     loss of the full supernet (= L_s(N_s) for every s).
    L(depths)  = L_full + sum_s (L_s(d_s) - L_full)          (stages assumed to act independently)
    T(depths)  = T_fixed + sum_s sum_{i <= d_s} s_{s,i}       (block latencies and the rest from the latency table)

BatchNorm statistics are recalibrated on training batches before each truncated loss (a truncated stage changes the
statistics every later BatchNorm sees) and restored afterwards. ``lambda`` has the unit of Eq. 2 (loss per ms): with
every alpha at 1 the Eq. 2 penalty is ``lambda * T`` too.

Ties are broken towards the lower latency, then the lexicographically smaller depths, so the chosen latency never
rises as lambda rises (for lambda_1 < lambda_2 with choices x_1, x_2: adding the two optimality inequalities gives
``(lambda_1 - lambda_2) (T(x_1) - T(x_2)) <= 0``). ``lambda_path`` lists every choice along lambda in [0, inf)
with the lambda at which it starts.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vidnas.search.stnas.derive import recalibrate_batchnorm

__all__ = [
    "DEPTH_RULES",
    "MAX_COMBINATIONS",
    "BudgetError",
    "DepthChoice",
    "DepthDecision",
    "depth_combinations",
    "combined_loss",
    "depth_latency",
    "min_latency",
    "choose_depths",
    "lambda_path",
    "flip_lambdas",
    "truncated_losses",
]

logger = logging.getLogger(__name__)

DEPTH_RULES: tuple[str, ...] = ("truncated", "paper")
MAX_COMBINATIONS = 1_000_000  # exhaustive search over depth combinations up to this many (Swin-B: 144)


class BudgetError(ValueError):
    """No depth combination fits the latency budget; the message names the budget and the smallest latency."""


@dataclass(frozen=True)
class DepthChoice:
    """One depth combination with its predicted loss and table latency."""

    depths: tuple[int, ...]
    loss: float
    latency_ms: float


@dataclass
class DepthDecision:
    """How the depths of a search were decided (stored as ``depth`` in the search record of ``arch.json``).

    Attributes:
        rule: ``"paper"`` or ``"truncated"``.
        depths: the chosen blocks per stage.
        lam: lambda of the choice (truncated rule, lambda mode; the paper rule's training lambda).
        budget_ms: the latency budget (budget mode), else None.
        full_depths: blocks per stage of the full encoder.
        losses: ``L_s(d)`` per stage, for ``d = 1 .. N_s`` (truncated rule).
        full_loss: ``L_full``.
        loss: predicted ``L(depths)`` of the choice.
        latency_ms: table latency of the choice (``fixed_ms`` + its blocks).
        fixed_ms: the latency that does not depend on the depths (0 when the table has no parts: block latency only).
        block_latencies: s_i per stage, per block (ms).
        decoder_ms: the decoder part of ``fixed_ms`` used for the budget (None without a budget).
        task_grad_mean: ``E[g_i]`` per stage, per block: the mean task-only gradient of every alpha over the arch steps.
        flip_lambda: ``-E[g_i] / s_i`` per block (paper rule's flip point; see the module docstring).
        path: ``lambda_path`` of the truncated rule.
        val_batches: validation batches behind every loss.
        decided_on: the clips the truncated losses were measured on: ``{"split": S}`` (the validation split, or the
            train split when it has no annotated frame), or ``{"split": S, "videos": [...]}`` for a selection split
            (``data.selection_videos``, held out of the search's training data).
    """

    rule: str
    depths: tuple[int, ...]
    lam: float | None = None
    budget_ms: float | None = None
    full_depths: tuple[int, ...] = ()
    losses: list[list[float]] | None = None
    full_loss: float | None = None
    loss: float | None = None
    latency_ms: float | None = None
    fixed_ms: float = 0.0
    block_latencies: list[list[float]] = field(default_factory=list)
    decoder_ms: float | None = None
    task_grad_mean: list[list[float]] | None = None
    flip_lambda: list[list[float | None]] | None = None
    path: list[dict[str, Any]] | None = None
    val_batches: int | None = None
    decided_on: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (infinite values become None)."""
        out: dict[str, Any] = {
            "rule": self.rule,
            "depths": list(self.depths),
            "lambda": self.lam,
            "budget_ms": self.budget_ms,
            "full_depths": list(self.full_depths),
            "losses": self.losses,
            "full_loss": self.full_loss,
            "loss": self.loss,
            "latency_ms": self.latency_ms,
            "fixed_ms": self.fixed_ms,
            "block_latencies": self.block_latencies,
            "decoder_ms": self.decoder_ms,
            "task_grad_mean": self.task_grad_mean,
            "flip_lambda": self.flip_lambda,
            "path": self.path,
            "val_batches": self.val_batches,
            "decided_on": self.decided_on,
        }
        return _finite(out)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DepthDecision:
        """Inverse of ``to_dict``."""
        return cls(
            rule=str(d["rule"]),
            depths=tuple(int(x) for x in d["depths"]),
            lam=d.get("lambda"),
            budget_ms=d.get("budget_ms"),
            full_depths=tuple(int(x) for x in d.get("full_depths") or ()),
            losses=d.get("losses"),
            full_loss=d.get("full_loss"),
            loss=d.get("loss"),
            latency_ms=d.get("latency_ms"),
            fixed_ms=float(d.get("fixed_ms") or 0.0),
            block_latencies=d.get("block_latencies") or [],
            decoder_ms=d.get("decoder_ms"),
            task_grad_mean=d.get("task_grad_mean"),
            flip_lambda=d.get("flip_lambda"),
            path=d.get("path"),
            val_batches=d.get("val_batches"),
            decided_on=d.get("decided_on"),
        )


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


# ------------------------------------------------------------------------------------------------ pure decisions


def depth_combinations(full_depths: Sequence[int], *, min_blocks: int = 1) -> Iterable[tuple[int, ...]]:
    """Every combination of per-stage depths ``min(min_blocks, N_s) .. N_s`` (stage 1 slowest-varying).

    Raises:
        ValueError: more than ``MAX_COMBINATIONS`` combinations.
    """
    ranges = [range(min(max(min_blocks, 0), n), n + 1) for n in full_depths]
    count = math.prod(len(r) for r in ranges)
    if count > MAX_COMBINATIONS:
        raise ValueError(f"{count} depth combinations for depths {list(full_depths)}: more than {MAX_COMBINATIONS}")
    return itertools.product(*ranges)


def combined_loss(losses: Sequence[Sequence[float]], full_loss: float, depths: Sequence[int]) -> float:
    """``L(depths) = L_full + sum_s (L_s(d_s) - L_full)``; ``losses[s][d - 1] = L_s(d)``; a stage without blocks
    (``d = 0``, no losses) adds nothing."""
    total = float(full_loss)
    for row, d in zip(losses, depths, strict=True):
        if d > 0:
            total += float(row[d - 1]) - float(full_loss)
    return total


def depth_latency(block_latencies: Sequence[Sequence[float]], depths: Sequence[int], fixed_ms: float = 0.0) -> float:
    """``T(depths) = fixed_ms + sum_s sum_{i <= d_s} s_{s,i}`` (ms)."""
    return float(fixed_ms) + sum(float(sum(row[:d])) for row, d in zip(block_latencies, depths, strict=True))


def min_latency(block_latencies: Sequence[Sequence[float]], fixed_ms: float = 0.0, *, min_blocks: int = 1) -> float:
    """The smallest ``T(depths)``: every stage keeps ``min_blocks`` blocks (its first ones)."""
    return depth_latency(block_latencies, [min(min_blocks, len(row)) for row in block_latencies], fixed_ms)


def _candidates(losses: Sequence[Sequence[float]], full_loss: float, block_latencies: Sequence[Sequence[float]],
                fixed_ms: float, min_blocks: int) -> list[DepthChoice]:
    full = [len(row) for row in block_latencies]
    if [len(row) for row in losses] != full:
        raise ValueError(f"losses per stage {[len(r) for r in losses]} do not match the blocks per stage {full}")
    return [DepthChoice(tuple(d), combined_loss(losses, full_loss, d), depth_latency(block_latencies, d, fixed_ms))
            for d in depth_combinations(full, min_blocks=min_blocks)]


def _key(c: DepthChoice, objective: float) -> tuple[float, float, tuple[int, ...]]:
    return (objective, c.latency_ms, c.depths)


def choose_depths(
    losses: Sequence[Sequence[float]],
    full_loss: float,
    block_latencies: Sequence[Sequence[float]],
    *,
    lam: float | None = None,
    budget_ms: float | None = None,
    fixed_ms: float = 0.0,
    min_blocks: int = 1,
) -> DepthChoice:
    """The truncated rule's choice (module docstring), exhaustively over every depth combination.

    Lambda mode (``lam``): ``argmin L(depths) + lam * T(depths)``. Budget mode (``budget_ms``): ``argmin L(depths)``
    over the combinations with ``T(depths) <= budget_ms``. Ties: lower latency, then smaller depths.

    Args:
        losses: ``losses[s][d - 1] = L_s(d)``.
        full_loss: ``L_full``.
        block_latencies: s_i per stage, per block (ms).
        lam: lambda (loss per ms), >= 0.
        budget_ms: latency budget (ms) of the whole model, ``fixed_ms`` included.
        fixed_ms: latency that does not depend on the depths.
        min_blocks: blocks every stage keeps at least.

    Raises:
        ValueError: neither or both of ``lam`` and ``budget_ms``, or a negative lambda.
        BudgetError: no combination fits the budget (the message gives the smallest latency).
    """
    if (lam is None) == (budget_ms is None):
        raise ValueError("give exactly one of lam and budget_ms")
    cands = _candidates(losses, full_loss, block_latencies, fixed_ms, min_blocks)
    if lam is not None:
        if lam < 0:
            raise ValueError(f"lambda must be >= 0, got {lam}")
        return min(cands, key=lambda c: _key(c, c.loss + lam * c.latency_ms))
    assert budget_ms is not None
    fits = [c for c in cands if c.latency_ms <= budget_ms + 1e-9]
    if not fits:
        lowest = min(c.latency_ms for c in cands)
        raise BudgetError(f"no depth combination fits the latency budget {budget_ms:g} ms: the smallest table latency "
                          f"is {lowest:.3f} ms (every stage at its first block, decoder and fixed parts included)")
    return min(fits, key=lambda c: _key(c, c.loss))


def lambda_path(
    losses: Sequence[Sequence[float]],
    full_loss: float,
    block_latencies: Sequence[Sequence[float]],
    *,
    fixed_ms: float = 0.0,
    min_blocks: int = 1,
) -> list[dict[str, Any]]:
    """Every choice of ``choose_depths`` in lambda mode as lambda rises from 0, with the lambda where it starts.

    Returns:
        ``[{"lambda_from": l_k, "depths": [...], "loss": L, "latency_ms": T}, ...]``: the choice for every lambda in
        ``[l_k, l_{k+1})`` (the last one up to infinity); ``l_0 = 0`` and latencies strictly decrease.
    """
    cands = _candidates(losses, full_loss, block_latencies, fixed_ms, min_blocks)
    cur = min(cands, key=lambda c: _key(c, c.loss))
    start = 0.0
    path = [{"lambda_from": start, "depths": list(cur.depths), "loss": cur.loss, "latency_ms": cur.latency_ms}]
    while True:
        cheaper = [c for c in cands if c.latency_ms < cur.latency_ms - 1e-12]
        if not cheaper:
            return path
        # lambda at which q overtakes cur: L_q + l T_q = L_cur + l T_cur
        best = min(cheaper, key=lambda q: ((q.loss - cur.loss) / (cur.latency_ms - q.latency_ms), q.latency_ms,
                                           q.depths))
        start = max(start, (best.loss - cur.loss) / (cur.latency_ms - best.latency_ms))
        cur = best
        path.append({"lambda_from": start, "depths": list(cur.depths), "loss": cur.loss,
                     "latency_ms": cur.latency_ms})


def flip_lambdas(grad_means: Sequence[Sequence[float]], block_latencies: Sequence[Sequence[float]]
                 ) -> list[list[float]]:
    """The paper rule's flip lambda of every block: ``-E[g_i] / s_i`` (``inf`` where ``s_i`` is 0).

    A block whose mean task gradient is positive (the task alone pushes its alpha down) gets a negative value: the
    shrink rule removes it at any lambda. See the module docstring.
    """
    return [[(-float(g) / float(s)) if s > 0 else math.inf for g, s in zip(gs, ss, strict=True)]
            for gs, ss in zip(grad_means, block_latencies, strict=True)]


# ------------------------------------------------------------------------------------------------ measurement


@torch.no_grad()
def truncated_losses(
    supernet: Any,
    loss_of: Callable[[Any], torch.Tensor],
    val_batches: Sequence[Any],
    *,
    model: nn.Module,
    calib_batches: Sequence[Any] = (),
    calib_forward: Callable[[Any], Any] | None = None,
) -> tuple[float, list[list[float]]]:
    """Measure ``L_full`` and ``L_s(d)`` for every stage ``s`` and depth ``d = 1 .. N_s`` (module docstring).

    The alphas, BatchNorm statistics and train / eval mode of ``model`` are restored afterwards.

    Args:
        supernet: the ``DepthSupernet`` (its ``stages[s].alpha``).
        loss_of: ``batch -> scalar loss`` of ``model`` on one validation batch (called in eval mode, no grad).
        val_batches: the fixed validation batches; every loss is the mean over them.
        model: the model holding the supernet (put in eval mode; its BatchNorm layers are recalibrated).
        calib_batches: training batches for the BatchNorm recalibration before each loss (none: no recalibration).
        calib_forward: ``batch -> anything``: the forward pass used for the recalibration.

    Returns:
        ``(L_full, losses)`` with ``losses[s][d - 1] = L_s(d)`` (an empty list for a stage without blocks).
    """
    if not val_batches:
        raise ValueError("the truncated-loss rule needs at least one validation batch")
    was_training = model.training
    saved_alphas = [None if st.alpha is None else st.alpha.detach().clone() for st in supernet.stages]

    def measure() -> float:
        if calib_batches and calib_forward is not None:
            recalibrate_batchnorm(model, calib_batches, calib_forward)
        model.eval()
        return float(sum(float(loss_of(b)) for b in val_batches) / len(val_batches))

    bn_state = _bn_state(model)
    try:
        full = measure()
        _load_bn_state(model, bn_state)
        losses: list[list[float]] = []
        for s, stage in enumerate(supernet.stages):
            row: list[float] = []
            n = stage.num_blocks
            for d in range(1, n + 1):
                if d == n:
                    row.append(full)
                    continue
                stage.alpha.data.copy_(saved_alphas[s])
                stage.alpha.data[d:] = 0.0
                row.append(measure())
                _load_bn_state(model, bn_state)
            if stage.alpha is not None:
                stage.alpha.data.copy_(saved_alphas[s])
            losses.append(row)
            logger.info("truncated losses, stage %d: %s (full %.4f)", s, [round(v, 4) for v in row], full)
    finally:
        for st, a in zip(supernet.stages, saved_alphas, strict=True):
            if a is not None:
                st.alpha.data.copy_(a)
        _load_bn_state(model, bn_state)
        model.train(was_training)
    return full, losses


def _bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def _load_bn_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    current = model.state_dict()
    with torch.no_grad():
        for k, v in state.items():
            current[k].copy_(v)
