"""The phase runner of the ST-NAS search [ST-NAS Sec. 3.2, 3.3]: what both phases share (``SearchContext``: the run
directory, its log, the data, the processes, lambda, the latency table) and one resumable supernet training phase
(``Phase``, ``run_phase``) with its DDP synchronisation (``sync_arch``).

A phase trains in the engine's outer loop (``vidnas.engine.loop.fit``: per-epoch re-seeding, BatchNorm sync and
barrier under torchrun): network weights with AdamW (``cfg.train``), architecture weights with ``ClippedAdam``, one
``step.search_step`` per batch (joint, or alternating on two fixed halves of the training data; its updates through
the engine's ``backward_step``). Resume: a checkpoint per phase (``checkpoints/encoder_search.pt``,
``decoder_search.pt``, ``decoder_s{k}_search.pt``) holds the supernet weights (arch weights included), both
optimisers, the epoch, the elapsed time and what the phase accumulates (``Phase.state``). Every epoch re-seeds from
``(train.seed, phase, epoch)`` and each phase's model is built right after seeding with ``phase_seed``, so
``resume=True`` continues exactly where the uninterrupted search would be (tested: same alphas and betas to the bit).

Lambda is ``stnas.lam`` (CLI ``--lambda``), read once into ``SearchContext.lam``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from vidnas.checkpoint import load_checkpoint, save_checkpoint
from vidnas.config import Config, config_to_dict
from vidnas.data import build_datasets, selection_datasets
from vidnas.engine.distributed import DistInfo, broadcast_object, init_distributed
from vidnas.engine.logger import RunLogger
from vidnas.engine.loop import EpochResult, epoch_loader, fit, steps_per_epoch
from vidnas.engine.losses import segmentation_loss
from vidnas.models import Arch, arch_from_config
from vidnas.models.encoders import Encoder
from vidnas.models.ops import SEARCH_CANDIDATES
from vidnas.precision import autocast, grad_scaler, loader_options
from vidnas.search.latency import LatencyTable, complete_model_parts, measure_latency_table
from vidnas.search.stnas.depth import DEPTH_RULES
from vidnas.search.stnas.step import ARCH_BETAS, ARCH_GRAD_CLIP, SEARCH_MODES, ClippedAdam, arch_warmup, search_step
from vidnas.search.stnas.supernet import arch_parameters, set_arch_trainable, weight_parameters

__all__ = [
    "refuse_selection_split",
    "SEARCHABLE_DECODERS",
    "SearchContext",
    "open_context",
    "check_stnas_config",
    "check_searchable_decoder",
    "decoder_phase",
    "phase_kinds",
    "phase_seed",
    "fixed_batches",
    "sync_arch",
    "Phase",
    "run_phase",
]

logger = logging.getLogger(__name__)

_PHASE_SALT = {"encoder": 1, "decoder": 2}  # separates the two phases' seeds
_SEED_SALT = 1000  # decoder seed k > 0: phase seed + k * _SEED_SALT


def decoder_phase(k: int) -> str:
    """Phase name of decoder search seed ``k``: ``decoder`` (k = 0, as before seeds existed), ``decoder_s{k}``."""
    return "decoder" if k == 0 else f"decoder_s{k}"


def _ckpt_name(phase: str) -> str:
    return f"{phase}_search.pt"  # encoder_search.pt, decoder_search.pt, decoder_s1_search.pt, ...


def phase_kinds(phase: str) -> tuple[str, ...]:
    """metrics.jsonl record kinds of a phase (a resumed phase drops those after its checkpoint)."""
    if phase == "encoder":
        return ("encoder_search", "alpha", "alpha_grad", "encoder_epoch")
    suffix = phase[len("decoder"):]
    return (f"decoder_search{suffix}", f"beta{suffix}", f"decoder_epoch{suffix}")


# ------------------------------------------------------------------------------------------------------ context


@dataclass
class SearchContext:
    """What both phases of one search share: the run directory, its log, the training data, the processes, lambda and
    the latency table.

    Build it with ``SearchContext.open``; ``close()`` flushes the log. ``lam`` is lambda (``stnas.lam``, the CLI's
    ``--lambda``): Eq. 2's weight of the encoder's table latency and, with ``stnas.decoder_latency``, of the decoder
    ops' expected latency.
    """

    cfg: Config
    run_dir: Path
    dist_info: DistInfo
    run_logger: RunLogger
    source: Any
    train_ds: Any
    lam: float
    resume: bool = False
    show_progress: bool = True
    val_ds: Any = None
    table: LatencyTable | None = None  # the latency table of this search, once read or measured (latency_table)
    decided_on: dict[str, Any] = field(default_factory=dict)  # the clips of the depth rule (DepthDecision.decided_on)

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
        decided_on: dict[str, Any] = {"split": cfg.data.val_split}
        if cfg.data.selection_videos:  # decisions on videos held out of the training data, never on val_split
            train_ds, val_ds = selection_datasets(cfg, source)
            decided_on = {"split": cfg.data.train_split, "videos": list(cfg.data.selection_videos)}
        if len(train_ds) == 0:
            raise ValueError(f"no annotated training frames in split {cfg.data.train_split!r} of {cfg.data.format}")
        ctx = cls(cfg, run_dir, dist_info, run_logger, source, train_ds, float(cfg.stnas.lam), resume,
                  show_progress, val_ds)
        ctx.decided_on = decided_on
        return ctx

    @property
    def device(self) -> torch.device:
        return torch.device(self.cfg.train.device)

    @property
    def num_classes(self) -> int:
        return int(self.source.num_classes)

    def close(self) -> None:
        self.run_logger.close()

    def latency_table(self, encoder: Encoder, *, need_parts: bool = False) -> LatencyTable:
        """The table of Eq. 2: the configured file, the one this run measured before (resume), or measure now.

        A table measured now holds every part of ``LatencyTable.model_latency`` (stem, outputs, decoder parts); a given
        table gets the missing ones measured only when ``need_parts`` (a latency budget). The run directory keeps the
        table used (``latency_table.json``: a copy of the given file, plus any part measured here).
        """
        cfg, run_dir, dist_info = self.cfg, self.run_dir, self.dist_info
        local = run_dir / "latency_table.json"
        base = arch_from_config(cfg)
        candidates = tuple(cfg.stnas.candidates or SEARCH_CANDIDATES)
        if self.table is not None:  # read or measured by the encoder phase: both phases price with the same numbers
            if not need_parts or self.table.has_model_parts(encoder, base, self.num_classes, candidates):
                return self.table
        data = None
        if cfg.stnas.latency_table:
            table = LatencyTable.load(cfg.stnas.latency_table)
            logger.info("latency table %s (%d blocks, %d parts)", table.path, len(table.blocks), len(table.parts))
            if dist_info.is_main:
                if need_parts:
                    complete_model_parts(table, encoder, base, self.num_classes, candidates)
                data = table.to_dict()
                if table.path is None or table.path.resolve() != local.resolve():
                    LatencyTable.from_dict(data).save(local)  # beside the result; arch.json records the given path
            given = table.path
            data = broadcast_object(data) if dist_info.enabled else data
            table = LatencyTable.from_dict(data, source=given)
        elif self.resume and local.is_file():
            table = LatencyTable.load(local)
        else:
            if dist_info.is_main:
                logger.info("measuring the block latencies of %s at %s (no stnas.latency_table given)",
                            encoder.name, encoder.img_size)
                measured = measure_latency_table(encoder)
                complete_model_parts(measured, encoder, base, self.num_classes, candidates)
                measured.save(local)
                data = measured.to_dict()
            # timings differ between processes: every rank must regularise with rank 0's
            data = broadcast_object(data) if dist_info.enabled else data
            table = LatencyTable.from_dict(data, source=local)
        table.latencies_for(encoder)  # fail now, naming the missing signature, not mid-epoch
        self.table = table
        return table


# the decoder families whose Slotted decoder the decoder search builds a supernet of (search_decoder_ops)
SEARCHABLE_DECODERS: tuple[str, ...] = ("sptcn", "mstcn", "arch2_space")


def check_searchable_decoder(base: Arch) -> None:
    """Refuse, at config time, a decoder search on a decoder without op slots (not ``Slotted``: ``head``, ``arch2``),
    on an mstcn fusion whose search is not built (``DecoderSupernet`` itself takes any ``Slotted`` decoder), or on
    the arch2 space at window 1 (its temporal candidates need a past frame)."""
    if base.decoder not in SEARCHABLE_DECODERS:
        names = " or ".join(SEARCHABLE_DECODERS)
        raise ValueError(f"the decoder search needs the {names} decoder, the config has {base.decoder!r}; "
                         "pass skip_decoder (--skip-decoder) to search the encoder only")
    if base.decoder == "mstcn" and base.fusion != "fpn":
        raise ValueError(f"the decoder search covers the mstcn decoder's fpn fusion, the config has model.fusion="
                         f"{base.fusion!r} (its search is not built; --set model.decoder=arch2_space searches a "
                         "space that contains arch2); use --set model.fusion=fpn, or pass skip_decoder "
                         "(--skip-decoder) to search the encoder only")
    if base.decoder == "arch2_space" and base.window < 2:
        raise ValueError(f"data.window={base.window}: the arch2 space's temporal candidates would read no past frame "
                         "(a search could pick one for nothing); search with data.window >= 2 (3 in "
                         "benchmarks/arch2_space_camvid.sh), or pass skip_decoder (--skip-decoder) to search the "
                         "encoder only")


def phase_seed(seed: int, phase: str) -> int:
    """The seed of a phase (``encoder``, ``decoder``, ``decoder_s{k}``) from ``train.seed``."""
    if phase.startswith("decoder_s"):
        return seed * 31 + _PHASE_SALT["decoder"] + _SEED_SALT * int(phase[len("decoder_s"):])
    return seed * 31 + _PHASE_SALT[phase]


def refuse_selection_split(cfg: Config, what: str) -> None:
    """ValueError for a ``data.selection_videos`` where ``what`` (the demo) does not use it yet: its final trainings
    would pick ``best.pt`` on it and its table reads another evaluation."""
    if cfg.data.selection_videos:
        raise ValueError(f"data.selection_videos={','.join(cfg.data.selection_videos)}: {what} does not use a "
                         "selection split yet; `vidnas search stnas` (one search or a sweep) and `vidnas train` do: "
                         "leave it empty here")


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
    if st.candidates and arch_from_config(cfg).decoder == "arch2_space":
        raise ValueError(f"stnas.candidates={','.join(st.candidates)}: the arch2_space decoder has its own candidates "
                         "per slot (vidnas.models.decoders.arch2_space.SLOTS); unset stnas.candidates")


def _cycle(make: Callable[[], DataLoader]) -> Iterator[Any]:
    """Endless batches from fresh loaders (the architecture half may be shorter than the weight half)."""
    while True:
        empty = True
        for batch in make():
            empty = False
            yield batch
        if empty:
            raise ValueError("the architecture half of the training data is empty")


def fixed_batches(ds: Any, batch_size: int, count: int, *, shuffle_seed: int | None = None) -> list[Any]:
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


# -------------------------------------------------------------------------------------------------------- phase


def sync_arch(model: nn.Module, dist_info: DistInfo) -> None:
    """Give every rank rank 0's architecture weights (DDP keeps them equal already; this makes it a guarantee)."""
    if not dist_info.enabled:
        return
    with torch.no_grad():
        for p in arch_parameters(model):
            torch.distributed.broadcast(p.data, 0)


@dataclass
class Phase:
    """One supernet training phase (encoder or decoder search).

    ``loss_terms``: the phase's gradient rule, ``task loss -> (loss, logs)`` (``step.encoder_search_loss``,
    ``step.decoder_search_loss``). ``on_step(step, epoch, logs)``: logs a step's records. ``arch_lr``: the
    architecture weights' lr, or a function of the number of architecture steps of the phase.
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


def run_phase(phase: Phase, ctx: SearchContext) -> None:
    """Train ``phase.model`` (a model holding a supernet) for its epochs, with checkpoints and exact resume, in the
    engine's ``fit``: ``begin`` sets the data epoch, the warm-up freeze and (alternating) the architecture batches;
    ``end`` broadcasts the architecture weights (``sync_arch``), logs the epoch and writes the phase checkpoint."""
    cfg, dist_info, train_ds = ctx.cfg, ctx.dist_info, ctx.train_ds
    device = ctx.device
    model = phase.model
    seed = phase_seed(cfg.train.seed, phase.name)
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
    for kind in phase_kinds(phase.name):
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
            out = net(frames)  # (B, T, K, H, W), or (logits, [aux logits...]) for decoders with auxiliary heads
            logits, aux = (out[0], out[1]) if isinstance(out, tuple) else (out, [])
            task = segmentation_loss(logits.float(), masks, ignore)
            for a in aux:  # arch2's auxiliary losses, as its training adds them (train.aux_weight)
                task = task + cfg.train.aux_weight * segmentation_loss(a.float(), masks, ignore)
        return phase.loss_terms(task)

    epoch_state: dict[str, Any] = {}  # what begin() sets up for the epoch's steps

    def begin(epoch: int) -> None:
        train_ds.set_epoch(epoch)
        epoch_state["arch_on"] = arch_warmup(model, epoch, phase.warmup_epochs)
        epoch_state["arch_iter"] = None if halves is None else _cycle(lambda: loaded(halves[1], seed + 7, epoch))
        model.train()

    def step(epoch: int, i: int, batch: Any) -> dict[str, float]:
        arch_on, arch_iter = epoch_state["arch_on"], epoch_state["arch_iter"]
        arch_batch = next(arch_iter) if (arch_iter is not None and arch_on) else None
        logs = search_step(model, loss_fn, weight_opt, arch_opt, batch, mode=cfg.stnas.mode, arch_batch=arch_batch,
                           scaler=scaler, after_arch_backward=phase.after_arch_backward)
        phase.on_step(epoch * steps + i, epoch, {**logs, "arch_trainable": float(arch_on)})
        return logs

    def end(res: EpochResult) -> None:
        sync_arch(model, dist_info)
        phase.seconds += res.seconds
        ctx.run_logger.log(phase_kinds(phase.name)[-1], res.epoch, epoch=res.epoch, loss=res.loss,
                           seconds=phase.seconds)
        if dist_info.is_main:
            save_checkpoint(ckpt, {
                "phase": phase.name,
                "epoch": res.epoch,
                "model": model.state_dict(),
                "weight_optimizer": weight_opt.state_dict(),
                "arch_optimizer": arch_opt.state_dict(),
                "scaler": scaler.state_dict(),
                "seconds": phase.seconds,
                "phase_state": phase.state,
                "config": config_to_dict(cfg),
            })
        logger.info("%s search epoch %d: loss %.4f", phase.name, res.epoch, res.loss)

    # fit re-seeds every epoch from (seed, epoch), syncs rank 0's BN statistics and holds a barrier after end()
    fit(step, lambda epoch: loaded(weight_ds, seed, epoch), epochs=phase.epochs, steps=steps, start_epoch=start,
        seed=seed, desc=f"{phase.name} search", begin=begin, end=end, model=model, dist_info=dist_info,
        show_progress=ctx.show_progress)
    set_arch_trainable(model, False)


def open_context(cfg: Config, run_dir: str | Path, context: SearchContext | None, resume: bool,
                 show_progress: bool) -> tuple[SearchContext, bool]:
    """``(context, False)`` when one is given, else ``(a new one, True)``: the caller closes what it opened."""
    if context is not None:
        return context, False
    return SearchContext.open(cfg, run_dir, resume=resume, show_progress=show_progress), True
