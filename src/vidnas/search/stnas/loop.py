"""The ST-NAS search loop [ST-NAS Sec. 3.2, 3.3, 4]: encoder depth search, then decoder op search, then ``arch.json``.

Two public searches a researcher can call from Python, each on its own supernet (the paper: "the encoder and decoder
NAS steps are performed separately"), and ``search_stnas``, which runs both and writes every output:

1. ``search_encoder_depths``. The latency table (``cfg.stnas.latency_table``, or every block of the full-depth encoder
   timed now by ``vidnas.search.latency.measure_latency_table`` and saved as ``latency_table.json``; under torchrun
   rank 0 measures and broadcasts). The model of the config with its encoder wrapped in a ``DepthSupernet`` (Eq. 1);
   network weights (AdamW, ``cfg.train``) and alphas (``ClippedAdam`` at ``stnas.arch_lr``) train on the loss of
   Eq. 2 (``step.encoder_search_loss``) for ``stnas.encoder_epochs``. Every step logs the task loss, the penalty,
   the expected latency and every alpha. The shrink rule with ``stnas.threshold`` derives the depths.
2. ``search_decoder_ops``. A new model: the derived encoder (carrying the weights trained in step 1) and an SP-TCN
   decoder supernet whose 16 slots are ``MixedOp``s over the seven candidates (``stnas.candidates``). Betas are
   frozen for ``stnas.warmup_epochs``, then train jointly with the weights (single level) or, with ``stnas.mode =
   "alternating"``, first-order DARTS on two halves of the training data. The task loss alone drives it. Derived op
   per slot: argmax of beta.
3. ``search_stnas`` writes (rank 0) ``arch.json`` (``record.write_search_arch``), ``derived_init.pt``,
   ``metrics.jsonl`` and TensorBoard (kinds ``encoder_search``, ``alpha``, ``decoder_search``, ``beta``), the plots
   and ``report.md`` (``report``), ``search_summary.json``; every rank writes ``ranks/rank{N}_arch.json``.

Both phases train in the engine's epoch loop (``vidnas.engine.loop``). Resume: a checkpoint per phase
(``checkpoints/encoder_search.pt``, ``checkpoints/decoder_search.pt``) holds the supernet weights (arch weights
included), both optimisers, the epoch and the elapsed time. Every epoch re-seeds from ``(train.seed, phase, epoch)``
and each phase's model is built right after seeding with a phase-specific seed, so ``resume=True`` continues exactly
where the uninterrupted search would be (tested: same alphas and betas to the bit).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from vidnas.checkpoint import load_checkpoint, save_checkpoint
from vidnas.config import Config, config_to_dict
from vidnas.engine.distributed import DistInfo, barrier, broadcast_object, init_distributed, sync_buffers
from vidnas.engine.logger import RunLogger
from vidnas.engine.loop import epoch_loader, epoch_seed, mean_loss, run_epoch, steps_per_epoch
from vidnas.engine.train import build_datasets, segmentation_loss
from vidnas.models import Arch, VideoSegmenter, arch_from_config, build_encoder, build_model
from vidnas.models.encoders import Encoder
from vidnas.models.ops import SEARCH_CANDIDATES
from vidnas.precision import autocast, grad_scaler, loader_options
from vidnas.search.latency import LatencyTable, measure_latency_table
from vidnas.search.stnas.derive import derive_arch, save_derived_init
from vidnas.search.stnas.record import StnasResult, write_search_arch
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
    "search_stnas",
]

logger = logging.getLogger(__name__)

_PHASE_SALT = {"encoder": 1, "decoder": 2}  # separates the two phases' seeds
_CKPT = {"encoder": "encoder_search.pt", "decoder": "decoder_search.pt"}
_KINDS = {  # metrics.jsonl record kinds of each phase (a resumed phase drops those after its checkpoint)
    "encoder": ("encoder_search", "alpha", "encoder_epoch"),
    "decoder": ("decoder_search", "beta", "decoder_epoch"),
}


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

    @classmethod
    def open(cls, cfg: Config, run_dir: str | Path, *, resume: bool = False, show_progress: bool = True
             ) -> SearchContext:
        """Check the config, start torchrun's process group if any, open the log and the training data.

        Raises:
            ValueError: bad ``stnas.mode`` or no annotated training frame.
        """
        if cfg.stnas.mode not in SEARCH_MODES:
            raise ValueError(f"stnas.mode={cfg.stnas.mode!r}; valid modes: {', '.join(SEARCH_MODES)}")
        run_dir = Path(run_dir)
        dist_info = init_distributed(cfg.train.device)
        run_logger = RunLogger(run_dir, enabled=dist_info.is_main)
        source, train_ds, _ = build_datasets(cfg)
        if len(train_ds) == 0:
            raise ValueError(f"no annotated training frames in split {cfg.data.train_split!r} of {cfg.data.format}")
        return cls(cfg, run_dir, dist_info, run_logger, source, train_ds, resume, show_progress)

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
        model: the ``VideoSegmenter`` whose encoder is the trained ``DepthSupernet``.
        supernet: that supernet (alphas; ``derived_encoder(threshold)`` gives the shortened encoder).
        table: the latency table of Eq. 2.
        latencies: s_i per stage, per block (ms), from the table.
        lam: lambda of Eq. 2.
        threshold: shrink-rule threshold.
        seconds: wall time of the phase (resumes included).
    """

    model: VideoSegmenter
    supernet: DepthSupernet
    table: LatencyTable
    latencies: list[list[float]]
    lam: float
    threshold: float
    seconds: float

    @property
    def alphas(self) -> list[list[float]]:
        return self.supernet.alphas()

    @property
    def depths(self) -> tuple[int, ...]:
        """The derived depths (shrink rule at ``threshold``)."""
        return self.supernet.derive(self.threshold)

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
        return self.supernet.expected_latency(self.latencies, self.threshold)


@dataclass
class DecoderSearch:
    """The outcome of ``search_decoder_ops``: the model whose decoder is the trained ``DecoderSupernet``."""

    model: VideoSegmenter
    supernet: DecoderSupernet
    seconds: float

    @property
    def betas(self) -> list[list[float]]:
        return self.supernet.betas()

    @property
    def ops(self) -> tuple[str, ...]:
        """The derived op per slot (argmax of beta)."""
        return self.supernet.derive()

    @property
    def candidates(self) -> tuple[str, ...]:
        return self.supernet.candidates


# ------------------------------------------------------------------------------------------------------ helpers


def _phase_seed(seed: int, phase: str) -> int:
    return seed * 31 + _PHASE_SALT[phase]


def _cycle(make: Callable[[], DataLoader]) -> Iterator[Any]:
    """Endless batches from fresh loaders (the architecture half may be shorter than the weight half)."""
    while True:
        empty = True
        for batch in make():
            empty = False
            yield batch
        if empty:
            raise ValueError("the architecture half of the training data is empty")


def _latency_table(ctx: SearchContext, encoder: Encoder) -> LatencyTable:
    """The table of Eq. 2: the configured file, the one this run measured before (resume), or measure now."""
    cfg, run_dir, dist_info = ctx.cfg, ctx.run_dir, ctx.dist_info
    local = run_dir / "latency_table.json"
    if cfg.stnas.latency_table:
        table = LatencyTable.load(cfg.stnas.latency_table)
        logger.info("latency table %s (%d blocks)", table.path, len(table.blocks))
        if dist_info.is_main and table.path is not None and table.path.resolve() != local.resolve():
            shutil.copy2(table.path, local)  # a copy beside the result; arch.json records the original path
    elif ctx.resume and local.is_file():
        table = LatencyTable.load(local)
    else:
        data = None
        if dist_info.is_main:
            logger.info("measuring the block latencies of %s at %s (no stnas.latency_table given)",
                        encoder.name, encoder.img_size)
            measured = measure_latency_table(encoder)
            measured.save(local)
            data = measured.to_dict()
        # timings differ between processes: every rank must regularise with rank 0's
        data = broadcast_object(data) if dist_info.enabled else data
        table = LatencyTable.from_dict(data, source=local)
    table.latencies_for(encoder)  # fail now, naming the missing signature, not mid-epoch
    return table


def _sync_arch(model: nn.Module, dist_info: DistInfo) -> None:
    """Give every rank rank 0's architecture weights (DDP keeps them equal already; this makes it a guarantee)."""
    if not dist_info.enabled:
        return
    with torch.no_grad():
        for p in arch_parameters(model):
            torch.distributed.broadcast(p.data, 0)


@dataclass
class _Phase:
    """One supernet training phase (encoder or decoder search)."""

    name: str
    model: VideoSegmenter
    epochs: int
    warmup_epochs: int
    loss_terms: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
    on_step: Callable[[int, int, dict[str, float]], None]
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _run_phase(phase: _Phase, ctx: SearchContext) -> None:
    """Train ``phase.model`` (a model holding a supernet) for its epochs, with checkpoints and exact resume, in the
    engine's epoch loop."""
    cfg, dist_info, train_ds = ctx.cfg, ctx.dist_info, ctx.train_ds
    device = ctx.device
    model = phase.model
    seed = _phase_seed(cfg.train.seed, phase.name)
    set_arch_trainable(model, True)  # DDP registers what requires grad now; warm-up freezes later (see below)
    weight_opt = torch.optim.AdamW(weight_parameters(model), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                   betas=cfg.train.betas)
    arch_opt = ClippedAdam(arch_parameters(model), max_norm=ARCH_GRAD_CLIP, lr=cfg.stnas.arch_lr, betas=ARCH_BETAS,
                           weight_decay=0.0)
    ckpt = ctx.run_dir / "checkpoints" / _CKPT[phase.name]
    start = 0
    if ctx.resume and ckpt.is_file():
        state = load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        weight_opt.load_state_dict(state["weight_optimizer"])
        arch_opt.load_state_dict(state["arch_optimizer"])
        start, phase.seconds = int(state["epoch"]) + 1, float(state.get("seconds", 0.0))
        logger.info("%s search: resumed from %s at epoch %d", phase.name, ckpt, start)
    for kind in _KINDS[phase.name]:
        ctx.run_logger.truncate_after(kind, "epoch", start - 1)
    if start >= phase.epochs:
        set_arch_trainable(model, False)
        return

    # Freezing the arch weights during warm-up after DDP has registered them leaves them without gradients in
    # those steps: DDP must then be told that parameters may go unused (otherwise it waits for them forever).
    net: nn.Module = model
    if dist_info.enabled:
        net = nn.parallel.DistributedDataParallel(model, find_unused_parameters=phase.warmup_epochs > start)

    halves: tuple[Any, Any] | None = None
    if cfg.stnas.mode == "alternating":
        # first-order DARTS: weights on one half of the training items, architecture on the other (fixed split)
        perm = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(seed)).tolist()
        cut = len(perm) // 2
        halves = (Subset(train_ds, sorted(perm[:cut])), Subset(train_ds, sorted(perm[cut:])))
    weight_ds = train_ds if halves is None else halves[0]
    steps = steps_per_epoch(len(weight_ds), cfg.train.batch_size, dist_info.world_size, cfg.train.max_steps_per_epoch)
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
                               scaler=scaler)
            phase.on_step(epoch * steps + i, epoch, {**logs, "arch_trainable": float(arch_on)})
            return logs

        logs = run_epoch(loaded(weight_ds, seed, epoch), step, steps=steps,
                         desc=f"{phase.name} search {epoch + 1}/{phase.epochs}",
                         show_progress=ctx.show_progress and dist_info.is_main)
        sync_buffers(model, dist_info)  # BN statistics: rank 0's, as the engine does
        _sync_arch(model, dist_info)
        phase.seconds += time.perf_counter() - t0
        ctx.run_logger.log(f"{phase.name}_epoch", epoch, epoch=epoch, loss=mean_loss(logs), seconds=phase.seconds)
        if dist_info.is_main:
            save_checkpoint(ckpt, {
                "phase": phase.name,
                "epoch": epoch,
                "model": model.state_dict(),
                "weight_optimizer": weight_opt.state_dict(),
                "arch_optimizer": arch_opt.state_dict(),
                "scaler": scaler.state_dict(),
                "seconds": phase.seconds,
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
) -> EncoderSearch:
    """The encoder depth search (module docstring, step 1): train a depth supernet on Eq. 2 and derive its depths.

    Args:
        cfg: resolved config (``data``, ``model``, ``train`` for the optimiser and batches, ``stnas``).
        run_dir: run directory (its ``checkpoints/encoder_search.pt``, ``latency_table.json``, ``metrics.jsonl``).
        lam: lambda of Eq. 2; None = ``cfg.stnas.lam``.
        resume: continue from the phase checkpoint (exactly).
        show_progress: tqdm bars (rank 0).
        context: a shared ``SearchContext`` (``search_stnas`` passes one); None = open one for this call.

    Returns:
        An ``EncoderSearch`` (the trained supernet, its alphas, the derived depths and latencies).
    """
    ctx, own = _with_context(cfg, run_dir, context, resume, show_progress)
    lam = float(cfg.stnas.lam if lam is None else lam)
    threshold = float(cfg.stnas.threshold)
    seed_everything(_phase_seed(cfg.train.seed, "encoder"))
    model = build_model(cfg, arch_from_config(cfg), num_classes=ctx.num_classes)
    supernet = DepthSupernet(model.encoder)
    model.encoder = supernet
    model.to(ctx.device)  # after wrapping: the alphas go with the weights
    table = _latency_table(ctx, supernet.encoder)
    lat = table.latencies_for(supernet.encoder)

    def terms(task: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return encoder_search_loss(task, supernet, lat, lam)

    def on_step(step: int, epoch: int, logs: dict[str, float]) -> None:
        ctx.run_logger.log("encoder_search", step, epoch=epoch, lam=lam,
                           expected_latency_ms=supernet.expected_latency(lat, threshold),
                           depths=list(supernet.derive(threshold)), **logs)
        ctx.run_logger.log("alpha", step, epoch=epoch, **{
            f"s{s}_b{i}": a for s, row in enumerate(supernet.alphas()) for i, a in enumerate(row)})

    phase = _Phase("encoder", model, cfg.stnas.encoder_epochs, 0, terms, on_step)
    _run_phase(phase, ctx)
    _sync_arch(model, ctx.dist_info)
    out = EncoderSearch(model, supernet, table, lat, lam, threshold, phase.seconds)
    logger.info("encoder search: depths %s -> %s, block latency %.2f -> %.2f ms", out.full_depths, out.depths,
                out.full_latency_ms, out.derived_latency_ms)
    if own:
        ctx.close()
    return out


def search_decoder_ops(
    cfg: Config,
    run_dir: str | Path,
    *,
    encoder: Encoder | None = None,
    resume: bool = False,
    show_progress: bool = True,
    context: SearchContext | None = None,
) -> DecoderSearch:
    """The decoder op search (module docstring, step 2): train a TCNNAS decoder supernet and derive its ops.

    Args:
        cfg: resolved config; the decoder must be ``sptcn``.
        run_dir: run directory (its ``checkpoints/decoder_search.pt``, ``metrics.jsonl``).
        encoder: the encoder to search on (e.g. ``EncoderSearch.supernet.derived_encoder(threshold)``, with the
            weights trained there); None = the config's encoder.
        resume: continue from the phase checkpoint (exactly).
        show_progress: tqdm bars (rank 0).
        context: a shared ``SearchContext``; None = open one for this call.

    Raises:
        ValueError: the config's decoder is not ``sptcn``.
    """
    base = arch_from_config(cfg)
    if base.decoder != "sptcn":
        raise ValueError(f"the decoder search needs the sptcn decoder, the config has {base.decoder!r}; "
                         "pass skip_decoder (--skip-decoder) to search the encoder only")
    ctx, own = _with_context(cfg, run_dir, context, resume, show_progress)
    seed_everything(_phase_seed(cfg.train.seed, "decoder"))
    if encoder is None:
        encoder = build_encoder(base.encoder, img_size=(cfg.data.height, cfg.data.width), depths=base.depths,
                                weights=cfg.model.weights)
    supernet = build_decoder_supernet(encoder.out_channels[-1], ctx.num_classes, channels=base.channels,
                                      dilations=base.dilations, full_channels=base.full_channels, causal=base.causal,
                                      candidates=cfg.stnas.candidates or SEARCH_CANDIDATES)
    model = VideoSegmenter(encoder, supernet, ctx.num_classes, window=base.window, causal=base.causal).to(ctx.device)

    def terms(task: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return task, {"task_loss": float(task.detach())}

    def on_step(step: int, epoch: int, logs: dict[str, float]) -> None:
        ctx.run_logger.log("decoder_search", step, epoch=epoch, ops=list(supernet.derive()), **logs)
        ctx.run_logger.log("beta", step, epoch=epoch, **{
            f"{k:02d}_{name}": w for k, row in enumerate(supernet.op_weights())
            for name, w in zip(supernet.candidates, row, strict=True)})

    phase = _Phase("decoder", model, cfg.stnas.decoder_epochs, cfg.stnas.warmup_epochs, terms, on_step)
    _run_phase(phase, ctx)
    _sync_arch(model, ctx.dist_info)
    out = DecoderSearch(model, supernet, phase.seconds)
    logger.info("decoder search: ops %s", list(out.ops))
    if own:
        ctx.close()
    return out


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
        lam: lambda of Eq. 2; None = ``cfg.stnas.lam``.
        skip_encoder: keep the config's encoder depths, search the decoder only.
        skip_decoder: keep the config's decoder, search the encoder depths only.
        save_init: write ``derived_init.pt``.
        plots: draw the PNG plots (matplotlib).

    Returns:
        The ``StnasResult`` (also saved as ``search_summary.json``).

    Raises:
        FileNotFoundError: ``resume`` without any checkpoint in ``run_dir``.
        ValueError: bad ``stnas.mode``, both phases skipped, or a decoder search on a non-SP-TCN decoder.
    """
    run_dir = Path(run_dir)
    lam = float(cfg.stnas.lam if lam is None else lam)
    threshold = float(cfg.stnas.threshold)
    if cfg.stnas.mode not in SEARCH_MODES:
        raise ValueError(f"stnas.mode={cfg.stnas.mode!r}; valid modes: {', '.join(SEARCH_MODES)}")
    if skip_encoder and skip_decoder:
        raise ValueError("nothing to search: both the encoder and the decoder search are skipped")
    base = arch_from_config(cfg)
    if not skip_decoder and base.decoder != "sptcn":
        raise ValueError(f"the decoder search needs the sptcn decoder, the config has {base.decoder!r}; "
                         "pass skip_decoder (--skip-decoder) to search the encoder only")
    ckpt_dir = run_dir / "checkpoints"
    if resume and not any((ckpt_dir / name).is_file() for name in _CKPT.values()):
        raise FileNotFoundError(f"--resume: no search checkpoint in {ckpt_dir}")

    ctx = SearchContext.open(cfg, run_dir, resume=resume, show_progress=show_progress)
    enc = None if skip_encoder else search_encoder_depths(cfg, run_dir, lam=lam, context=ctx)
    dec = None
    if not skip_decoder:
        # the derived depths, with the weights trained above; else the config's encoder
        encoder = None if enc is None else enc.supernet.derived_encoder(threshold)
        dec = search_decoder_ops(cfg, run_dir, encoder=encoder, context=ctx)

    arch = derive_arch(base, depth_supernet=None if enc is None else enc.supernet,
                       decoder_supernet=None if dec is None else dec.supernet, threshold=threshold, name="stnas")
    result = _result(run_dir, arch, base, lam, threshold, enc, dec)
    _write(ctx, result, enc, dec, save_init=save_init, plots=plots)
    ctx.close()
    barrier()
    return result


def _result(run_dir: Path, arch: Arch, base: Arch, lam: float, threshold: float, enc: EncoderSearch | None,
            dec: DecoderSearch | None) -> StnasResult:
    result = StnasResult(run_dir=run_dir, arch=arch, arch_path=run_dir / "arch.json", lam=lam, threshold=threshold,
                         full_depths=base.depths, depths=base.depths)
    if enc is not None:
        result.full_depths, result.depths, result.alphas = enc.full_depths, enc.depths, enc.alphas
        result.latency_table_path = enc.table.path
        result.full_latency_ms, result.derived_latency_ms = enc.full_latency_ms, enc.derived_latency_ms
        result.encoder_seconds = enc.seconds
    if dec is not None:
        result.betas, result.decoder_ops, result.candidates = dec.betas, dec.ops, dec.candidates
        result.decoder_seconds = dec.seconds
    return result


def _write(ctx: SearchContext, result: StnasResult, enc: EncoderSearch | None, dec: DecoderSearch | None, *,
           save_init: bool, plots: bool) -> None:
    """``arch.json`` with its record (every rank its own under torchrun), then, on rank 0, the other files."""
    cfg, run_dir, dist_info = ctx.cfg, ctx.run_dir, ctx.dist_info
    device = None if enc is None else enc.table.device
    record = dict(alphas=result.alphas, betas=result.betas, lam=result.lam, threshold=result.threshold,
                  latency_table_path=result.latency_table_path, latency_table_device=device,
                  beta_columns=result.candidates)
    if dist_info.enabled:
        # each rank records what it derived; the test compares them
        write_search_arch(run_dir / "ranks" / f"rank{dist_info.rank}_arch.json", result.arch, **record,
                          extra={"rank": dist_info.rank, "world_size": dist_info.world_size})
    if not dist_info.is_main:
        return
    write_search_arch(result.arch_path, result.arch, **record, extra={
        "encoder_epochs": 0 if enc is None else cfg.stnas.encoder_epochs,
        "decoder_epochs": 0 if dec is None else cfg.stnas.decoder_epochs,
        "warmup_epochs": cfg.stnas.warmup_epochs,
        "mode": cfg.stnas.mode,
        "arch_lr": cfg.stnas.arch_lr,
        "arch_grad_clip": ARCH_GRAD_CLIP,
        "full_depths": None if result.full_depths is None else list(result.full_depths),
        "full_latency_ms": result.full_latency_ms,
        "derived_latency_ms": result.derived_latency_ms,
        "encoder_seconds": result.encoder_seconds,
        "decoder_seconds": result.decoder_seconds,
    })
    result.files.append(result.arch_path)
    if result.latency_table_path is not None:
        result.files.append(Path(result.latency_table_path))
    if save_init:
        # encoder: the decoder search's (derived, trained further there) or the depth supernet's derived copy;
        # decoder: the decoder supernet's derived decoder or the encoder search's baseline decoder
        if dec is not None:
            encoder, decoder = dec.model.encoder, dec.supernet.derived_decoder()
        else:
            assert enc is not None
            encoder, decoder = enc.supernet.derived_encoder(result.threshold), enc.model.decoder
        result.init_checkpoint = save_derived_init(run_dir / "derived_init.pt", cfg, result.arch, ctx.source,
                                                   encoder=encoder, decoder=decoder)
        result.files.append(result.init_checkpoint)
    result.files.append(run_dir / "metrics.jsonl")
    if plots:
        result.files.extend(draw_search(run_dir, result))
    report = run_dir / "report.md"
    atomic_write_text(report, search_report(result))
    result.files.append(report)
    result.files.append(run_dir / "search_summary.json")
    atomic_write_json(run_dir / "search_summary.json", result.to_dict())
