"""One step of supernet training [ST-NAS Sec. 3.2, 3.3], its schedules, its optimiser and the gradient rules of the two
searches: the encoder search's loss (Eq. 2, ``encoder_search_loss``) with the task-only alpha gradients it logs
(``task_alpha_grads``), and the decoder search's loss (``decoder_search_loss``: the task loss, plus lambda times the
expected op latency with ``stnas.decoder_latency``).

Training schedules of a supernet (``StnasConfig.mode``):

* ``"joint"`` (the paper's default, single-level): each step computes the loss on one batch and updates network
  weights and architecture weights together (one ``backward_step`` of both optimisers: one backward, a
  weight-optimiser step and an arch-optimiser step on the same gradients).
* ``"alternating"`` (option, first-order DARTS): a weight step on batch A (from one half of the training data), then
  an architecture step on batch B (from the other half); each step recomputes the loss with the current weights.

Warm-up: during the first ``warmup_epochs`` epochs the architecture weights are frozen (``arch_warmup``), because a
supernet whose ops are still untrained drifts to ``identity`` (SPEC "Decoder supernet").

Arch-weight gradients are clipped to a global norm of ``ARCH_GRAD_CLIP`` before each Adam step (``ClippedAdam``):
with a large lambda the penalty gradient ``lambda * s_i`` can swamp the task gradient for a few steps and the alphas
oscillate around the threshold; clipping bounds how much one step can move them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vidnas.engine.loop import backward_step
from vidnas.search.stnas.decoder_supernet import DecoderSupernet
from vidnas.search.stnas.supernet import DepthSupernet, arch_parameters, set_arch_trainable

__all__ = [
    "SEARCH_MODES",
    "ARCH_GRAD_CLIP",
    "ARCH_BETAS",
    "ClippedAdam",
    "encoder_search_loss",
    "task_alpha_grads",
    "decoder_search_loss",
    "arch_warmup",
    "search_step",
]

logger = logging.getLogger(__name__)

SEARCH_MODES: tuple[str, ...] = ("joint", "alternating")
ARCH_GRAD_CLIP = 1.0  # global L2 norm of the arch-weight gradient per step (see the module docstring)
ARCH_BETAS = (0.5, 0.999)  # DARTS' Adam betas for architecture weights [DARTS], no weight decay (Eq. 2 is the prior)


def encoder_search_loss(task_loss: torch.Tensor, supernet: DepthSupernet, latencies: Sequence[Sequence[float]],
                        lam: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of the encoder depth search [ST-NAS Eq. 2]::

        L = L_task(f(W, A, x), y) + lambda * sum_i |alpha_i| * s_i

    with ``alpha_i`` the depth supernet's architecture weight of block i and ``s_i`` that block's latency (ms) from
    the latency table. The absolute value makes the penalty the L1 term the paper describes (SPEC: the alphas are
    unconstrained, so a negative alpha must not lower the loss). ``d L / d alpha_i = d L_task / d alpha_i + lambda *
    sign(alpha_i) * s_i``.

    Args:
        task_loss: L_task of the batch (scalar).
        supernet: the encoder's ``DepthSupernet``.
        latencies: s_i per stage, per block (``LatencyTable.latencies_for(encoder)``).
        lam: lambda.

    Returns:
        (L, ``{"task_loss", "penalty"}`` as floats for the log).
    """
    penalty = supernet.penalty(latencies)  # sum_i |alpha_i| * s_i, ms
    return task_loss + lam * penalty, {"task_loss": float(task_loss.detach()), "penalty": float(penalty.detach())}


def task_alpha_grads(supernet: DepthSupernet, latencies: Sequence[Sequence[float]], lam: float) -> list[float]:
    """The task-only gradient ``g_i = dL_task / d alpha_i`` of every alpha, read after the backward pass of Eq. 2.

    The penalty's gradient is known exactly, ``lambda * sign(alpha_i) * s_i``, so ``g_i = d L / d alpha_i - lambda *
    sign(alpha_i) * s_i`` from the raw (unscaled, unclipped) gradient in ``alpha_i.grad``: call it as
    ``search_step``'s ``after_arch_backward``. A stage without alphas (or without a gradient) gives zeros.

    Args:
        supernet: the encoder's ``DepthSupernet``.
        latencies: s_i per stage, per block (ms), as given to ``encoder_search_loss``.
        lam: the lambda the loss was computed with.

    Returns:
        ``g_i`` of every block, stages in order, flattened.
    """
    g: list[float] = []
    for stage, row in zip(supernet.stages, latencies, strict=True):
        if stage.alpha is None or stage.alpha.grad is None:
            g += [0.0] * len(row)
            continue
        pen = lam * torch.sign(stage.alpha.detach()) * torch.as_tensor(row, dtype=stage.alpha.dtype)
        g += (stage.alpha.grad.detach() - pen.to(stage.alpha.device)).tolist()
    return g


def decoder_search_loss(task_loss: torch.Tensor, supernet: DecoderSupernet, costs: torch.Tensor | None,
                        lam: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of the decoder op search::

        L = L_task                                       (costs None: the paper's decoder search)
        L = L_task + lambda * E[T],  E[T] = sum_s softmax(beta_s) . costs_s   (``stnas.decoder_latency``)

    with ``costs`` the (S, M) table latency (ms) of candidate j in slot s (``LatencyTable.decoder_op_costs``), so
    lambda prices decoder milliseconds as Eq. 2 prices encoder ones.

    Returns:
        (L, ``{"task_loss"}`` plus ``"decoder_latency"`` (E[T], ms) with costs, as floats for the log).
    """
    if costs is None:
        return task_loss, {"task_loss": float(task_loss.detach())}
    latency = supernet.expected_latency(costs)  # ms, differentiable in the betas
    return task_loss + lam * latency, {"task_loss": float(task_loss.detach()),
                                       "decoder_latency": float(latency.detach())}


class ClippedAdam(torch.optim.Adam):
    """Adam whose ``step`` first clips the gradients of its parameters to a global L2 norm ``max_norm``.

    The architecture weights' optimiser: ``search_step`` steps it through the engine's ``backward_step`` (the same
    call steps the weights in joint mode), so the clipping of the architecture gradients alone lives in the
    optimiser (``g <- g * min(1, max_norm / ||g||_2)`` over all its parameters, then the Adam update).
    """

    def __init__(self, params: Any, *, max_norm: float, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.max_norm = float(max_norm)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        grads = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if grads and math.isfinite(self.max_norm) and self.max_norm > 0:
            nn.utils.clip_grad_norm_(grads, self.max_norm)
        return super().step(closure)


def arch_warmup(model: nn.Module, epoch: int, warmup_epochs: int) -> bool:
    """Freeze the architecture weights of ``model`` during warm-up; call at the start of every epoch.

    Epochs ``0 .. warmup_epochs - 1`` train the network weights only; from epoch ``warmup_epochs`` on the
    architecture weights train too. See ``set_arch_trainable`` for what freezing means (and the DDP note).

    Returns:
        Whether the architecture weights are trainable in this epoch.
    """
    trainable = epoch >= warmup_epochs
    set_arch_trainable(model, trainable)
    if epoch == warmup_epochs and warmup_epochs > 0:
        logger.info("warm-up over after %d epoch(s): architecture weights now train", warmup_epochs)
    return trainable


LossFn = Callable[[Any], "torch.Tensor | tuple[torch.Tensor, Mapping[str, float]]"]


def _loss(loss_fn: LossFn, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
    out = loss_fn(batch)
    if isinstance(out, tuple):
        loss, logs = out
        return loss, {k: float(v) for k, v in logs.items()}
    return out, {}


def search_step(
    model: nn.Module,
    loss_fn: LossFn,
    weight_optimizer: torch.optim.Optimizer,
    arch_optimizer: torch.optim.Optimizer,
    batch: Any,
    *,
    mode: str = "joint",
    arch_batch: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    after_arch_backward: Callable[[], None] | None = None,
) -> dict[str, float]:
    """One step of supernet training (see the module docstring for the two modes).

    The optimisers must hold disjoint parameters: ``weight_parameters(model)`` and ``arch_parameters(model)``
    (usually AdamW for the weights and Adam without weight decay for the architecture weights, so decay does not
    pull the alphas towards 0 on top of Eq. 2). While the architecture weights are frozen (warm-up) the
    architecture update is skipped.

    Args:
        model: the supernet (or a model containing one).
        loss_fn: ``loss_fn(batch) -> loss`` or ``(loss, logs)``; the loss includes any regulariser, e.g.
            ``task + lam * depth_supernet.penalty(table)`` (Eq. 2); ``logs`` are floats to report.
        weight_optimizer: optimiser of the network weights.
        arch_optimizer: optimiser of the architecture weights.
        batch: the batch of this step (``"alternating"``: of the weight half of the data).
        mode: ``"joint"`` or ``"alternating"``.
        arch_batch: ``"alternating"`` only: a batch from the architecture half of the data.
        scaler: a ``GradScaler`` for fp16 mixed precision (``vidnas.precision.grad_scaler``); None = float32 steps.
            The architecture weights stay float32 either way.
        after_arch_backward: called after the backward pass whose gradients the architecture step uses, before any
            optimiser step or clipping (so ``p.grad`` of every architecture weight is the raw gradient of the loss,
            unscaled under fp16); not called while the architecture weights are frozen. The encoder search reads its
            task-only alpha gradients here.

    Returns:
        ``{"loss": ..., **logs}`` of the weight step, plus ``"arch_loss"`` and ``arch_*`` logs of the architecture
        step in alternating mode.
    """
    if mode not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {mode!r}; valid modes: {', '.join(SEARCH_MODES)}")
    arch_on = any(p.requires_grad for p in arch_parameters(model))
    loss, logs = _loss(loss_fn, batch)
    result = {"loss": float(loss.detach()), **logs}
    if not arch_on:
        backward_step(loss, weight_optimizer, scaler)
        return result
    if mode == "joint":  # the same gradients step both: single-level optimisation
        backward_step(loss, (weight_optimizer, arch_optimizer), scaler, before_step=after_arch_backward)
        return result
    backward_step(loss, weight_optimizer, scaler)
    if arch_batch is None:
        raise ValueError("mode 'alternating' needs arch_batch (a batch from the other half of the data)")
    arch_loss, arch_logs = _loss(loss_fn, arch_batch)
    backward_step(arch_loss, arch_optimizer, scaler, before_step=after_arch_backward)
    weight_optimizer.zero_grad(set_to_none=True)  # the arch step's weight gradients are not applied
    result["arch_loss"] = float(arch_loss.detach())
    result.update({f"arch_{k}": v for k, v in arch_logs.items()})
    return result
