"""The decoder op search [ST-NAS Sec. 3.3]: a TCNNAS decoder supernet on the (derived) encoder, its ops by argmax.

``search_decoder_ops``: a new model, the derived encoder (carrying the weights trained by the encoder search) and a
decoder supernet whose slots are ``MixedOp``s over the seven candidates (``stnas.candidates``): the SP-TCN's 16 (four
residual layers), or, for ``model.decoder = mstcn``, the multi-scale decoder's trunk (4 per residual layer) and each
finer scale's two path ops and fusion op (3 per scale), which decides per scale whether temporal context pays, or, for
``model.decoder = arch2_space``, arch2's eight slots over their own candidates (temporal ones on the stride-32/16
slots), so a search that finds no use for time returns a per-frame model and arch2 is one of its answers. Betas
are frozen for ``stnas.warmup_epochs``, then train jointly with the weights (single level) or, with ``stnas.mode =
"alternating"``, first-order DARTS on two halves of the training data, at the lr ``stnas.beta_travel / arch steps``.
The task loss drives it (the paper), plus, with ``stnas.decoder_latency``, ``lambda * E[T]``: the expected table
latency of the slots' ops under softmax(beta) (``step.decoder_search_loss``, ``LatencyTable.decoder_op_costs``), so
lambda prices decoder milliseconds as the depth decision prices encoder ones. Every step logs the mean entropy of
softmax(beta). Derived op per slot: argmax of beta; with ``stnas.decoder_seeds = N`` the search runs N times (seeds
``k = 0 .. N-1``) and derives from the softmax weights averaged over the seeds (``search_decoder_seeds``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidnas.config import Config
from vidnas.models import VideoSegmenter, arch_from_config, build_encoder
from vidnas.models.decoders import Arch2SpaceDecoder
from vidnas.models.decoders.arch2_space import SPACE_SCALES
from vidnas.models.encoders import Encoder
from vidnas.models.multiscale import STRIDE_INDEX, MultiScaleSegmenter
from vidnas.models.ops import SEARCH_CANDIDATES
from vidnas.search.stnas.decoder_supernet import DecoderSupernet, build_decoder_supernet, build_multiscale_supernet
from vidnas.search.stnas.record import decoder_consensus
from vidnas.search.stnas.runner import (
    Phase,
    SearchContext,
    check_searchable_decoder,
    decoder_phase,
    open_context,
    phase_kinds,
    phase_seed,
    run_phase,
    sync_arch,
)
from vidnas.search.stnas.step import decoder_search_loss
from vidnas.utils import seed_everything

__all__ = ["DecoderSearch", "search_decoder_ops", "search_decoder_seeds"]

logger = logging.getLogger(__name__)


@dataclass
class DecoderSearch:
    """The outcome of ``search_decoder_ops``: the model (a ``VideoSegmenter``, or a ``MultiScaleSegmenter`` for
    ``mstcn``) whose decoder is the trained ``DecoderSupernet``."""

    model: nn.Module
    supernet: DecoderSupernet
    seconds: float
    arch_lr: float | None = None
    seed_index: int = 0

    @property
    def betas(self) -> list[list[float]]:
        return self.supernet.betas()

    @property
    def weights(self) -> list[list[float]]:
        """softmax(beta) per slot."""
        return self.supernet.op_weights()

    @property
    def ops(self) -> tuple[str, ...]:
        """The derived op per slot (argmax of beta)."""
        return self.supernet.derive()

    @property
    def candidates(self) -> tuple[str, ...]:
        return self.supernet.candidates


def _entropy(weights: list[list[float]]) -> tuple[float, float]:
    """(mean over slots of the entropy of softmax(beta) in nats, mean over slots of the largest weight)."""
    ent = [-sum(w * math.log(w) for w in row if w > 0) for row in weights]
    return sum(ent) / len(ent), sum(max(row) for row in weights) / len(weights)


def search_decoder_ops(
    cfg: Config,
    run_dir: str | Path,
    *,
    encoder: Encoder | None = None,
    resume: bool = False,
    show_progress: bool = True,
    context: SearchContext | None = None,
    seed_index: int = 0,
) -> DecoderSearch:
    """The decoder op search (module docstring): train a TCNNAS decoder supernet and derive its ops.

    The betas' lr is ``stnas.beta_travel / A`` with ``A = (decoder_epochs - warmup_epochs) * steps per epoch`` the
    architecture steps of the phase: Adam moves a beta by about its lr per step, so every beta can travel about
    ``beta_travel`` in total, whatever the budget (None: ``stnas.arch_lr`` per step). Every step logs the mean
    entropy of softmax(beta) over the slots (``beta_entropy``; uniform: ln 7 = 1.946 nats) and the mean largest
    weight (``beta_max``).

    The loss (``step.decoder_search_loss``): the task loss alone [ST-NAS], or with ``stnas.decoder_latency``
    ``task + lam * E[T]``, ``lam`` the context's lambda (``stnas.lam``) and ``E[T] = sum_s softmax(beta_s) . costs_s``
    the expected table latency (ms) of the slots' ops (``LatencyTable.decoder_op_costs``; logged as
    ``decoder_latency``).

    Args:
        cfg: resolved config; the decoder must be ``sptcn``, ``mstcn`` (fusion ``fpn``) or ``arch2_space``.
        run_dir: run directory (its ``checkpoints/decoder_search.pt``, ``metrics.jsonl``).
        encoder: the encoder to search on (e.g. ``EncoderSearch.derived_encoder()``, with the weights trained
            there); None = the config's encoder. Not modified: the search trains a copy.
        resume: continue from the phase checkpoint (exactly).
        show_progress: tqdm bars (rank 0).
        context: a shared ``SearchContext``; None = open one for this call.
        seed_index: which of ``stnas.decoder_seeds`` searches this is (0 = the only one by default); seed ``k > 0``
            has its own phase seed, checkpoint ``decoder_s{k}_search.pt`` and log kinds ``decoder_search_s{k}``,
            ``beta_s{k}``.

    Raises:
        ValueError: the config's decoder is not one of those.
    """
    base = arch_from_config(cfg)
    check_searchable_decoder(base)
    ctx, own = open_context(cfg, run_dir, context, resume, show_progress)
    name = decoder_phase(seed_index)
    seed_everything(phase_seed(cfg.train.seed, name))
    if encoder is None:
        encoder = build_encoder(base.encoder, img_size=(cfg.data.height, cfg.data.width), depths=base.depths,
                                weights=cfg.model.weights)
    else:
        encoder = encoder.with_depths(encoder.depths)  # a copy: every seed starts from the same weights
    candidates = cfg.stnas.candidates or SEARCH_CANDIDATES
    model: nn.Module
    if base.decoder == "arch2_space":
        supernet = DecoderSupernet(Arch2SpaceDecoder([encoder.out_channels[STRIDE_INDEX[s]] for s in SPACE_SCALES],
                                                     ctx.num_classes, channels=base.fuse_channels,
                                                     causal=base.causal))
        model = MultiScaleSegmenter(encoder, supernet, ctx.num_classes, scales=SPACE_SCALES,  # type: ignore[arg-type]
                                    window=base.window, causal=base.causal)
    elif base.decoder == "mstcn":
        supernet = build_multiscale_supernet([encoder.out_channels[STRIDE_INDEX[s]] for s in base.scales],
                                             ctx.num_classes, channels=base.channels,
                                             fuse_channels=base.fuse_channels, dilations=base.dilations,
                                             full_channels=base.full_channels, causal=base.causal,
                                             candidates=candidates)
        model = MultiScaleSegmenter(encoder, supernet, ctx.num_classes, scales=base.scales,  # type: ignore[arg-type]
                                    window=base.window, causal=base.causal)
    else:
        supernet = build_decoder_supernet(encoder.out_channels[-1], ctx.num_classes, channels=base.channels,
                                          dilations=base.dilations, full_channels=base.full_channels,
                                          causal=base.causal, candidates=candidates)
        model = VideoSegmenter(encoder, supernet, ctx.num_classes, window=base.window, causal=base.causal)
    model.to(ctx.device)
    kind_search, kind_beta = phase_kinds(name)[:2]
    costs: torch.Tensor | None = None
    if cfg.stnas.decoder_latency:
        table = ctx.latency_table(encoder, need_parts=True)
        costs = table.decoder_op_costs(encoder, base, ctx.num_classes, len(supernet.slots),
                                       supernet.candidates).to(ctx.device)
        logger.info("decoder search: latency term on, lambda %g; op latency %.2f (cheapest ops) .. %.2f ms "
                    "(dearest)", ctx.lam, float(costs.min(dim=1).values.sum()), float(costs.max(dim=1).values.sum()))

    def terms(task: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return decoder_search_loss(task, supernet, costs, ctx.lam)

    def on_step(step: int, epoch: int, logs: dict[str, float]) -> None:
        weights = supernet.op_weights()
        entropy, top = _entropy(weights)
        ctx.run_logger.log(kind_search, step, epoch=epoch, ops=list(supernet.derive()), beta_entropy=entropy,
                           beta_max=top, **logs)
        ctx.run_logger.log(kind_beta, step, epoch=epoch, **{  # the candidates each slot allows (arch2_space: its own)
            f"{k:02d}_{op}": w for k, (row, mixed) in enumerate(zip(weights, supernet.mixed_ops(), strict=True))
            for op, w, allowed in zip(supernet.candidates, row, mixed.allowed, strict=True) if allowed})

    travel = cfg.stnas.beta_travel
    arch_lr: float | Callable[[int], float] = cfg.stnas.arch_lr if travel is None else (lambda n: float(travel) / n)
    phase = Phase(name, model, cfg.stnas.decoder_epochs, cfg.stnas.warmup_epochs, terms, on_step, arch_lr=arch_lr)
    run_phase(phase, ctx)
    sync_arch(model, ctx.dist_info)
    out = DecoderSearch(model, supernet, phase.seconds, phase.used_arch_lr, seed_index)
    logger.info("decoder search (seed %d, beta lr %.3g): ops %s", seed_index, phase.used_arch_lr, list(out.ops))
    if own:
        ctx.close()
    return out


def search_decoder_seeds(
    cfg: Config,
    run_dir: str | Path,
    *,
    encoder: Encoder | None = None,
    resume: bool = False,
    show_progress: bool = True,
    context: SearchContext | None = None,
) -> tuple[list[DecoderSearch], dict[str, Any]]:
    """``stnas.decoder_seeds`` decoder searches from the same encoder, and their consensus.

    Returns:
        (every seed's ``DecoderSearch``, ``record.decoder_consensus(...)``: the ops derived from the softmax weights
        averaged over the seeds, the per-slot agreement between seeds, ...).
    """
    ctx, own = open_context(cfg, run_dir, context, resume, show_progress)
    runs = [search_decoder_ops(cfg, run_dir, encoder=encoder, context=ctx, seed_index=k)
            for k in range(cfg.stnas.decoder_seeds)]
    consensus = decoder_consensus([r.weights for r in runs], runs[0].candidates)
    if own:
        ctx.close()
    return runs, consensus
