"""The encoder depth search [ST-NAS Sec. 3.2]: a depth supernet trained on Eq. 2, then its depth decision.

``search_encoder_depths``: the latency table (``SearchContext.latency_table``: ``cfg.stnas.latency_table``, or every
block of the full-depth encoder and the decoder parts timed now and saved as ``latency_table.json``; under torchrun
rank 0 measures and broadcasts). The model of the config with its encoder wrapped in a ``DepthSupernet`` (Eq. 1);
network weights (AdamW, ``cfg.train``) and alphas (``ClippedAdam`` at ``stnas.arch_lr``) train on the loss of Eq. 2
(``step.encoder_search_loss``) for ``stnas.encoder_epochs``: with lambda under the paper's rule, with lambda 0 under
the truncated rule (it applies lambda when it decides, so one supernet serves every lambda and budget). Every step
logs the task loss, the penalty, the expected latency, every alpha and every alpha's task-only gradient
(``alpha_grad``, ``step.task_alpha_grads``). The depths: the shrink rule (``stnas.depth_rule = "paper"``) or the
truncated validation losses with lambda or a latency budget (``"truncated"``; ``vidnas.search.stnas.depth``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidnas.config import Config
from vidnas.engine.distributed import broadcast_object
from vidnas.engine.losses import segmentation_loss
from vidnas.models import arch_from_config, build_model
from vidnas.models.encoders import Encoder
from vidnas.models.ops import SEARCH_CANDIDATES
from vidnas.search.latency import LatencyTable
from vidnas.search.stnas.depth import (
    BudgetError,
    DepthDecision,
    choose_depths,
    flip_lambdas,
    lambda_path,
    min_latency,
    truncated_losses,
)
from vidnas.search.stnas.runner import (
    Phase,
    SearchContext,
    fixed_batches,
    open_context,
    phase_seed,
    run_phase,
    sync_arch,
)
from vidnas.search.stnas.step import encoder_search_loss, task_alpha_grads
from vidnas.search.stnas.supernet import DepthSupernet
from vidnas.utils import seed_everything

__all__ = ["EncoderSearch", "search_encoder_depths"]

logger = logging.getLogger(__name__)


@dataclass
class EncoderSearch:
    """The outcome of ``search_encoder_depths``.

    Attributes:
        model: the model (``VideoSegmenter``; ``MultiScaleSegmenter`` for ``mstcn``) whose encoder is the trained
            ``DepthSupernet``.
        supernet: that supernet (alphas; ``derived_encoder(threshold)`` gives the shortened encoder).
        table: the latency table of Eq. 2.
        latencies: s_i per stage, per block (ms), from the table.
        lam: lambda (``stnas.lam``).
        threshold: shrink-rule threshold.
        seconds: wall time of the phase (resumes included).
    """

    model: nn.Module
    supernet: DepthSupernet
    table: LatencyTable
    latencies: list[list[float]]
    lam: float
    threshold: float
    seconds: float
    decision: DepthDecision | None = None

    @property
    def alphas(self) -> list[list[float]]:
        return self.supernet.alphas()

    @property
    def depths(self) -> tuple[int, ...]:
        """The derived depths: the decision's (``depth_rule``), else the shrink rule at ``threshold``."""
        if self.decision is not None:
            return tuple(self.decision.depths)
        return self.supernet.derive(self.threshold)

    def derived_encoder(self) -> Encoder:
        """A copy of the encoder keeping the derived depths, with the weights trained in the supernet."""
        return self.supernet.encoder.with_depths(self.depths)

    @property
    def full_depths(self) -> tuple[int, ...]:
        return self.supernet.depths

    @property
    def full_latency_ms(self) -> float:
        """Summed block latency (ms) of the full encoder."""
        return float(sum(sum(s) for s in self.latencies))

    @property
    def derived_latency_ms(self) -> float:
        """Summed block latency (ms) of the derived encoder."""
        return float(sum(sum(row[:d]) for row, d in zip(self.latencies, self.depths, strict=True)))


def search_encoder_depths(
    cfg: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    show_progress: bool = True,
    context: SearchContext | None = None,
    budget_ms: float | None = None,
    decoder_searched: bool = False,
) -> EncoderSearch:
    """The encoder depth search (module docstring): train a depth supernet and decide its depths.

    Under ``stnas.depth_rule = "paper"`` the supernet trains on Eq. 2 with lambda (``stnas.lam``) and the shrink rule
    derives the
    depths. Under ``"truncated"`` it trains on the task loss (lambda 0 in Eq. 2), then the truncated validation losses
    decide (``vidnas.search.stnas.depth``): ``argmin L + lam * T``, or with ``budget_ms`` the most accurate depths
    whose table latency (encoder + decoder) fits. Every arch step logs each alpha's task-only gradient
    ``g_i = dL_task/d alpha_i``; their means give the paper rule's flip lambdas ``-E[g_i] / s_i``.

    Args:
        cfg: resolved config (``data``, ``model``, ``train`` for the optimiser and batches, ``stnas``).
        run_dir: run directory (its ``checkpoints/encoder_search.pt``, ``latency_table.json``, ``metrics.jsonl``).
        resume: continue from the phase checkpoint (exactly).
        show_progress: tqdm bars (rank 0).
        context: a shared ``SearchContext`` (``search_stnas`` passes one); None = open one for this call.
        budget_ms: latency budget (ms) of encoder + decoder; None = ``cfg.stnas.target_latency_ms`` (None: lambda).
        decoder_searched: the decoder will be searched after this (its budget share is then an estimate:
            ``LatencyTable.decoder_latency_estimate``).

    Returns:
        An ``EncoderSearch`` (the trained supernet, its alphas, the decision and the derived depths).

    Raises:
        BudgetError: before any training, when no depth combination fits the budget.
    """
    ctx, own = open_context(cfg, run_dir, context, resume, show_progress)
    lam = ctx.lam
    budget_ms = cfg.stnas.target_latency_ms if budget_ms is None else float(budget_ms)
    rule = cfg.stnas.depth_rule
    if budget_ms is not None and rule != "truncated":
        raise ValueError(f"a latency budget needs stnas.depth_rule=truncated, not {rule!r}")
    threshold = float(cfg.stnas.threshold)
    seed_everything(phase_seed(cfg.train.seed, "encoder"))
    base = arch_from_config(cfg)
    model = build_model(cfg, base, num_classes=ctx.num_classes)
    supernet = DepthSupernet(model.encoder)
    model.encoder = supernet
    model.to(ctx.device)  # after wrapping: the alphas go with the weights
    table = ctx.latency_table(supernet.encoder, need_parts=budget_ms is not None)
    lat = table.latencies_for(supernet.encoder)
    fixed_ms, decoder_ms = 0.0, None
    if budget_ms is not None:
        candidates = tuple(cfg.stnas.candidates or SEARCH_CANDIDATES)
        decoder_ms = table.decoder_latency_estimate(supernet.encoder, base, ctx.num_classes,
                                                    searched=decoder_searched, candidates=candidates)
        fixed_ms = table.fixed_encoder_latency(supernet.encoder) + decoder_ms
        lowest = min_latency(lat, fixed_ms)
        if lowest > budget_ms:  # say it now, not after the epochs
            raise BudgetError(
                f"no depth combination fits the latency budget {budget_ms:g} ms: the smallest table latency is "
                f"{lowest:.3f} ms (every stage at its first block: {lowest - fixed_ms:.3f} ms of blocks, "
                f"{fixed_ms - decoder_ms:.3f} ms of stem / downsamples / outputs, {decoder_ms:.3f} ms decoder"
                + (", estimated for a searched decoder" if decoder_searched else "") + f"; table {table.path})")
    lam_train = lam if rule == "paper" else 0.0  # Eq. 2 while training; the truncated rule applies lam as it decides
    flat_lat = [s for row in lat for s in row]
    phase_state: dict[str, Any] = {"grad_sum": [0.0] * len(flat_lat), "grad_steps": 0}

    def terms(task: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return encoder_search_loss(task, supernet, lat, lam_train)

    last_grad: list[float] = []

    def task_grads() -> None:
        g = task_alpha_grads(supernet, lat, lam_train)
        phase.state["grad_sum"] = [a + b for a, b in zip(phase.state["grad_sum"], g, strict=True)]
        phase.state["grad_steps"] += 1
        last_grad[:] = g

    def on_step(step: int, epoch: int, logs: dict[str, float]) -> None:
        ctx.run_logger.log("encoder_search", step, epoch=epoch, lam=lam, lam_train=lam_train,
                           expected_latency_ms=supernet.expected_latency(lat, threshold),
                           depths=list(supernet.derive(threshold)), **logs)
        ctx.run_logger.log("alpha", step, epoch=epoch, **{
            f"s{s}_b{i}": a for s, row in enumerate(supernet.alphas()) for i, a in enumerate(row)})
        if last_grad:
            names = [f"s{s}_b{i}" for s, row in enumerate(lat) for i in range(len(row))]
            ctx.run_logger.log("alpha_grad", step, epoch=epoch, **dict(zip(names, last_grad, strict=True)))
            last_grad.clear()

    phase = Phase("encoder", model, cfg.stnas.encoder_epochs, 0, terms, on_step, arch_lr=cfg.stnas.arch_lr,
                   after_arch_backward=task_grads, state=phase_state)
    run_phase(phase, ctx)
    sync_arch(model, ctx.dist_info)

    n = max(int(phase.state["grad_steps"]), 1)
    flat_mean = [v / n for v in phase.state["grad_sum"]]
    grad_mean, k = [], 0
    for row in lat:
        grad_mean.append(flat_mean[k:k + len(row)])
        k += len(row)
    full_depths = supernet.depths
    if rule == "paper":
        decision = DepthDecision(rule="paper", depths=supernet.derive(threshold), lam=lam, full_depths=full_depths,
                                 block_latencies=lat)
    else:
        decision = _truncated_decision(ctx, model, supernet, lat, lam=lam, budget_ms=budget_ms, fixed_ms=fixed_ms)
        decision.decoder_ms = decoder_ms
    decision.latency_ms = sum(sum(row[:d]) for row, d in zip(lat, decision.depths, strict=True)) + decision.fixed_ms
    decision.task_grad_mean = grad_mean
    decision.flip_lambda = flip_lambdas(grad_mean, lat)
    out = EncoderSearch(model, supernet, table, lat, lam, threshold, phase.seconds, decision)
    logger.info("encoder search (%s rule): depths %s -> %s, block latency %.2f -> %.2f ms", rule, out.full_depths,
                out.depths, out.full_latency_ms, out.derived_latency_ms)
    if own:
        ctx.close()
    return out


def _truncated_decision(ctx: SearchContext, model: nn.Module, supernet: DepthSupernet,
                        lat: list[list[float]], *, lam: float, budget_ms: float | None,
                        fixed_ms: float) -> DepthDecision:
    """Measure the truncated losses and decide (rank 0's decision on every rank)."""
    cfg, device, ignore = ctx.cfg, ctx.device, ctx.cfg.data.ignore_index
    val_ds, decided_on = ctx.val_ds, ctx.decided_on
    if val_ds is None or len(val_ds) == 0:
        logger.warning("no validation frames in split %r: the truncated losses use training clips",
                       cfg.data.val_split)
        val_ds, decided_on = ctx.train_ds, {"split": cfg.data.train_split}
    bs = cfg.train.batch_size
    ctx.train_ds.set_epoch(0)
    seed = phase_seed(cfg.train.seed, "encoder")
    val_batches = fixed_batches(val_ds, bs, cfg.stnas.depth_val_batches)
    calib = fixed_batches(ctx.train_ds, bs, cfg.stnas.bn_calib_batches, shuffle_seed=seed + 17)

    def loss_of(batch: dict[str, Any]) -> torch.Tensor:
        logits = model(batch["frames"].to(device))  # (B, T, K, H, W)
        return segmentation_loss(logits, batch["masks"].to(device), ignore)

    t0 = time.perf_counter()
    full, losses = truncated_losses(supernet, loss_of, val_batches, model=model, calib_batches=calib,
                                    calib_forward=lambda b: model(b["frames"].to(device)))
    if ctx.dist_info.enabled:
        full, losses = broadcast_object((full, losses))  # type: ignore[misc]
    if budget_ms is not None:
        choice = choose_depths(losses, full, lat, budget_ms=budget_ms, fixed_ms=fixed_ms)
    else:
        choice = choose_depths(losses, full, lat, lam=lam, fixed_ms=fixed_ms)
    logger.info("truncated losses measured in %.1f s over %d validation batches: depths %s (loss %.4f, %.3f ms)",
                time.perf_counter() - t0, len(val_batches), choice.depths, choice.loss, choice.latency_ms)
    return DepthDecision(rule="truncated", depths=choice.depths, lam=None if budget_ms is not None else lam,
                         budget_ms=budget_ms, full_depths=supernet.depths, losses=losses, full_loss=full,
                         loss=choice.loss, fixed_ms=fixed_ms, block_latencies=lat,
                         path=lambda_path(losses, full, lat, fixed_ms=fixed_ms), val_batches=len(val_batches),
                         decided_on=decided_on)
