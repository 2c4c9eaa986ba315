"""The ST-NAS search loop [ST-NAS Sec. 3.2, 3.3, 4]: encoder depth search, then decoder op search, then ``arch.json``.

Two public searches a researcher can call from Python, each on its own supernet (the paper: "the encoder and decoder
NAS steps are performed separately"), and ``search_stnas``, which runs both and writes every output:

1. ``search_encoder_depths``. The latency table (``cfg.stnas.latency_table``, or every block of the full-depth encoder
   and the decoder parts timed now by ``vidnas.search.latency`` and saved as ``latency_table.json``; under torchrun
   rank 0 measures and broadcasts). The model of the config with its encoder wrapped in a ``DepthSupernet`` (Eq. 1);
   network weights (AdamW, ``cfg.train``) and alphas (``ClippedAdam`` at ``stnas.arch_lr``) train on the loss of
   Eq. 2 (``step.encoder_search_loss``) for ``stnas.encoder_epochs``: with lambda under the paper's rule, with
   lambda 0 under the truncated rule (it applies lambda when it decides, so one supernet serves every lambda and
   budget). Every step logs the task loss, the penalty, the expected latency, every alpha and every alpha's
   task-only gradient (``alpha_grad``). The depths: the shrink rule (``stnas.depth_rule = "paper"``) or the
   truncated validation losses with lambda or a latency budget (``"truncated"``; ``vidnas.search.stnas.depth``).
2. ``search_decoder_ops``. A new model: the derived encoder (carrying the weights trained in step 1) and a decoder
   supernet whose slots are ``MixedOp``s over the seven candidates (``stnas.candidates``): the SP-TCN's 16 (four
   residual layers), or, for ``model.decoder = mstcn``, the multi-scale decoder's trunk (4 per residual layer) and
   each finer scale's two path ops and fusion op (3 per scale), which decides per scale whether temporal context
   pays. Betas are
   frozen for ``stnas.warmup_epochs``, then train jointly with the weights (single level) or, with ``stnas.mode =
   "alternating"``, first-order DARTS on two halves of the training data, at the lr ``stnas.beta_travel / arch
   steps``. The task loss drives it (the paper), plus, with ``stnas.decoder_latency``, ``lambda * E[T]``: the
   expected table latency of the slots' ops under softmax(beta) (``decoder_op_costs``), so lambda prices decoder
   milliseconds as the depth decision prices encoder ones. Every step logs the mean entropy of softmax(beta).
   Derived op per slot: argmax of beta; with ``stnas.decoder_seeds = N`` the search runs N times (seeds ``k = 0 ..
   N-1``) and derives from the softmax weights averaged over the seeds (``search_decoder_seeds``).
3. ``search_stnas`` writes (rank 0) ``arch.json`` (``record.write_search_arch``), ``derived_init.pt``,
   ``metrics.jsonl`` and TensorBoard (kinds ``encoder_search``, ``alpha``, ``alpha_grad``, ``decoder_search``,
   ``beta``; ``_s{k}`` suffixes for decoder seed k > 0), the plots and ``report.md`` (``report``),
   ``search_summary.json``; every rank writes ``ranks/rank{N}_arch.json``. ``arch.json`` holds no timing: the same
   command, seed, thread count and latency table give the same file, byte for byte.

Both phases train in the engine's epoch loop (``vidnas.engine.loop``). Resume: a checkpoint per phase
(``checkpoints/encoder_search.pt``, ``decoder_search.pt``, ``decoder_s{k}_search.pt``) holds the supernet weights
(arch weights included), both optimisers, the epoch, the elapsed time and what the phase accumulates (the sums of
the task-only alpha gradients). Every epoch re-seeds from ``(train.seed, phase, epoch)``
and each phase's model is built right after seeding with a phase-specific seed, so ``resume=True`` continues exactly
where the uninterrupted search would be (tested: same alphas and betas to the bit).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from vidnas.checkpoint import load_checkpoint, save_checkpoint
from vidnas.config import Config, config_to_dict
from vidnas.data import build_datasets
from vidnas.engine.distributed import DistInfo, barrier, broadcast_object, init_distributed, sync_buffers
from vidnas.engine.logger import RunLogger
from vidnas.engine.loop import epoch_loader, epoch_seed, mean_loss, run_epoch, steps_per_epoch
from vidnas.engine.losses import segmentation_loss
from vidnas.models import Arch, VideoSegmenter, arch_from_config, build_encoder, build_model
from vidnas.models.architecture import OPS_PER_LAYER
from vidnas.models.decoders.mstcn import OPS_PER_SCALE
from vidnas.models.encoders import Encoder
from vidnas.models.multiscale import STRIDE_INDEX, MultiScaleSegmenter
from vidnas.models.ops import SEARCH_CANDIDATES
from vidnas.precision import autocast, grad_scaler, loader_options
from vidnas.search.latency import (
    LatencyTable,
    complete_model_parts,
    decoder_inputs,
    decoder_signatures,
    measure_latency_table,
    model_part_keys,
    multiscale_signatures,
)
from vidnas.search.stnas.depth import (
    DEPTH_RULES,
    BudgetError,
    DepthDecision,
    choose_depths,
    flip_lambdas,
    lambda_path,
    min_latency,
    truncated_losses,
)
from vidnas.search.stnas.derive import derive_arch, save_derived_init
from vidnas.search.stnas.record import StnasResult, decoder_consensus, write_search_arch
from vidnas.search.stnas.report import draw_search, search_report
from vidnas.search.stnas.step import (
    ARCH_BETAS,
    ARCH_GRAD_CLIP,
    SEARCH_MODES,
    ClippedAdam,
    arch_warmup,
    encoder_search_loss,
    search_step,
)
from vidnas.search.stnas.supernet import (
    DecoderSupernet,
    DepthSupernet,
    arch_parameters,
    build_decoder_supernet,
    build_multiscale_supernet,
    set_arch_trainable,
    weight_parameters,
)
from vidnas.utils import atomic_write_json, atomic_write_text, seed_everything

__all__ = [
    "SearchContext",
    "EncoderSearch",
    "DecoderSearch",
    "search_encoder_depths",
    "search_decoder_ops",
    "search_decoder_seeds",
    "decoder_latency_estimate",
    "decoder_op_costs",
    "search_stnas",
]

logger = logging.getLogger(__name__)

_PHASE_SALT = {"encoder": 1, "decoder": 2}  # separates the two phases' seeds
_SEED_SALT = 1000  # decoder seed k > 0: phase seed + k * _SEED_SALT


def _decoder_phase(k: int) -> str:
    """Phase name of decoder search seed ``k``: ``decoder`` (k = 0, as before seeds existed), ``decoder_s{k}``."""
    return "decoder" if k == 0 else f"decoder_s{k}"


def _ckpt_name(phase: str) -> str:
    return f"{phase}_search.pt"  # encoder_search.pt, decoder_search.pt, decoder_s1_search.pt, ...


def _kinds(phase: str) -> tuple[str, ...]:
    """metrics.jsonl record kinds of a phase (a resumed phase drops those after its checkpoint)."""
    if phase == "encoder":
        return ("encoder_search", "alpha", "alpha_grad", "encoder_epoch")
    suffix = phase[len("decoder"):]
    return (f"decoder_search{suffix}", f"beta{suffix}", f"decoder_epoch{suffix}")


# ------------------------------------------------------------------------------------------------------ context


@dataclass
class SearchContext:
    """What both phases of one search share: the run directory, its log, the training data, the processes.

    Build it with ``SearchContext.open``; ``close()`` flushes the log.
    """

    cfg: Config
    run_dir: Path
    dist_info: DistInfo
    run_logger: RunLogger
    source: Any
    train_ds: Any
    resume: bool = False
    show_progress: bool = True
    val_ds: Any = None
    table: LatencyTable | None = None  # the latency table of this search, once read or measured (_latency_table)

    @classmethod
    def open(cls, cfg: Config, run_dir: str | Path, *, resume: bool = False, show_progress: bool = True
             ) -> SearchContext:
        """Check the config, start torchrun's process group if any, open the log and the training data.

        Raises:
            ValueError: bad ``stnas.mode`` or no annotated training frame.
        """
        check_stnas_config(cfg)
        run_dir = Path(run_dir)
        dist_info = init_distributed(cfg.train.device)
        run_logger = RunLogger(run_dir, enabled=dist_info.is_main)
        source, train_ds, val_ds = build_datasets(cfg)
        if len(train_ds) == 0:
            raise ValueError(f"no annotated training frames in split {cfg.data.train_split!r} of {cfg.data.format}")
        return cls(cfg, run_dir, dist_info, run_logger, source, train_ds, resume, show_progress, val_ds)

    @property
    def device(self) -> torch.device:
        return torch.device(self.cfg.train.device)

    @property
    def num_classes(self) -> int:
        return int(self.source.num_classes)

    def close(self) -> None:
        self.run_logger.close()


@dataclass
class EncoderSearch:
    """The outcome of ``search_encoder_depths``.

    Attributes:
        model: the model (``VideoSegmenter``; ``MultiScaleSegmenter`` for ``mstcn``) whose encoder is the trained
            ``DepthSupernet``.
        supernet: that supernet (alphas; ``derived_encoder(threshold)`` gives the shortened encoder).
        table: the latency table of Eq. 2.
        latencies: s_i per stage, per block (ms), from the table.
        lam: lambda of Eq. 2.
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


# ------------------------------------------------------------------------------------------------------ helpers


SEARCHABLE_DECODERS: tuple[str, ...] = ("sptcn", "mstcn")  # decoders with op slots a decoder supernet searches


def _check_searchable_decoder(base: Arch) -> None:
    if base.decoder not in SEARCHABLE_DECODERS:
        raise ValueError(f"the decoder search needs the sptcn or mstcn decoder, the config has {base.decoder!r}; "
                         "pass skip_decoder (--skip-decoder) to search the encoder only")
    if base.fusion != "fpn":
        raise ValueError(f"the decoder search covers the mstcn decoder's fpn fusion, the config has model.fusion="
                         f"{base.fusion!r} (its search is not built yet); use --set model.fusion=fpn, or pass "
                         "skip_decoder (--skip-decoder) to search the encoder only")


def _phase_seed(seed: int, phase: str) -> int:
    if phase.startswith("decoder_s"):
        return seed * 31 + _PHASE_SALT["decoder"] + _SEED_SALT * int(phase[len("decoder_s"):])
    return seed * 31 + _PHASE_SALT[phase]


def check_stnas_config(cfg: Config) -> None:
    """Reject bad ``stnas`` values with a message naming the key and value (before any expensive work).

    Raises:
        ValueError: bad mode, depth rule, budget, travel, seeds or batch counts.
    """
    st = cfg.stnas
    if st.mode not in SEARCH_MODES:
        raise ValueError(f"stnas.mode={st.mode!r}; valid modes: {', '.join(SEARCH_MODES)}")
    if st.depth_rule not in DEPTH_RULES:
        raise ValueError(f"stnas.depth_rule={st.depth_rule!r}; valid rules: {', '.join(DEPTH_RULES)}")
    if st.target_latency_ms is not None:
        if not (math.isfinite(st.target_latency_ms) and st.target_latency_ms > 0):
            raise ValueError(f"stnas.target_latency_ms={st.target_latency_ms}: must be a positive number of ms")
        if st.depth_rule != "truncated":
            raise ValueError("a latency budget (stnas.target_latency_ms, --target-latency) needs "
                             f"stnas.depth_rule=truncated, not {st.depth_rule!r}")
    if st.beta_travel is not None and not st.beta_travel > 0:
        raise ValueError(f"stnas.beta_travel={st.beta_travel}: must be > 0 (or null to use stnas.arch_lr)")
    if st.decoder_seeds < 1:
        raise ValueError(f"stnas.decoder_seeds={st.decoder_seeds}: must be >= 1")
    if st.depth_val_batches < 1 or st.bn_calib_batches < 0:
        raise ValueError(f"stnas.depth_val_batches={st.depth_val_batches} must be >= 1 and "
                         f"stnas.bn_calib_batches={st.bn_calib_batches} >= 0")
    if not st.lam >= 0:
        raise ValueError(f"stnas.lam={st.lam}: lambda must be >= 0")


def _cycle(make: Callable[[], DataLoader]) -> Iterator[Any]:
    """Endless batches from fresh loaders (the architecture half may be shorter than the weight half)."""
    while True:
        empty = True
        for batch in make():
            empty = False
            yield batch
        if empty:
            raise ValueError("the architecture half of the training data is empty")


def _latency_table(ctx: SearchContext, encoder: Encoder, *, need_parts: bool = False) -> LatencyTable:
    """The table of Eq. 2: the configured file, the one this run measured before (resume), or measure now.

    A table measured now holds every part of ``LatencyTable.model_latency`` (stem, outputs, decoder parts); a given
    table gets the missing ones measured only when ``need_parts`` (a latency budget). The run directory keeps the
    table used (``latency_table.json``: a copy of the given file, plus any part measured here).
    """
    cfg, run_dir, dist_info = ctx.cfg, ctx.run_dir, ctx.dist_info
    local = run_dir / "latency_table.json"
    base = arch_from_config(cfg)
    candidates = tuple(cfg.stnas.candidates or SEARCH_CANDIDATES)
    if ctx.table is not None:  # read or measured by the encoder phase: both phases price with the same numbers
        keys = model_part_keys(encoder, base, ctx.num_classes, candidates)
        if not need_parts or ctx.table.has_parts([*keys[0], *keys[1]]):
            return ctx.table
    data = None
    if cfg.stnas.latency_table:
        table = LatencyTable.load(cfg.stnas.latency_table)
        logger.info("latency table %s (%d blocks, %d parts)", table.path, len(table.blocks), len(table.parts))
        if dist_info.is_main:
            if need_parts:
                complete_model_parts(table, encoder, base, ctx.num_classes, candidates)
            data = table.to_dict()
            if table.path is None or table.path.resolve() != local.resolve():
                LatencyTable.from_dict(data).save(local)  # beside the result; arch.json records the given path
        given = table.path
        data = broadcast_object(data) if dist_info.enabled else data
        table = LatencyTable.from_dict(data, source=given)
    elif ctx.resume and local.is_file():
        table = LatencyTable.load(local)
    else:
        if dist_info.is_main:
            logger.info("measuring the block latencies of %s at %s (no stnas.latency_table given)",
                        encoder.name, encoder.img_size)
            measured = measure_latency_table(encoder)
            complete_model_parts(measured, encoder, base, ctx.num_classes, candidates)
            measured.save(local)
            data = measured.to_dict()
        # timings differ between processes: every rank must regularise with rank 0's
        data = broadcast_object(data) if dist_info.enabled else data
        table = LatencyTable.from_dict(data, source=local)
    table.latencies_for(encoder)  # fail now, naming the missing signature, not mid-epoch
    ctx.table = table
    return table


def decoder_latency_estimate(table: LatencyTable, encoder: Encoder, base: Arch, num_classes: int, *,
                             searched: bool, candidates: Sequence[str] = SEARCH_CANDIDATES) -> float:
    """The decoder's share (ms) of a latency budget, read from the table.

    Not searched: the table latency of ``base``'s decoder (the SP-TCN baseline, or ``base.decoder_ops``). Searched:
    its ops are not known yet, so every slot counts the mean latency of the candidates (the expected latency under
    uniformly drawn ops, ``decoder_op_costs``) on top of the fixed parts (``sptcn_fixed``; for ``mstcn`` the decoder
    with identity trunk slots) and the upsampling. The report states the searched decoder's actual table latency.

    Raises:
        ValueError: a decoder other than ``sptcn`` / ``mstcn`` (its latency is not in tables).
        MissingLatencyError: a part is missing.
    """
    if base.decoder not in ("sptcn", "mstcn"):
        raise ValueError(f"a latency budget needs the sptcn or mstcn decoder in the latency table, the config has "
                         f"{base.decoder!r}")
    channels, hws = decoder_inputs(encoder, base)
    if not searched:
        return table.decoder_latency(base, channels, num_classes, hws, encoder.img_size)
    if base.decoder == "mstcn":
        keys = multiscale_signatures(base, channels, num_classes, hws, encoder.img_size)
        fixed, slots = keys["fixed_searched"], OPS_PER_LAYER * len(base.dilations) + OPS_PER_SCALE * (
            len(base.scales) - 1)
    else:
        keys = decoder_signatures(base, channels, num_classes, hws, encoder.img_size)
        fixed, slots = keys["fixed"], OPS_PER_LAYER * len(base.dilations)
    costs = decoder_op_costs(table, encoder, base, num_classes, slots, candidates)
    return table.part(fixed) + table.part(keys["upsample"]) + float(costs.mean(dim=1).sum())


def decoder_op_costs(table: LatencyTable, encoder: Encoder, base: Arch, num_classes: int, slots: int,
                     candidates: Sequence[str] = SEARCH_CANDIDATES) -> torch.Tensor:
    """Table latency (ms) of every candidate op in every slot of the decoder supernet of ``base``: the (S, M) costs
    of ``DecoderSupernet.expected_latency`` (the decoder search's latency term, ``stnas.decoder_latency``).

    Slot order is the supernet's: SP-TCN ``slots // len(dilations)`` slots per dilation, in order; ``mstcn`` the
    trunk's slots (4 per residual layer, at ``channels`` on the coarse map) then, per finer scale coarse to fine,
    its two path ops and its fusion op (at ``fuse_channels``, dilation 1, on that scale's map) - the keys of
    ``multiscale_signatures``. ``slots`` (the supernet's count) tells whether an mstcn trunk is searched.

    Raises:
        ValueError: a decoder other than ``sptcn`` / ``mstcn``, or a slot count the decoder cannot have.
        MissingLatencyError: an op is missing from the table.
    """
    rows: list[list[float]] = []
    if base.decoder == "mstcn":
        channels, hws = decoder_inputs(encoder, base)
        op = multiscale_signatures(base, channels, num_classes, hws, encoder.img_size)["op"]
        fine = OPS_PER_SCALE * (len(base.scales) - 1)
        trunk = slots - fine
        per = trunk // len(base.dilations) if trunk else 0
        if trunk < 0 or (trunk and per * len(base.dilations) != trunk):
            raise ValueError(f"an mstcn supernet over {len(base.scales)} scales with dilations {list(base.dilations)} "
                             f"cannot have {slots} slots")
        rows = [[table.part(op(n, base.channels, base.dilations[k // per], hws[0])) for n in candidates]
                for k in range(trunk)]
        rows += [[table.part(op(n, base.fuse_channels, 1, hws[1 + k // OPS_PER_SCALE])) for n in candidates]
                 for k in range(fine)]
    elif base.decoder == "sptcn":
        last = len(encoder.depths) - 1
        keys = decoder_signatures(base, encoder.out_channels[last], num_classes, encoder.feature_hw(last),
                                  encoder.img_size)
        per = slots // len(base.dilations)
        if per * len(base.dilations) != slots or per == 0:
            raise ValueError(f"an sptcn supernet with dilations {list(base.dilations)} cannot have {slots} slots")
        rows = [[table.part(keys["op"](n, base.dilations[k // per])) for n in candidates] for k in range(slots)]
    else:
        raise ValueError(f"decoder op latencies exist for the sptcn and mstcn decoders, not {base.decoder!r}")
    return torch.tensor(rows, dtype=torch.float32)


def _sync_arch(model: nn.Module, dist_info: DistInfo) -> None:
    """Give every rank rank 0's architecture weights (DDP keeps them equal already; this makes it a guarantee)."""
    if not dist_info.enabled:
        return
    with torch.no_grad():
        for p in arch_parameters(model):
            torch.distributed.broadcast(p.data, 0)


@dataclass
class _Phase:
    """One supernet training phase (encoder or decoder search).

    ``arch_lr``: the architecture weights' lr, or a function of the number of architecture steps of the phase.
    ``after_arch_backward``: see ``search_step``. ``state``: what the phase accumulates across steps (saved in its
    checkpoint, restored on resume).
    """

    name: str
    model: nn.Module  # a VideoSegmenter or MultiScaleSegmenter holding a supernet
    epochs: int
    warmup_epochs: int
    loss_terms: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
    on_step: Callable[[int, int, dict[str, float]], None]
    arch_lr: float | Callable[[int], float] = 3e-4
    after_arch_backward: Callable[[], None] | None = None
    seconds: float = 0.0
    used_arch_lr: float = 0.0
    state: dict[str, Any] = field(default_factory=dict)


def _run_phase(phase: _Phase, ctx: SearchContext) -> None:
    """Train ``phase.model`` (a model holding a supernet) for its epochs, with checkpoints and exact resume, in the
    engine's epoch loop."""
    cfg, dist_info, train_ds = ctx.cfg, ctx.dist_info, ctx.train_ds
    device = ctx.device
    model = phase.model
    seed = _phase_seed(cfg.train.seed, phase.name)
    set_arch_trainable(model, True)  # DDP registers what requires grad now; warm-up freezes later (see below)
    halves: tuple[Any, Any] | None = None
    if cfg.stnas.mode == "alternating":
        # first-order DARTS: weights on one half of the training items, architecture on the other (fixed split)
        perm = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(seed)).tolist()
        cut = len(perm) // 2
        halves = (Subset(train_ds, sorted(perm[:cut])), Subset(train_ds, sorted(perm[cut:])))
    weight_ds = train_ds if halves is None else halves[0]
    steps = steps_per_epoch(len(weight_ds), cfg.train.batch_size, dist_info.world_size, cfg.train.max_steps_per_epoch)
    arch_steps = max(phase.epochs - phase.warmup_epochs, 0) * steps  # one arch step per weight step, both modes
    lr = phase.arch_lr(max(arch_steps, 1)) if callable(phase.arch_lr) else float(phase.arch_lr)
    phase.used_arch_lr = lr
    weight_opt = torch.optim.AdamW(weight_parameters(model), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                   betas=cfg.train.betas)
    arch_opt = ClippedAdam(arch_parameters(model), max_norm=ARCH_GRAD_CLIP, lr=lr, betas=ARCH_BETAS,
                           weight_decay=0.0)
    ckpt = ctx.run_dir / "checkpoints" / _ckpt_name(phase.name)
    start = 0
    if ctx.resume and ckpt.is_file():
        state = load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        weight_opt.load_state_dict(state["weight_optimizer"])
        arch_opt.load_state_dict(state["arch_optimizer"])
        start, phase.seconds = int(state["epoch"]) + 1, float(state.get("seconds", 0.0))
        phase.state.update(state.get("phase_state") or {})
        logger.info("%s search: resumed from %s at epoch %d", phase.name, ckpt, start)
    for kind in _kinds(phase.name):
        ctx.run_logger.truncate_after(kind, "epoch", start - 1)
    if start >= phase.epochs:
        set_arch_trainable(model, False)
        return

    # Freezing the arch weights during warm-up after DDP has registered them leaves them without gradients in
    # those steps: DDP must then be told that parameters may go unused (otherwise it waits for them forever).
    net: nn.Module = model
    if dist_info.enabled:
        net = nn.parallel.DistributedDataParallel(model, find_unused_parameters=phase.warmup_epochs > start)
    ignore = cfg.data.ignore_index

    def loaded(ds: Any, s: int, epoch: int) -> DataLoader:
        return epoch_loader(ds, batch_size=cfg.train.batch_size, seed=s, epoch=epoch, dist_info=dist_info, **loading)

    scaler = grad_scaler(device, cfg.train.amp)
    if ctx.resume and ckpt.is_file() and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    loading = loader_options(device, cfg.data.num_workers, cfg.data.persistent_workers)

    def loss_fn(batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        frames = batch["frames"].to(device, non_blocking=True)  # (B, T, 3, H, W)
        masks = batch["masks"].to(device, non_blocking=True)  # (B, T, H, W)
        with autocast(device, cfg.train.amp):  # parameters, alphas and betas included, stay float32
            logits = net(frames)  # (B, T, K, H, W)
            task = segmentation_loss(logits.float(), masks, ignore)
        return phase.loss_terms(task)

    for epoch in range(start, phase.epochs):
        t0 = time.perf_counter()
        seed_everything(epoch_seed(seed, epoch))
        train_ds.set_epoch(epoch)
        arch_on = arch_warmup(model, epoch, phase.warmup_epochs)
        arch_iter = None
        if halves is not None:
            arch_iter = _cycle(lambda e=epoch: loaded(halves[1], seed + 7, e))
        model.train()

        def step(i: int, batch: Any, epoch: int = epoch, arch_on: bool = arch_on, arch_iter: Any = arch_iter
                 ) -> dict[str, float]:
            arch_batch = next(arch_iter) if (arch_iter is not None and arch_on) else None
            logs = search_step(model, loss_fn, weight_opt, arch_opt, batch, mode=cfg.stnas.mode, arch_batch=arch_batch,
                               scaler=scaler, after_arch_backward=phase.after_arch_backward)
            phase.on_step(epoch * steps + i, epoch, {**logs, "arch_trainable": float(arch_on)})
            return logs

        logs = run_epoch(loaded(weight_ds, seed, epoch), step, steps=steps,
                         desc=f"{phase.name} search {epoch + 1}/{phase.epochs}",
                         show_progress=ctx.show_progress and dist_info.is_main)
        sync_buffers(model, dist_info)  # BN statistics: rank 0's, as the engine does
        _sync_arch(model, dist_info)
        phase.seconds += time.perf_counter() - t0
        ctx.run_logger.log(_kinds(phase.name)[-1], epoch, epoch=epoch, loss=mean_loss(logs), seconds=phase.seconds)
        if dist_info.is_main:
            save_checkpoint(ckpt, {
                "phase": phase.name,
                "epoch": epoch,
                "model": model.state_dict(),
                "weight_optimizer": weight_opt.state_dict(),
                "arch_optimizer": arch_opt.state_dict(),
                "scaler": scaler.state_dict(),
                "seconds": phase.seconds,
                "phase_state": phase.state,
                "config": config_to_dict(cfg),
            })
        barrier()
        logger.info("%s search epoch %d: loss %.4f", phase.name, epoch, mean_loss(logs))
    set_arch_trainable(model, False)


def _with_context(cfg: Config, run_dir: str | Path, context: SearchContext | None, resume: bool,
                  show_progress: bool) -> tuple[SearchContext, bool]:
    if context is not None:
        return context, False
    return SearchContext.open(cfg, run_dir, resume=resume, show_progress=show_progress), True


# ---------------------------------------------------------------------------------------------- the two searches


def search_encoder_depths(
    cfg: Config,
    run_dir: str | Path,
    *,
    lam: float | None = None,
    resume: bool = False,
    show_progress: bool = True,
    context: SearchContext | None = None,
    budget_ms: float | None = None,
    decoder_searched: bool = False,
) -> EncoderSearch:
    """The encoder depth search (module docstring, step 1): train a depth supernet and decide its depths.

    Under ``stnas.depth_rule = "paper"`` the supernet trains on Eq. 2 with ``lam`` and the shrink rule derives the
    depths. Under ``"truncated"`` it trains on the task loss (lambda 0 in Eq. 2), then the truncated validation losses
    decide (``vidnas.search.stnas.depth``): ``argmin L + lam * T``, or with ``budget_ms`` the most accurate depths
    whose table latency (encoder + decoder) fits. Every arch step logs each alpha's task-only gradient
    ``g_i = dL_task/d alpha_i``; their means give the paper rule's flip lambdas ``-E[g_i] / s_i``.

    Args:
        cfg: resolved config (``data``, ``model``, ``train`` for the optimiser and batches, ``stnas``).
        run_dir: run directory (its ``checkpoints/encoder_search.pt``, ``latency_table.json``, ``metrics.jsonl``).
        lam: lambda; None = ``cfg.stnas.lam``.
        resume: continue from the phase checkpoint (exactly).
        show_progress: tqdm bars (rank 0).
        context: a shared ``SearchContext`` (``search_stnas`` passes one); None = open one for this call.
        budget_ms: latency budget (ms) of encoder + decoder; None = ``cfg.stnas.target_latency_ms`` (None: lambda).
        decoder_searched: the decoder will be searched after this (its budget share is then an estimate:
            ``decoder_latency_estimate``).

    Returns:
        An ``EncoderSearch`` (the trained supernet, its alphas, the decision and the derived depths).

    Raises:
        BudgetError: before any training, when no depth combination fits the budget.
    """
    ctx, own = _with_context(cfg, run_dir, context, resume, show_progress)
    lam = float(cfg.stnas.lam if lam is None else lam)
    budget_ms = cfg.stnas.target_latency_ms if budget_ms is None else float(budget_ms)
    rule = cfg.stnas.depth_rule
    if budget_ms is not None and rule != "truncated":
        raise ValueError(f"a latency budget needs stnas.depth_rule=truncated, not {rule!r}")
    threshold = float(cfg.stnas.threshold)
    seed_everything(_phase_seed(cfg.train.seed, "encoder"))
    base = arch_from_config(cfg)
    model = build_model(cfg, base, num_classes=ctx.num_classes)
    supernet = DepthSupernet(model.encoder)
    model.encoder = supernet
    model.to(ctx.device)  # after wrapping: the alphas go with the weights
    table = _latency_table(ctx, supernet.encoder, need_parts=budget_ms is not None)
    lat = table.latencies_for(supernet.encoder)
    fixed_ms, decoder_ms = 0.0, None
    if budget_ms is not None:
        candidates = tuple(cfg.stnas.candidates or SEARCH_CANDIDATES)
        decoder_ms = decoder_latency_estimate(table, supernet.encoder, base, ctx.num_classes,
                                              searched=decoder_searched, candidates=candidates)
        fixed_ms = table.fixed_encoder_latency(supernet.encoder) + decoder_ms
        lowest = min_latency(lat, fixed_ms)
        if lowest > budget_ms:  # say it now, not after the epochs
            raise BudgetError(
                f"no depth combination fits the latency budget {budget_ms:g} ms: the smallest table latency is "
                f"{lowest:.3f} ms (every stage at its first block: {lowest - fixed_ms:.3f} ms of blocks, "
                f"{fixed_ms - decoder_ms:.3f} ms of stem / downsamples / outputs, {decoder_ms:.3f} ms decoder"
                + (", estimated for a searched decoder" if decoder_searched else "") + f"; table {table.path})")
    lam_train = lam if rule == "paper" else 0.0
    flat_lat = [s for row in lat for s in row]
    phase_state: dict[str, Any] = {"grad_sum": [0.0] * len(flat_lat), "grad_steps": 0}

    def terms(task: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return encoder_search_loss(task, supernet, lat, lam_train)

    last_grad: list[float] = []

    def task_grads() -> None:
        # g_task = dL/d alpha - lam_train * sign(alpha) * s: the penalty's gradient is known exactly (Eq. 2)
        g = []
        for stage, row in zip(supernet.stages, lat, strict=True):
            if stage.alpha is None or stage.alpha.grad is None:
                g += [0.0] * len(row)
                continue
            pen = lam_train * torch.sign(stage.alpha.detach()) * torch.as_tensor(row, dtype=stage.alpha.dtype)
            g += (stage.alpha.grad.detach() - pen.to(stage.alpha.device)).tolist()
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

    phase = _Phase("encoder", model, cfg.stnas.encoder_epochs, 0, terms, on_step, arch_lr=cfg.stnas.arch_lr,
                   after_arch_backward=task_grads, state=phase_state)
    _run_phase(phase, ctx)
    _sync_arch(model, ctx.dist_info)

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


def _fixed_batches(ds: Any, batch_size: int, count: int, *, shuffle_seed: int | None = None) -> list[Any]:
    """The first ``count`` batches of ``ds`` (in order, or shuffled by ``shuffle_seed``), held in memory."""
    if shuffle_seed is None:
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    else:
        loader = epoch_loader(ds, batch_size=batch_size, seed=shuffle_seed, epoch=0)
    out = []
    for batch in loader:
        if len(out) >= count:
            break
        out.append(batch)
    return out


def _truncated_decision(ctx: SearchContext, model: nn.Module, supernet: DepthSupernet,
                        lat: list[list[float]], *, lam: float, budget_ms: float | None,
                        fixed_ms: float) -> DepthDecision:
    """Measure the truncated losses and decide (rank 0's decision on every rank)."""
    cfg, device, ignore = ctx.cfg, ctx.device, ctx.cfg.data.ignore_index
    val_ds = ctx.val_ds
    if val_ds is None or len(val_ds) == 0:
        logger.warning("no validation frames in split %r: the truncated losses use training clips",
                       cfg.data.val_split)
        val_ds = ctx.train_ds
    bs = cfg.train.batch_size
    ctx.train_ds.set_epoch(0)
    seed = _phase_seed(cfg.train.seed, "encoder")
    val_batches = _fixed_batches(val_ds, bs, cfg.stnas.depth_val_batches)
    calib = _fixed_batches(ctx.train_ds, bs, cfg.stnas.bn_calib_batches, shuffle_seed=seed + 17)

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
                         path=lambda_path(losses, full, lat, fixed_ms=fixed_ms), val_batches=len(val_batches))


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
    lam: float | None = None,
) -> DecoderSearch:
    """The decoder op search (module docstring, step 2): train a TCNNAS decoder supernet and derive its ops.

    The betas' lr is ``stnas.beta_travel / A`` with ``A = (decoder_epochs - warmup_epochs) * steps per epoch`` the
    architecture steps of the phase: Adam moves a beta by about its lr per step, so every beta can travel about
    ``beta_travel`` in total, whatever the budget (None: ``stnas.arch_lr`` per step). Every step logs the mean
    entropy of softmax(beta) over the slots (``beta_entropy``; uniform: ln 7 = 1.946 nats) and the mean largest
    weight (``beta_max``).

    Args:
        cfg: resolved config; the decoder must be ``sptcn`` or ``mstcn``.
        run_dir: run directory (its ``checkpoints/decoder_search.pt``, ``metrics.jsonl``).
        encoder: the encoder to search on (e.g. ``EncoderSearch.derived_encoder()``, with the weights trained
            there); None = the config's encoder. Not modified: the search trains a copy.
        resume: continue from the phase checkpoint (exactly).
        show_progress: tqdm bars (rank 0).
        context: a shared ``SearchContext``; None = open one for this call.
        seed_index: which of ``stnas.decoder_seeds`` searches this is (0 = the only one by default); seed ``k > 0``
            has its own phase seed, checkpoint ``decoder_s{k}_search.pt`` and log kinds ``decoder_search_s{k}``,
            ``beta_s{k}``.
        lam: lambda of the latency term (``stnas.decoder_latency``): the loss is ``task + lam * E[T]``,
            ``E[T] = sum_s softmax(beta_s) . costs_s`` the expected table latency (ms) of the slots' ops
            (``decoder_op_costs``; logged as ``decoder_latency``); None = ``cfg.stnas.lam``. Without
            ``decoder_latency`` the loss is the task loss alone [ST-NAS].

    Raises:
        ValueError: the config's decoder is neither ``sptcn`` nor ``mstcn``.
    """
    base = arch_from_config(cfg)
    _check_searchable_decoder(base)
    ctx, own = _with_context(cfg, run_dir, context, resume, show_progress)
    name = _decoder_phase(seed_index)
    seed_everything(_phase_seed(cfg.train.seed, name))
    if encoder is None:
        encoder = build_encoder(base.encoder, img_size=(cfg.data.height, cfg.data.width), depths=base.depths,
                                weights=cfg.model.weights)
    else:
        encoder = encoder.with_depths(encoder.depths)  # a copy: every seed starts from the same weights
    candidates = cfg.stnas.candidates or SEARCH_CANDIDATES
    model: nn.Module
    if base.decoder == "mstcn":
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
    kind_search, kind_beta = _kinds(name)[:2]
    lam = float(cfg.stnas.lam if lam is None else lam)
    costs: torch.Tensor | None = None
    if cfg.stnas.decoder_latency:
        table = _latency_table(ctx, encoder, need_parts=True)
        costs = decoder_op_costs(table, encoder, base, ctx.num_classes, len(supernet.slots),
                                 supernet.candidates).to(ctx.device)
        logger.info("decoder search: latency term on, lambda %g; op latency %.2f (cheapest ops) .. %.2f ms "
                    "(dearest)", lam, float(costs.min(dim=1).values.sum()), float(costs.max(dim=1).values.sum()))

    def terms(task: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if costs is None:
            return task, {"task_loss": float(task.detach())}
        latency = supernet.expected_latency(costs)  # ms, differentiable in the betas
        return task + lam * latency, {"task_loss": float(task.detach()), "decoder_latency": float(latency.detach())}

    def on_step(step: int, epoch: int, logs: dict[str, float]) -> None:
        weights = supernet.op_weights()
        entropy, top = _entropy(weights)
        ctx.run_logger.log(kind_search, step, epoch=epoch, ops=list(supernet.derive()), beta_entropy=entropy,
                           beta_max=top, **logs)
        ctx.run_logger.log(kind_beta, step, epoch=epoch, **{
            f"{k:02d}_{op}": w for k, row in enumerate(weights)
            for op, w in zip(supernet.candidates, row, strict=True)})

    travel = cfg.stnas.beta_travel
    arch_lr: float | Callable[[int], float] = cfg.stnas.arch_lr if travel is None else (lambda n: float(travel) / n)
    phase = _Phase(name, model, cfg.stnas.decoder_epochs, cfg.stnas.warmup_epochs, terms, on_step, arch_lr=arch_lr)
    _run_phase(phase, ctx)
    _sync_arch(model, ctx.dist_info)
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
    lam: float | None = None,
) -> tuple[list[DecoderSearch], dict[str, Any]]:
    """``stnas.decoder_seeds`` decoder searches from the same encoder, and their consensus.

    Returns:
        (every seed's ``DecoderSearch``, ``record.decoder_consensus(...)``: the ops derived from the softmax weights
        averaged over the seeds, the per-slot agreement between seeds, ...).
    """
    ctx, own = _with_context(cfg, run_dir, context, resume, show_progress)
    runs = [search_decoder_ops(cfg, run_dir, encoder=encoder, context=ctx, seed_index=k, lam=lam)
            for k in range(cfg.stnas.decoder_seeds)]
    consensus = decoder_consensus([r.weights for r in runs], runs[0].candidates)
    if own:
        ctx.close()
    return runs, consensus


# ------------------------------------------------------------------------------------------------------ the search


def search_stnas(
    cfg: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    show_progress: bool = True,
    lam: float | None = None,
    skip_encoder: bool = False,
    skip_decoder: bool = False,
    save_init: bool = True,
    plots: bool = True,
) -> StnasResult:
    """Run the ST-NAS search (see the module docstring) and write its outputs into ``run_dir``.

    Args:
        cfg: resolved config (``data``, ``model``, ``train`` for the optimiser and batches, ``stnas``).
        run_dir: run directory (created).
        resume: continue from the phase checkpoints in ``run_dir/checkpoints`` (exactly).
        show_progress: tqdm bars (rank 0).
        lam: lambda; None = ``cfg.stnas.lam``.
        skip_encoder: keep the config's encoder depths, search the decoder only.
        skip_decoder: keep the config's decoder, search the encoder depths only.
        save_init: write ``derived_init.pt``.
        plots: draw the PNG plots (matplotlib).

    Returns:
        The ``StnasResult`` (also saved as ``search_summary.json``).

    Raises:
        FileNotFoundError: ``resume`` without any checkpoint in ``run_dir``.
        ValueError: a bad ``stnas`` value, both phases skipped, or a decoder search on a decoder without
            op slots (not ``sptcn`` / ``mstcn``).
        BudgetError: no depth combination fits ``stnas.target_latency_ms`` (raised before training).
    """
    run_dir = Path(run_dir)
    lam = float(cfg.stnas.lam if lam is None else lam)
    threshold = float(cfg.stnas.threshold)
    check_stnas_config(cfg)
    if lam < 0:
        raise ValueError(f"lambda must be >= 0, got {lam}")
    if skip_encoder and skip_decoder:
        raise ValueError("nothing to search: both the encoder and the decoder search are skipped")
    if skip_encoder and cfg.stnas.target_latency_ms is not None:
        raise ValueError("a latency budget decides encoder depths: it cannot be used with skip_encoder")
    base = arch_from_config(cfg)
    if not skip_decoder:
        _check_searchable_decoder(base)
    ckpt_dir = run_dir / "checkpoints"
    if resume and not any(ckpt_dir.glob("*_search.pt")):
        raise FileNotFoundError(f"--resume: no search checkpoint in {ckpt_dir}")

    ctx = SearchContext.open(cfg, run_dir, resume=resume, show_progress=show_progress)
    enc = None if skip_encoder else search_encoder_depths(cfg, run_dir, lam=lam, context=ctx,
                                                          decoder_searched=not skip_decoder)
    decs: list[DecoderSearch] = []
    consensus: dict[str, Any] | None = None
    if not skip_decoder:
        # the derived depths, with the weights trained above; else the config's encoder
        encoder = None if enc is None else enc.derived_encoder()
        decs, consensus = search_decoder_seeds(cfg, run_dir, encoder=encoder, context=ctx, lam=lam)

    arch = derive_arch(base, depths=None if enc is None else enc.depths,
                       decoder_ops=None if consensus is None else consensus["ops"], threshold=threshold,
                       name="stnas")
    result = _result(run_dir, arch, base, lam, threshold, enc, decs, consensus, cfg)
    _write(ctx, result, enc, decs, save_init=save_init, plots=plots)
    ctx.close()
    barrier()
    return result


def _result(run_dir: Path, arch: Arch, base: Arch, lam: float, threshold: float, enc: EncoderSearch | None,
            decs: list[DecoderSearch], consensus: dict[str, Any] | None, cfg: Config) -> StnasResult:
    result = StnasResult(run_dir=run_dir, arch=arch, arch_path=run_dir / "arch.json", lam=lam, threshold=threshold,
                         full_depths=base.depths, depths=base.depths, depth_rule=cfg.stnas.depth_rule)
    if enc is not None:
        result.full_depths, result.depths, result.alphas = enc.full_depths, enc.depths, enc.alphas
        result.latency_table_path = enc.table.path
        result.full_latency_ms, result.derived_latency_ms = enc.full_latency_ms, enc.derived_latency_ms
        result.encoder_seconds = enc.seconds
        result.depth = enc.decision.to_dict() if enc.decision is not None else None
        try:
            result.model_latency_ms = enc.table.model_latency(enc.supernet.encoder, enc.depths, arch,
                                                              enc.model.num_classes)
            result.full_model_latency_ms = enc.table.model_latency(enc.supernet.encoder, None, base,
                                                                   enc.model.num_classes)
        except KeyError as e:  # a given table without the decoder parts: block latency only
            logger.info("no full-model table latency: %s", e)
    if decs:
        # one seed: its raw betas; several: log of the averaged softmax weights (argmax = the derived op)
        result.betas = decs[0].betas if len(decs) == 1 or consensus is None else consensus["betas"]
        result.decoder_ops, result.candidates = tuple(consensus["ops"]), decs[0].candidates
        result.decoder_seconds = sum(d.seconds for d in decs)
        result.decoder = {**consensus, "arch_lr": decs[0].arch_lr, "beta_travel": cfg.stnas.beta_travel,
                          "latency_lambda": lam if cfg.stnas.decoder_latency else None,
                          "betas_per_seed": [d.betas for d in decs]}
    return result


def _write(ctx: SearchContext, result: StnasResult, enc: EncoderSearch | None, decs: list[DecoderSearch], *,
           save_init: bool, plots: bool) -> None:
    """``arch.json`` with its record (every rank its own under torchrun), then, on rank 0, the other files."""
    cfg, run_dir, dist_info = ctx.cfg, ctx.run_dir, ctx.dist_info
    device = None if enc is None else enc.table.device
    record = dict(alphas=result.alphas, betas=result.betas, lam=result.lam, threshold=result.threshold,
                  latency_table_path=result.latency_table_path, latency_table_device=device,
                  beta_columns=result.candidates, depth=result.depth, decoder=result.decoder)
    if dist_info.enabled:
        # each rank records what it derived; the test compares them
        write_search_arch(run_dir / "ranks" / f"rank{dist_info.rank}_arch.json", result.arch, **record,
                          extra={"rank": dist_info.rank, "world_size": dist_info.world_size})
    if not dist_info.is_main:
        return
    # no timing in arch.json: the same command gives the same file (times are in search_summary.json)
    write_search_arch(result.arch_path, result.arch, **record, extra={
        "encoder_epochs": 0 if enc is None else cfg.stnas.encoder_epochs,
        "decoder_epochs": 0 if not decs else cfg.stnas.decoder_epochs,
        "warmup_epochs": cfg.stnas.warmup_epochs,
        "mode": cfg.stnas.mode,
        "arch_lr": cfg.stnas.arch_lr,
        "arch_grad_clip": ARCH_GRAD_CLIP,
        "full_depths": None if result.full_depths is None else list(result.full_depths),
        "full_latency_ms": result.full_latency_ms,
        "derived_latency_ms": result.derived_latency_ms,
        "model_latency_ms": result.model_latency_ms,
        "full_model_latency_ms": result.full_model_latency_ms,
    })
    result.files.append(result.arch_path)
    if result.latency_table_path is not None:
        result.files.append(run_dir / "latency_table.json")
    if save_init:
        # encoder: the decoder search's (derived, trained further there) or the depth supernet's derived copy;
        # decoder: seed 0's decoder supernet reduced to the derived ops (mixing weights folded in), or the encoder
        # search's baseline decoder; BatchNorm recalibrated on training batches
        if decs:
            encoder = decs[0].model.encoder
            decoder = decs[0].supernet.derived_decoder(result.decoder_ops)
        else:
            assert enc is not None
            encoder, decoder = enc.derived_encoder(), enc.model.decoder
        ctx.train_ds.set_epoch(0)
        calib = _fixed_batches(ctx.train_ds, cfg.train.batch_size, max(cfg.stnas.bn_calib_batches, 1),
                               shuffle_seed=_phase_seed(cfg.train.seed, "decoder") + 17)
        result.init_checkpoint = save_derived_init(run_dir / "derived_init.pt", cfg, result.arch, ctx.source,
                                                   encoder=encoder, decoder=decoder, calib_batches=calib,
                                                   device=ctx.device)
        result.files.append(result.init_checkpoint)
    result.files.append(run_dir / "metrics.jsonl")
    if plots:
        result.files.extend(draw_search(run_dir, result))
    report = run_dir / "report.md"
    atomic_write_text(report, search_report(result))
    result.files.append(report)
    result.files.append(run_dir / "search_summary.json")
    atomic_write_json(run_dir / "search_summary.json", result.to_dict())
