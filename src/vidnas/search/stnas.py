"""The ST-NAS search loop [ST-NAS Sec. 3.2, 3.3, 4]: encoder depth search, then decoder op search, then ``arch.json``.

``search_stnas(cfg, run_dir)`` runs the two searches of the paper one after the other, each on its own supernet
(the paper: "the encoder and decoder NAS steps are performed separately"):

1. **Latency table.** ``cfg.stnas.latency_table`` is loaded, or every block of the config's (full-depth) encoder is
   timed now on the training device (``measure_encoder_blocks``) and saved as ``latency_table.json`` in the run
   directory. Under torchrun rank 0 measures and broadcasts, so every rank regularises with the same s_i.
2. **Encoder search** (``stnas.encoder_epochs``). The model of the config with its encoder wrapped in a
   ``DepthSupernet`` (Eq. 1); network weights (AdamW, ``cfg.train``) and alphas (Adam at ``stnas.arch_lr``) train on
   the loss of Eq. 2::

       L = L_task(f(W, A, x), y) + lambda * sum_i |alpha_i| * s_i

   Every step logs the task loss, the penalty, the expected latency (block latency of the depths the current alphas
   derive) and every alpha. At the end the shrink rule with ``stnas.threshold`` derives the depths.
3. **Decoder search** (``stnas.decoder_epochs``). A new model: the derived encoder (carrying the weights trained in
   step 2) and an SP-TCN decoder supernet whose 16 slots are ``MixedOp``s over the seven candidates
   (``out = sum_j softmax(beta)_j op_j(x)``). Betas are frozen for ``stnas.warmup_epochs`` (a supernet whose ops are
   untrained drifts to identity), then train jointly with the weights (the paper's single-level schedule) or, with
   ``stnas.mode = "alternating"``, first-order DARTS on two halves of the training data. The task loss alone drives
   the decoder search (the paper's latency term is on the encoder only). Derived op per slot: argmax of beta.
4. **Outputs** (rank 0): ``arch.json`` (``write_search_arch``: depths, ops, alphas, betas, lambda, threshold, latency
   table path and device), ``derived_init.pt`` (the derived model with the supernets' weights, in the engine's
   checkpoint format, for ``vidnas train --arch arch.json --init derived_init.pt``), ``metrics.jsonl`` and
   TensorBoard (kinds ``encoder_search``, ``alpha``, ``decoder_search``, ``beta``), ``alphas.png``, ``betas.png``,
   ``decoder.png``, ``search_summary.json``, ``report.md``; every rank writes ``ranks/rank{N}_arch.json``.

Arch-weight gradients are clipped to a global norm of ``ARCH_GRAD_CLIP`` before each Adam step: with a large lambda
the penalty gradient ``lambda * s_i`` can swamp the task gradient for a few steps and the alphas oscillate around the
threshold; clipping bounds how much one step can move them (Adam's moment estimates absorb one spike less).

Resume: a checkpoint per phase (``checkpoints/encoder_search.pt``, ``checkpoints/decoder_search.pt``) holds the
supernet weights (arch weights included), both optimisers, the epoch and the elapsed time. Every epoch re-seeds
python / numpy / torch from ``(train.seed, phase, epoch)`` and the data set's augmentation from ``(seed, epoch,
item)``, and each phase's model is built right after seeding with a phase-specific seed, so ``resume=True``
continues exactly where the uninterrupted search would be (tested: same alphas and betas to the bit).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset

from vidnas.checkpoint import load_checkpoint, save_checkpoint
from vidnas.config import Config, config_to_dict
from vidnas.engine.distributed import DistInfo, barrier, broadcast_object, init_distributed
from vidnas.engine.logger import RunLogger, read_jsonl
from vidnas.engine.train import build_datasets, epoch_seed, segmentation_loss
from vidnas.models import Arch, VideoSegmenter, arch_from_config, build_encoder, build_model
from vidnas.models.build import TEMPORAL_MODES
from vidnas.search.arch import write_search_arch
from vidnas.search.dnas import (
    SEARCH_MODES,
    DecoderSupernet,
    DepthSupernet,
    arch_parameters,
    arch_warmup,
    build_decoder_supernet,
    search_step,
    set_arch_trainable,
    weight_parameters,
)
from vidnas.search.latency import LatencyTable, measure_encoder_blocks
from vidnas.utils import atomic_write_json, atomic_write_text, seed_everything

__all__ = [
    "ARCH_GRAD_CLIP",
    "LATENCY_WARMUP",
    "LATENCY_ITERS",
    "LATENCY_REPEATS",
    "ClippedAdam",
    "StnasResult",
    "search_stnas",
    "load_search_summary",
]

logger = logging.getLogger(__name__)

ARCH_GRAD_CLIP = 1.0  # global L2 norm of the arch-weight gradient per step (see the module docstring)
ARCH_BETAS = (0.5, 0.999)  # DARTS' Adam betas for architecture weights [DARTS], no weight decay (Eq. 2 is the prior)
LATENCY_WARMUP = 3  # untimed calls per block when the table is measured at search time
LATENCY_ITERS = 5  # timed calls per block and repeat
LATENCY_REPEATS = 5  # whole-encoder passes; the table keeps each block's median over the passes (see _measure_table)
_PHASE_SALT = {"encoder": 1, "decoder": 2}  # separates the two phases' seeds
_CKPT = {"encoder": "encoder_search.pt", "decoder": "decoder_search.pt"}
_KINDS = {  # metrics.jsonl record kinds of each phase (a resumed phase drops those after its checkpoint)
    "encoder": ("encoder_search", "alpha", "encoder_epoch"),
    "decoder": ("decoder_search", "beta", "decoder_epoch"),
}


class ClippedAdam(torch.optim.Adam):
    """Adam whose ``step`` first clips the gradients of its parameters to a global L2 norm ``max_norm``.

    The architecture weights' optimiser: ``search_step`` runs backward and steps inside, so the clipping lives in the
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


@dataclass
class StnasResult:
    """What one ST-NAS search produced.

    Attributes:
        run_dir: the run directory.
        arch: the derived architecture (as written to ``arch_path``).
        arch_path: ``arch.json``.
        lam: lambda of Eq. 2.
        threshold: shrink-rule threshold.
        full_depths: depths of the searched (full) encoder.
        depths: derived depths (None if the encoder search was skipped and the config sets none).
        alphas: final alphas per stage, per block (None if skipped).
        decoder_ops: derived op per decoder slot (None if the decoder search was skipped).
        betas: final betas per slot, per candidate (None if skipped).
        candidates: the beta columns.
        latency_table_path: the latency table used (None if the encoder search was skipped).
        full_latency_ms: summed block latency (ms) of the full encoder.
        derived_latency_ms: summed block latency (ms) of the derived encoder (Eq. 2's "expected latency").
        encoder_seconds: wall time of the encoder search (all invocations, resumes included).
        decoder_seconds: wall time of the decoder search.
        init_checkpoint: ``derived_init.pt`` (derived model with the supernets' weights) or None.
        files: every file written, for the summary.
    """

    run_dir: Path
    arch: Arch
    arch_path: Path
    lam: float
    threshold: float
    full_depths: tuple[int, ...] | None = None
    depths: tuple[int, ...] | None = None
    alphas: list[list[float]] | None = None
    decoder_ops: tuple[str, ...] | None = None
    betas: list[list[float]] | None = None
    candidates: tuple[str, ...] | None = None
    latency_table_path: Path | None = None
    full_latency_ms: float | None = None
    derived_latency_ms: float | None = None
    encoder_seconds: float = 0.0
    decoder_seconds: float = 0.0
    init_checkpoint: Path | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def search_seconds(self) -> float:
        """Encoder plus decoder search wall time."""
        return self.encoder_seconds + self.decoder_seconds

    @property
    def latency_saving(self) -> float | None:
        """``1 - derived / full`` block latency (0.25 = a quarter of the encoder's block time removed)."""
        if not self.full_latency_ms or self.derived_latency_ms is None:
            return None
        return 1.0 - self.derived_latency_ms / self.full_latency_ms

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``search_summary.json``)."""
        return {
            "run_dir": str(self.run_dir),
            "arch_path": str(self.arch_path),
            "arch": self.arch.to_dict(),
            "lambda": self.lam,
            "threshold": self.threshold,
            "full_depths": None if self.full_depths is None else list(self.full_depths),
            "depths": None if self.depths is None else list(self.depths),
            "alphas": self.alphas,
            "decoder_ops": None if self.decoder_ops is None else list(self.decoder_ops),
            "betas": self.betas,
            "candidates": None if self.candidates is None else list(self.candidates),
            "latency_table_path": None if self.latency_table_path is None else str(self.latency_table_path),
            "full_latency_ms": self.full_latency_ms,
            "derived_latency_ms": self.derived_latency_ms,
            "latency_saving": self.latency_saving,
            "encoder_seconds": self.encoder_seconds,
            "decoder_seconds": self.decoder_seconds,
            "search_seconds": self.search_seconds,
            "init_checkpoint": None if self.init_checkpoint is None else str(self.init_checkpoint),
            "files": [str(p) for p in self.files],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StnasResult:
        """Inverse of ``to_dict``."""

        def tup(v: Any) -> tuple | None:
            return None if v is None else tuple(v)

        return cls(
            run_dir=Path(d["run_dir"]),
            arch=Arch.from_dict(d["arch"]),
            arch_path=Path(d["arch_path"]),
            lam=float(d["lambda"]),
            threshold=float(d["threshold"]),
            full_depths=tup(d.get("full_depths")),
            depths=tup(d.get("depths")),
            alphas=d.get("alphas"),
            decoder_ops=tup(d.get("decoder_ops")),
            betas=d.get("betas"),
            candidates=tup(d.get("candidates")),
            latency_table_path=None if d.get("latency_table_path") is None else Path(d["latency_table_path"]),
            full_latency_ms=d.get("full_latency_ms"),
            derived_latency_ms=d.get("derived_latency_ms"),
            encoder_seconds=float(d.get("encoder_seconds", 0.0)),
            decoder_seconds=float(d.get("decoder_seconds", 0.0)),
            init_checkpoint=None if d.get("init_checkpoint") is None else Path(d["init_checkpoint"]),
            files=[Path(p) for p in d.get("files", [])],
        )


def load_search_summary(run_dir: str | Path) -> StnasResult:
    """The ``StnasResult`` of a finished search, from its ``search_summary.json``."""
    import json

    path = Path(run_dir) / "search_summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"no finished ST-NAS search in {run_dir} (missing {path.name})")
    return StnasResult.from_dict(json.loads(path.read_text()))


# ------------------------------------------------------------------------------------------------------ helpers


def _phase_seed(seed: int, phase: str) -> int:
    return seed * 31 + _PHASE_SALT[phase]


def _causal(cfg: Config) -> bool:
    return TEMPORAL_MODES.get(cfg.data.temporal, True)


def _loader(ds: Any, cfg: Config, dist_info: DistInfo, seed: int, epoch: int) -> DataLoader:
    """A shuffling loader whose order depends only on (seed, epoch): the engine's rule, so resume is exact."""
    if dist_info.enabled:
        sampler: Any = DistributedSampler(ds, shuffle=True, seed=seed, drop_last=False)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
    return DataLoader(ds, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=cfg.data.num_workers,
                      drop_last=False, persistent_workers=False)


def _cycle(make: Callable[[], DataLoader]) -> Iterator[Any]:
    """Endless batches from fresh loaders (the architecture half may be shorter than the weight half)."""
    while True:
        empty = True
        for batch in make():
            empty = False
            yield batch
        if empty:
            raise ValueError("the architecture half of the training data is empty")


def _latency_table(cfg: Config, encoder: Any, run_dir: Path, dist_info: DistInfo, resume: bool) -> LatencyTable:
    """The table of Eq. 2: the configured file, the one this run measured before (resume), or measure now."""
    local = run_dir / "latency_table.json"
    if cfg.stnas.latency_table:
        table = LatencyTable.load(cfg.stnas.latency_table)
        logger.info("latency table %s (%d blocks)", table.path, len(table.blocks))
        if dist_info.is_main and table.path is not None and table.path.resolve() != local.resolve():
            shutil.copy2(table.path, local)  # a copy beside the result; arch.json records the original path
    elif resume and local.is_file():
        table = LatencyTable.load(local)
    else:
        data = None
        if dist_info.is_main:
            logger.info("measuring the block latencies of %s at %s (no stnas.latency_table given)",
                        encoder.name, encoder.img_size)
            measured = _measure_table(encoder)
            measured.save(local)
            data = measured.to_dict()
        # timings differ between processes: every rank must regularise with rank 0's
        data = broadcast_object(data) if dist_info.enabled else data
        table = LatencyTable.from_dict(data, source=local)
    table.latencies_for(encoder)  # fail now, naming the missing signature, not mid-epoch
    return table


def _measure_table(encoder: Any) -> LatencyTable:
    """``measure_encoder_blocks`` ``LATENCY_REPEATS`` times; each block keeps the median of its per-pass medians.

    One pass times a block's calls back to back, a few ms for a small block: a single descheduling of the process on
    a busy machine covers all of them and inflates that block 100-fold (seen on the 2-core development machine). Over
    several passes such a stall hits one pass, and the median over passes ignores it.
    """
    import statistics

    passes = [measure_encoder_blocks(encoder, warmup=LATENCY_WARMUP if r == 0 else 1, iters=LATENCY_ITERS)
              for r in range(LATENCY_REPEATS)]
    table = passes[0]
    for attr in ("blocks", "downsample"):
        merged = getattr(table, attr)
        for sig in merged:
            values = [getattr(p, attr)[sig] for p in passes]
            merged[sig] = statistics.median(values)
            table.stats[sig] = {**table.stats.get(sig, {}), "median_ms": merged[sig], "pass_medians_ms": values}
    table.meta.update(repeats=LATENCY_REPEATS, statistic="median over passes of the per-pass median")
    return table


def _sync_arch(model: nn.Module, dist_info: DistInfo) -> None:
    """Give every rank rank 0's architecture weights (DDP keeps them equal already; this makes it a guarantee)."""
    if not dist_info.enabled:
        return
    with torch.no_grad():
        for p in arch_parameters(model):
            torch.distributed.broadcast(p.data, 0)


def _truncate(run_logger: RunLogger, phase: str, last_epoch: int) -> None:
    for kind in _KINDS[phase]:
        run_logger.truncate_after(kind, "epoch", last_epoch)


@dataclass
class _Phase:
    """One supernet training phase (encoder or decoder search)."""

    name: str
    model: VideoSegmenter
    epochs: int
    warmup_epochs: int
    loss_terms: Callable[[torch.Tensor, dict[str, Any]], tuple[torch.Tensor, dict[str, float]]]
    on_step: Callable[[int, int, dict[str, float]], None]
    seconds: float = 0.0


def _run_phase(
    phase: _Phase,
    cfg: Config,
    train_ds: Any,
    run_dir: Path,
    run_logger: RunLogger,
    dist_info: DistInfo,
    *,
    resume: bool,
    show_progress: bool,
) -> None:
    """Train ``phase.model`` (a model holding a supernet) for its epochs with checkpoints and exact resume."""
    from tqdm.auto import tqdm

    device = torch.device(cfg.train.device)
    model = phase.model
    seed = _phase_seed(cfg.train.seed, phase.name)
    set_arch_trainable(model, True)  # DDP registers what requires grad now; warm-up freezes later (see below)
    weight_opt = torch.optim.AdamW(weight_parameters(model), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                   betas=cfg.train.betas)
    arch_opt = ClippedAdam(arch_parameters(model), max_norm=ARCH_GRAD_CLIP, lr=cfg.stnas.arch_lr, betas=ARCH_BETAS,
                           weight_decay=0.0)
    ckpt = run_dir / "checkpoints" / _CKPT[phase.name]
    start = 0
    if resume and ckpt.is_file():
        state = load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        weight_opt.load_state_dict(state["weight_optimizer"])
        arch_opt.load_state_dict(state["arch_optimizer"])
        start, phase.seconds = int(state["epoch"]) + 1, float(state.get("seconds", 0.0))
        logger.info("%s search: resumed from %s at epoch %d", phase.name, ckpt, start)
    _truncate(run_logger, phase.name, start - 1)
    if start >= phase.epochs:
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
    steps = math.ceil(len(weight_ds) / (cfg.train.batch_size * dist_info.world_size))
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    ignore = cfg.data.ignore_index

    def loss_fn(batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        frames = batch["frames"].to(device)  # (B, T, 3, H, W)
        masks = batch["masks"].to(device)  # (B, T, H, W)
        logits = net(frames)  # (B, T, K, H, W)
        task = segmentation_loss(logits, masks, ignore)
        return phase.loss_terms(task, batch)

    for epoch in range(start, phase.epochs):
        t0 = time.perf_counter()
        seed_everything(epoch_seed(seed, epoch))
        train_ds.set_epoch(epoch)
        arch_on = arch_warmup(model, epoch, phase.warmup_epochs)
        loader = _loader(weight_ds, cfg, dist_info, seed, epoch)
        arch_iter = None
        if halves is not None:
            arch_iter = _cycle(lambda e=epoch: _loader(halves[1], cfg, dist_info, seed + 7, e))
        model.train()
        bar = tqdm(total=steps, desc=f"{phase.name} search {epoch + 1}/{phase.epochs}", leave=False,
                   disable=not (show_progress and dist_info.is_main), dynamic_ncols=True)
        losses = []
        for step, batch in enumerate(loader):
            if step >= steps:
                break
            arch_batch = next(arch_iter) if (arch_iter is not None and arch_on) else None
            logs = search_step(model, loss_fn, weight_opt, arch_opt, batch, mode=cfg.stnas.mode,
                               arch_batch=arch_batch)
            losses.append(logs["loss"])
            phase.on_step(epoch * steps + step, epoch, {**logs, "arch_trainable": float(arch_on)})
            bar.set_postfix(loss=f"{logs['loss']:.3f}")
            bar.update(1)
        bar.close()
        if dist_info.enabled:
            for buf in model.buffers():  # BN statistics: rank 0's, as the engine does
                torch.distributed.broadcast(buf, 0)
            _sync_arch(model, dist_info)
        phase.seconds += time.perf_counter() - t0
        run_logger.log(f"{phase.name}_epoch", epoch, epoch=epoch, loss=sum(losses) / max(len(losses), 1),
                       seconds=phase.seconds)
        if dist_info.is_main:
            save_checkpoint(ckpt, {
                "phase": phase.name,
                "epoch": epoch,
                "model": model.state_dict(),
                "weight_optimizer": weight_opt.state_dict(),
                "arch_optimizer": arch_opt.state_dict(),
                "seconds": phase.seconds,
                "config": config_to_dict(cfg),
            })
        barrier()
        logger.info("%s search epoch %d: loss %.4f", phase.name, epoch, sum(losses) / max(len(losses), 1))
    set_arch_trainable(model, False)


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

    dist_info = init_distributed(cfg.train.device)
    device = torch.device(cfg.train.device)
    run_logger = RunLogger(run_dir, enabled=dist_info.is_main)
    source, train_ds, _ = build_datasets(cfg)
    if len(train_ds) == 0:
        raise ValueError(f"no annotated training frames in split {cfg.data.train_split!r} of {cfg.data.format}")
    num_classes = source.num_classes
    causal = _causal(cfg)
    result = StnasResult(run_dir=run_dir, arch=base, arch_path=run_dir / "arch.json", lam=lam, threshold=threshold,
                         full_depths=base.depths)

    # --- 1. encoder depth search (Eq. 1, Eq. 2, shrink rule) --------------------------------------------------------
    enc_model: VideoSegmenter | None = None
    depth_net: DepthSupernet | None = None
    table: LatencyTable | None = None
    if not skip_encoder:
        seed_everything(_phase_seed(cfg.train.seed, "encoder"))
        enc_model = build_model(cfg, base, num_classes=num_classes).to(device)
        depth_net = DepthSupernet(enc_model.encoder)
        enc_model.encoder = depth_net
        result.full_depths = depth_net.depths
        table = _latency_table(cfg, depth_net.encoder, run_dir, dist_info, resume)
        lat = table.latencies_for(depth_net.encoder)
        result.latency_table_path = table.path
        result.full_latency_ms = float(sum(sum(s) for s in lat))

        def enc_terms(task: torch.Tensor, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
            assert depth_net is not None
            pen = depth_net.penalty(lat)  # sum_i |alpha_i| * s_i, ms
            return task + lam * pen, {"task_loss": float(task.detach()), "penalty": float(pen.detach())}

        def enc_step(step: int, epoch: int, logs: dict[str, float]) -> None:
            assert depth_net is not None
            run_logger.log("encoder_search", step, epoch=epoch, lam=lam,
                           expected_latency_ms=depth_net.expected_latency(lat, threshold),
                           depths=list(depth_net.derive(threshold)), **logs)
            run_logger.log("alpha", step, epoch=epoch, **{
                f"s{s}_b{i}": a for s, row in enumerate(depth_net.alphas()) for i, a in enumerate(row)})

        phase = _Phase("encoder", enc_model, cfg.stnas.encoder_epochs, 0, enc_terms, enc_step)
        _run_phase(phase, cfg, train_ds, run_dir, run_logger, dist_info, resume=resume, show_progress=show_progress)
        _sync_arch(enc_model, dist_info)
        result.encoder_seconds = phase.seconds
        result.alphas = depth_net.alphas()
        result.depths = depth_net.derive(threshold)
        result.derived_latency_ms = depth_net.expected_latency(lat, threshold)
        logger.info("encoder search: depths %s -> %s, block latency %.2f -> %.2f ms", result.full_depths,
                    result.depths, result.full_latency_ms, result.derived_latency_ms)
    else:
        result.depths = base.depths

    # --- 2. decoder op search (TCNNAS supernet) ---------------------------------------------------------------------
    dec_model: VideoSegmenter | None = None
    dec_net: DecoderSupernet | None = None
    if not skip_decoder:
        seed_everything(_phase_seed(cfg.train.seed, "decoder"))
        if depth_net is not None:
            encoder = depth_net.derived_encoder(threshold)  # the derived depths, with the weights trained above
        else:
            encoder = build_encoder(base.encoder, img_size=(cfg.data.height, cfg.data.width), depths=base.depths,
                                    weights=cfg.model.weights)
        dec_net = build_decoder_supernet(encoder.out_channels[-1], num_classes, channels=base.channels,
                                         dilations=base.dilations, full_channels=base.full_channels, causal=causal)
        dec_model = VideoSegmenter(encoder, dec_net, num_classes, window=base.window, causal=base.causal).to(device)

        def dec_terms(task: torch.Tensor, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
            return task, {"task_loss": float(task.detach())}

        def dec_step(step: int, epoch: int, logs: dict[str, float]) -> None:
            assert dec_net is not None
            run_logger.log("decoder_search", step, epoch=epoch, ops=list(dec_net.derive()), **logs)
            run_logger.log("beta", step, epoch=epoch, **{
                f"{k:02d}_{name}": w for k, row in enumerate(dec_net.op_weights())
                for name, w in zip(dec_net.candidates, row, strict=True)})

        phase = _Phase("decoder", dec_model, cfg.stnas.decoder_epochs, cfg.stnas.warmup_epochs, dec_terms, dec_step)
        _run_phase(phase, cfg, train_ds, run_dir, run_logger, dist_info, resume=resume, show_progress=show_progress)
        _sync_arch(dec_model, dist_info)
        result.decoder_seconds = phase.seconds
        result.betas = dec_net.betas()
        result.decoder_ops = dec_net.derive()
        result.candidates = dec_net.candidates
        logger.info("decoder search: ops %s", list(result.decoder_ops))

    # --- 3. the architecture and its files ---------------------------------------------------------------------------
    changes: dict[str, Any] = {"name": "stnas"}
    if not skip_encoder:
        changes["depths"] = result.depths
    if not skip_decoder:
        changes.update(decoder="sptcn", decoder_ops=result.decoder_ops)
    result.arch = dataclasses.replace(base, extra={}, **changes)
    record_extra = {
        "encoder_epochs": 0 if skip_encoder else cfg.stnas.encoder_epochs,
        "decoder_epochs": 0 if skip_decoder else cfg.stnas.decoder_epochs,
        "warmup_epochs": cfg.stnas.warmup_epochs,
        "mode": cfg.stnas.mode,
        "arch_lr": cfg.stnas.arch_lr,
        "arch_grad_clip": ARCH_GRAD_CLIP,
        "full_depths": None if result.full_depths is None else list(result.full_depths),
        "full_latency_ms": result.full_latency_ms,
        "derived_latency_ms": result.derived_latency_ms,
        "encoder_seconds": result.encoder_seconds,
        "decoder_seconds": result.decoder_seconds,
    }
    if dist_info.enabled:
        # each rank records what it derived; the test compares them
        write_search_arch(
            run_dir / "ranks" / f"rank{dist_info.rank}_arch.json", result.arch, alphas=result.alphas,
            betas=result.betas, lam=lam, latency_table_path=result.latency_table_path,
            latency_table_device=None if table is None else table.device, threshold=threshold,
            beta_columns=result.candidates, extra={"rank": dist_info.rank, "world_size": dist_info.world_size},
        )
    if dist_info.is_main:
        write_search_arch(result.arch_path, result.arch, alphas=result.alphas, betas=result.betas, lam=lam,
                          latency_table_path=result.latency_table_path,
                          latency_table_device=None if table is None else table.device, threshold=threshold,
                          beta_columns=result.candidates, extra=record_extra)
        result.files.append(result.arch_path)
        if result.latency_table_path is not None:
            result.files.append(Path(result.latency_table_path))
        if save_init:
            result.init_checkpoint = _save_derived_init(
                run_dir / "derived_init.pt", cfg, result, source, enc_model=enc_model, depth_net=depth_net,
                dec_model=dec_model, dec_net=dec_net,
            )
            result.files.append(result.init_checkpoint)
        result.files.append(run_dir / "metrics.jsonl")
        if plots:
            result.files.extend(_draw(run_dir, result))
        report = run_dir / "report.md"
        atomic_write_text(report, search_report(result))
        result.files.append(report)
        result.files.append(run_dir / "search_summary.json")
        atomic_write_json(run_dir / "search_summary.json", result.to_dict())
    run_logger.close()
    barrier()
    return result


def _save_derived_init(
    path: Path,
    cfg: Config,
    result: StnasResult,
    source: Any,
    *,
    enc_model: VideoSegmenter | None,
    depth_net: DepthSupernet | None,
    dec_model: VideoSegmenter | None,
    dec_net: DecoderSupernet | None,
) -> Path:
    """The derived model carrying the supernets' trained weights, as an engine checkpoint.

    Encoder: the decoder search's (already derived, trained further there) or the depth supernet's derived copy.
    Decoder: ``DecoderSupernet.derived_decoder()`` (each slot keeps its chosen candidate's weights) or the encoder
    search's baseline decoder. The state-dict names are those of ``build_model(cfg, arch)``, so
    ``vidnas train --arch arch.json --init derived_init.pt`` loads every tensor (checked here: a mismatch is logged).
    """
    if dec_model is not None and dec_net is not None:
        encoder: nn.Module = dec_model.encoder
        decoder: nn.Module = dec_net.derived_decoder()
    else:
        assert enc_model is not None and depth_net is not None
        encoder = depth_net.derived_encoder(result.threshold)
        decoder = enc_model.decoder
    derived = VideoSegmenter(encoder, decoder, source.num_classes, window=result.arch.window,
                             causal=result.arch.causal)
    state = {k: v.detach().cpu() for k, v in derived.state_dict().items()}
    reference = build_model(cfg, result.arch, num_classes=source.num_classes).state_dict()
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    if missing or unexpected:
        logger.warning("derived_init.pt does not match build_model(arch): missing %s, unexpected %s",
                       missing[:5], unexpected[:5])
    return save_checkpoint(path, {
        "model": state,
        "epoch": -1,
        "config": config_to_dict(cfg),
        "arch": result.arch.to_dict(),
        "num_classes": source.num_classes,
        "class_names": list(source.class_names),
        "source": "stnas supernet",
    })


def _draw(run_dir: Path, result: StnasResult) -> list[Path]:
    """The PNG plots of this search (matplotlib, Agg)."""
    from vidnas.search import plots

    records = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
    out = []
    if result.alphas is not None:
        out.append(plots.plot_alpha_trajectories(records, run_dir / "alphas.png", threshold=result.threshold,
                                                 depths=result.depths))
    if result.betas is not None and result.candidates is not None:
        out.append(plots.plot_beta_trajectories(records, run_dir / "betas.png", candidates=result.candidates))
    if result.arch.decoder_ops is not None:
        out.append(plots.draw_decoder(result.arch.decoder_ops, run_dir / "decoder.png",
                                      dilations=result.arch.dilations, full_channels=result.arch.full_channels))
    return out


def search_report(result: StnasResult) -> str:
    """``report.md`` of a search: the derived architecture, the alphas and betas it came from, the cost."""
    lines = ["# ST-NAS search", "", f"- run directory: `{result.run_dir}`"]
    lines.append(f"- lambda (Eq. 2): {result.lam:g}; shrink threshold: {result.threshold:g}")
    lines.append(f"- search time: encoder {result.encoder_seconds:.1f} s, decoder {result.decoder_seconds:.1f} s")
    if result.alphas is not None:
        lines.append(f"- encoder depths: {_fmt_depths(result.full_depths)} -> {_fmt_depths(result.depths)}")
        saving = result.latency_saving
        lines.append(f"- encoder block latency (latency table): {result.full_latency_ms:.3f} ms -> "
                     f"{result.derived_latency_ms:.3f} ms" + (f" ({saving:.0%} saved)" if saving is not None else ""))
        lines.append(f"- latency table: `{result.latency_table_path}`")
        lines += ["", "## Alphas (block kept if it is before the last alpha >= threshold)", "",
                  "| stage | alphas | kept |", "|---|---|---|"]
        for s, row in enumerate(result.alphas):
            kept = result.depths[s] if result.depths is not None else len(row)
            lines.append(f"| {s + 1} | {', '.join(f'{a:.4f}' for a in row)} | {kept}/{len(row)} |")
    if result.decoder_ops is not None and result.betas is not None and result.candidates is not None:
        lines += ["", "## Decoder ops (argmax of softmax(beta) per slot)", "",
                  "| slot | layer | op | weight | runner-up |", "|---|---|---|---|---|"]
        for k, (op, row) in enumerate(zip(result.decoder_ops, result.betas, strict=True)):
            w = torch.softmax(torch.tensor(row), 0).tolist()
            order = sorted(range(len(w)), key=lambda j: -w[j])
            second = result.candidates[order[1]] if len(order) > 1 else "-"
            lines.append(f"| {k} | {k // 4 + 1} | {op} | {w[order[0]]:.3f} | {second} ({w[order[1]]:.3f}) |")
    lines += ["", "## Files", ""]
    names = ["arch.json", "derived_init.pt", "latency_table.json", "alphas.png", "betas.png", "decoder.png",
             "metrics.jsonl", "search_summary.json"]
    lines += [f"- `{n}`" for n in names if (result.run_dir / n).exists()]
    lines += ["", "Train the derived model: `vidnas train --arch arch.json` (add `--init derived_init.pt` to start",
              "from the supernets' weights; the paper trains from scratch).", ""]
    for png in ("alphas.png", "betas.png", "decoder.png"):
        if (result.run_dir / png).exists():
            lines.append(f"![{png}]({png})")
    return "\n".join(lines) + "\n"


def _fmt_depths(d: Any) -> str:
    return "default" if d is None else ",".join(str(x) for x in d)
