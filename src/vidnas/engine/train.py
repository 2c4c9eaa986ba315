"""Training of a VideoSegmenter: AdamW (or SGD), cross-entropy with the ignore index (``vidnas.engine.losses``),
checkpoint every epoch, exact resume; the epochs run in the engine's loop (``vidnas.engine.loop.fit``).

Reproducibility: every epoch starts by re-seeding python, numpy and torch from ``(train.seed, epoch)``, and the
sampler's shuffle is seeded the same way, so a run resumed from the checkpoint of epoch ``e`` continues exactly as the
uninterrupted run would have (tested). Under torchrun each rank gets its shard via DistributedSampler and DDP keeps
the weights identical on every rank.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from vidnas.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vidnas.config import Config, config_from_dict, config_to_dict
from vidnas.data import build_datasets, open_source, selection_datasets, target_position
from vidnas.engine.distributed import DistInfo, init_distributed, unwrap
from vidnas.engine.evaluate import evaluate_clips
from vidnas.engine.logger import RunLogger
from vidnas.engine.loop import EpochResult, backward_step, epoch_loader, fit, steps_per_epoch
from vidnas.engine.losses import class_weights, segmentation_loss
from vidnas.engine.plots import plot_training_curves
from vidnas.models import Arch, arch_from_config, build_model
from vidnas.models.fastpath import use_channels_last
from vidnas.precision import autocast, grad_scaler, loader_options
from vidnas.rundir import remove_orphan_temporaries
from vidnas.utils import atomic_write_json, seed_everything

__all__ = ["TrainResult", "train", "weights_fingerprint", "context_grad_frames", "init_from", "check_init",
           "MIN_INIT_SHARE", "DivergedError"]

log = logging.getLogger(__name__)

MIN_INIT_SHARE = 0.5  # --init must fill at least this share of the model's tensors (unless --init-partial)


class DivergedError(ValueError):
    """Training produced a non-finite loss or weights; the message names the step and the last finite checkpoint."""


@dataclass
class TrainResult:
    run_dir: Path
    best_miou: float
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None
    train_seconds: float = 0.0
    reported: dict[str, Any] | None = None  # with data.selection_videos: the val split at the end (``report_split``)


def _encoder_of(model: torch.nn.Module) -> torch.nn.Module | None:
    enc = getattr(unwrap(model), "encoder", None)
    return enc if isinstance(enc, torch.nn.Module) else None


def freeze_encoder_if_asked(model: torch.nn.Module, cfg: Config) -> None:
    """``train.encoder_lr_scale == 0``: the encoder's parameters stop requiring gradients (call before DDP wraps).

    Its BatchNorm statistics are kept too: ``train`` puts the encoder back in eval mode after every ``model.train()``.
    """
    if cfg.train.encoder_lr_scale < 0:
        raise ValueError(f"train.encoder_lr_scale={cfg.train.encoder_lr_scale}: must be >= 0 (0 freezes the encoder)")
    if cfg.train.encoder_lr_scale == 0:
        enc = _encoder_of(model)
        if enc is None:
            raise ValueError("train.encoder_lr_scale=0 (frozen encoder) needs a model with an `encoder`")
        for p in enc.parameters():
            p.requires_grad_(False)


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW (ST-NAS) or SGD with momentum 0.9 (arch2 pre-training), from ``cfg.train``.

    With ``train.encoder_lr_scale != 1`` or ``train.decoder_lr_scale != 1`` the encoder's parameters form their own
    group at ``lr * encoder_lr_scale`` and the others (decoder, heads) one at ``lr * decoder_lr_scale`` (each group
    keeps its ``lr_scale``, which the schedule multiplies in); frozen parameters (``requires_grad`` False) are left
    out.
    """
    name = cfg.train.optimizer.lower()
    scale, dec_scale = float(cfg.train.encoder_lr_scale), float(cfg.train.decoder_lr_scale)
    enc = _encoder_of(model)
    if (scale == 1.0 and dec_scale == 1.0) or enc is None:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.train.lr, "lr_scale": 1.0}]
    else:
        enc_ids = {id(p) for p in enc.parameters()}
        rest = [p for p in model.parameters() if id(p) not in enc_ids and p.requires_grad]
        groups = [{"params": rest, "lr": cfg.train.lr * dec_scale, "lr_scale": dec_scale}]
        enc_params = [p for p in enc.parameters() if p.requires_grad]
        if enc_params:
            groups.append({"params": enc_params, "lr": cfg.train.lr * scale, "lr_scale": scale})
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, betas=cfg.train.betas)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.train.lr, momentum=0.9, weight_decay=cfg.train.weight_decay)
    raise ValueError(f"train.optimizer={cfg.train.optimizer!r}: valid values are adamw, sgd")


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def lr_factor(step: int, total: int, *, schedule: str, warmup_steps: int = 0) -> float:
    """The learning-rate multiplier of global step ``step`` (0-based) of ``total``.

    ``warmup(step) * base(step)`` with ``warmup = min(1, (step + 1) / warmup_steps)`` (1 without warm-up) and
    ``base`` = 1 (``constant``), ``(1 - step / total) ** 0.9`` (``poly`` [DeepLab, CELLS appendix]) or
    ``(1 + cos(pi * step / total)) / 2`` (``cosine``).
    """
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "poly":
        return warm * (1 - step / total) ** 0.9
    if schedule == "cosine":
        return warm * 0.5 * (1.0 + math.cos(math.pi * step / total))
    return warm


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer, in state-dict order (equal iff the weights are bit-identical)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _describe(cfg: Config, arch: Any) -> str:
    a = arch if arch is not None else arch_from_config(cfg)
    depths = "" if a.depths is None else f" depths {','.join(str(d) for d in a.depths)}"
    ops = " searched ops" if a.decoder_ops else ""
    return f"{a.encoder}{depths} + {a.decoder}{ops} (width {a.channels}, window {a.window})"


def init_from(model: torch.nn.Module, path: str | Path, cfg: Config, arch: Any = None, *,
              partial: bool = False) -> None:
    """Initialise ``model`` from the weights of checkpoint ``path`` (``--init``): tensors of the same name and shape
    are loaded; the matched share (matched / the model's tensors) and the missing and unexpected names are logged.

    Args:
        partial: accept a checkpoint that fills fewer than ``MIN_INIT_SHARE`` of the model's tensors
            (``--init-partial``).

    Raises:
        CheckpointError: as ``_init_state``.
    """
    state, matched, total = _init_state(model, path, cfg, arch, partial=partial)
    missing, unexpected = model.load_state_dict(state, strict=False)
    log.info("initialised from %s: %d of the model's %d tensors (%.0f%%; missing %d, unexpected %d keys)", path,
             matched, total, 100 * matched / max(total, 1), len(missing), len(unexpected))


def _init_state(model: torch.nn.Module, path: str | Path, cfg: Config, arch: Any = None, *,
                partial: bool = False) -> tuple[dict[str, torch.Tensor], int, int]:
    """The checked ``--init`` state of checkpoint ``path`` for ``model``: (state dict in the model's names, tensors
    of the model it fills, tensors of the model).

    Raises:
        CheckpointError: unreadable file, a checkpoint of another model (tensors of the same name with other
            shapes; the message says which model each side is), or one that fills fewer than ``MIN_INIT_SHARE`` of
            the model's tensors without ``partial``.
    """
    ck = load_checkpoint(path)
    state = ck["model"]
    translate = getattr(model, "translate_init_state", None)  # e.g. per-frame arch2 -> the arch2 fusion's names
    if translate is not None:
        state = translate(state)
    own = model.state_dict()
    clash = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if clash:
        theirs = "unknown"
        try:
            ck_cfg = config_from_dict(ck["config"])
            ck_arch = Arch.from_dict(ck["arch"]) if ck.get("arch") else None
            theirs = _describe(ck_cfg, ck_arch)
        except (KeyError, ValueError):
            pass
        raise CheckpointError(
            f"--init {path} holds another model ({theirs}) than the one trained here ({_describe(cfg, arch)}): "
            f"{len(clash)} tensors differ in shape, e.g. {clash[0]} {tuple(state[clash[0]].shape)} vs "
            f"{tuple(own[clash[0]].shape)}")
    matched = sum(k in own for k in state)
    share = matched / max(len(own), 1)
    if share < MIN_INIT_SHARE and not partial:
        raise CheckpointError(
            f"--init {path} fills {matched} of the model's {len(own)} tensors ({share:.0%}, below "
            f"{MIN_INIT_SHARE:.0%}): it holds another model ({_describe(cfg, arch)} is trained here); pass "
            "--init-partial to initialise just those tensors")
    return state, matched, len(own)


def check_init(cfg: Config, path: str | Path, arch: Any = None, *, partial: bool = False) -> None:
    """The checks of ``init_from`` against a throwaway CPU model of ``cfg`` (``arch``), nothing loaded or logged: a
    ``--init`` that does not fit fails here, before the run directory is touched (an ``--overwrite`` deletes only
    after every input is checked).

    Raises:
        CheckpointError: as ``init_from``.
    """
    cpu = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=None))
    model = build_model(cpu, arch, num_classes=open_source(cfg.data).num_classes)
    _init_state(model, path, cfg, arch, partial=partial)


def context_grad_frames(cfg: Config) -> list[bool] | None:
    """``train.context_grad=false`` with ``data.supervise=target`` and a window > 1: one flag per window position,
    True only at the target (``vidnas.models.layers.encode_clip``); else None (gradients through every frame)."""
    if cfg.train.context_grad or cfg.data.supervise != "target" or cfg.data.window <= 1:
        return None
    pos = target_position(cfg.data.window, cfg.data.temporal)
    return [k == pos for k in range(cfg.data.window)]


def _scores(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {f"{prefix}_{k}": metrics[k] for k in ("miou", "fwiou", "pixel_acc", "macc")}


def report_split(model: torch.nn.Module, best_path: Path, history: list[dict[str, Any]], best_epoch: int,
                 val_ds: Any, cfg: Config, num_classes: int, *, device: torch.device,
                 show_progress: bool = False) -> dict[str, Any]:
    """The reported split (``data.val_split``) read once, after a training whose decisions used the selection split:
    the chosen checkpoint (``best_path``, picked on the selection split) and the last weights (``model``).

    Returns:
        ``{"split", "best": {"epoch", "val_miou", ...}, "last": {"epoch", "val_miou", ...}}`` (``best`` absent
        without a best checkpoint); epochs 0-based.
    """
    kw = {"device": device, "batch_size": cfg.train.batch_size, "show_progress": show_progress}
    out: dict[str, Any] = {"split": cfg.data.val_split}
    if history:
        last = evaluate_clips(model, val_ds, num_classes, cfg.data.ignore_index, **kw)
        out["last"] = {"epoch": history[-1]["epoch"], **_scores(last, "val")}
    if best_path.exists():
        best_model = copy.deepcopy(model)
        best_model.load_state_dict(load_checkpoint(best_path)["model"])
        best = evaluate_clips(best_model, val_ds, num_classes, cfg.data.ignore_index, **kw)
        out["best"] = {"epoch": best_epoch, **_scores(best, "val")}
    return out


def train(
    cfg: Config,
    run_dir: str | Path,
    *,
    arch: Any = None,
    resume: bool = False,
    init_weights: str | Path | None = None,
    init_partial: bool = False,
    show_progress: bool = True,
) -> TrainResult:
    """Train ``build_model(cfg, arch)`` on ``cfg.data``; checkpoints and logs go to ``run_dir``.

    Args:
        cfg: resolved configuration (data, model, train sections are used).
        run_dir: run directory; ``checkpoints/last.pt`` every epoch, ``checkpoints/best.pt`` by val mIoU,
            ``metrics.jsonl``, ``tb/`` and ``train_summary.json``. With ``data.selection_videos`` those videos leave
            the training set, best.pt is chosen by their mIoU (``select_miou``), and ``data.val_split`` is evaluated
            only after the last epoch, on best.pt and on the last weights (``TrainResult.reported``, a ``report``
            record in ``metrics.jsonl``, ``reported`` in ``train_summary.json``).
        arch: optional ``vidnas.models.Arch`` overriding the model config.
        resume: continue from ``run_dir/checkpoints/last.pt`` (exactly: same weights as an uninterrupted run).
        init_weights: optional checkpoint whose model weights initialise the network (e.g. a supernet's).
        init_partial: accept an ``init_weights`` that fills fewer than ``MIN_INIT_SHARE`` of the tensors.
        show_progress: tqdm progress bars (rank 0 only).

    Raises:
        DivergedError: a non-finite loss (float32 and bf16; fp16's loss scaling handles its own overflows) or
            non-finite weights at the end of an epoch; the checkpoints keep the last finite weights.
    """
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    last_path = ckpt_dir / "last.pt"
    if not resume and last_path.exists():
        raise ValueError(f"{run_dir} already holds a training run ({last_path}); continue it with resume "
                         "(--resume) or train into another directory")
    if resume:
        if not last_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {last_path}")
        resume_state = load_checkpoint(last_path)
        if arch is None and resume_state.get("arch"):  # a run of a searched model continues with its architecture
            arch = Arch.from_dict(resume_state["arch"], source=str(last_path))
    remove_orphan_temporaries([run_dir, ckpt_dir])  # a run killed mid-write leaves .NAME.XXXX.tmp files
    dist_info: DistInfo = init_distributed(cfg.train.device)
    device = torch.device(cfg.train.device)
    logger = RunLogger(run_dir, enabled=dist_info.is_main)

    seed_everything(cfg.train.seed)
    source, train_ds, val_ds = build_datasets(cfg)
    select_ds = None
    if cfg.data.selection_videos:  # decisions on held-out train videos; the val split is read only at the end
        train_ds, select_ds = selection_datasets(cfg, source)
    decide_ds, decide = (val_ds, "val") if select_ds is None else (select_ds, "select")
    if len(train_ds) == 0:
        raise ValueError(f"no annotated training frames in split {cfg.data.train_split!r} of {cfg.data.format}")
    model = build_model(cfg, arch, num_classes=source.num_classes).to(device)
    if init_weights is not None:
        init_from(model, init_weights, cfg, arch, partial=init_partial)
    freeze_encoder_if_asked(model, cfg)
    if cfg.train.channels_last and not use_channels_last(model):
        log.warning("train.channels_last: the model has no CNN encoder to convert; it trains as it is")
    if dist_info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = build_optimizer(model, cfg)

    start_epoch, best_miou, best_epoch, history = 0, -1.0, -1, []
    timing = {"step_seconds": 0.0, "data_seconds": 0.0}  # this invocation's epochs (the loader's share of them)
    if resume:
        state = resume_state
        unwrap(model).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"] + 1
        best_miou, best_epoch = state["best_miou"], state["best_epoch"]
        history = state.get("history", [])
        logger.truncate_after("epoch", "epoch", state["epoch"])
        logger.truncate_after("train", "epoch", state["epoch"])
        if select_ds is not None:  # the report of the run's earlier end (step = epochs done) is stale
            logger.truncate_after("report", "step", state["epoch"])
        log.info("resumed from %s at epoch %d", last_path, start_epoch)

    if len(val_ds) == 0:
        log.warning("split %r of %s has no annotated frames: no validation, no best.pt (use checkpoints/last.pt)",
                    cfg.data.val_split, cfg.data.format)
    ignore = cfg.data.ignore_index
    weight = class_weights(source, cfg.data.train_split, source.num_classes).to(device) \
        if cfg.train.loss == "balanced" else None
    ohem = cfg.train.ohem_keep if cfg.train.loss == "ohem" else None

    def loss_of(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return segmentation_loss(logits.float(), masks, ignore, weight=weight, ohem_keep=ohem)

    scaler = grad_scaler(device, cfg.train.amp)
    if resume and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    loading = loader_options(device, cfg.data.num_workers, cfg.data.persistent_workers)
    # every training frame decoded once, here, when data.cache_frames holds them all: epochs then only augment, and
    # loader workers (forked later) share the cache instead of each decoding what it reads
    t_load = time.perf_counter()
    cached = train_ds.preload()
    if cached:
        log.info("decoded %d training frames into the cache in %.1f s", cached, time.perf_counter() - t_load)
    t_start = time.perf_counter()
    n_steps = steps_per_epoch(len(train_ds), cfg.train.batch_size, dist_info.world_size, cfg.train.max_steps_per_epoch)
    total_steps = max(cfg.train.epochs * n_steps, 1)
    warmup_steps = round(cfg.train.warmup_epochs * n_steps)
    scheduled = cfg.train.schedule != "constant" or warmup_steps > 0
    grad_frames = context_grad_frames(cfg)

    def diverged(what: str) -> DivergedError:
        kept = f"the last finite checkpoint is kept: {last_path}" if last_path.exists() else "no checkpoint was written"
        return DivergedError(f"training diverged: {what}; {kept}. Lower the learning rate (train.lr is "
                             f"{cfg.train.lr:g}; try --set train.lr={cfg.train.lr / 10:g})")

    def begin(epoch: int) -> None:
        train_ds.set_epoch(epoch)  # augmentation drawn from (seed, epoch, item): identical after a resume
        model.train()
        if cfg.train.encoder_lr_scale == 0:
            _encoder_of(model).eval()  # frozen encoder: BatchNorm statistics stay the pretrained ones

    def batches(epoch: int) -> DataLoader:
        return epoch_loader(train_ds, batch_size=cfg.train.batch_size, seed=cfg.train.seed, epoch=epoch,
                            dist_info=dist_info, **loading)

    def step(epoch: int, i: int, batch: dict[str, Any]) -> dict[str, float]:
        frames = batch["frames"].to(device, non_blocking=True)  # (B, T, 3, H, W)
        masks = batch["masks"].to(device, non_blocking=True)  # (B, T, H, W)
        with autocast(device, cfg.train.amp):
            # (B, T, K, H, W), or (logits, [aux logits...]) for models with auxiliary heads
            out = model(frames) if grad_frames is None else model(frames, grad_frames=grad_frames)
            logits, aux = (out[0], out[1]) if isinstance(out, tuple) else (out, [])
            loss = loss_of(logits, masks)
            for a in aux:
                loss = loss + cfg.train.aux_weight * loss_of(a, masks)
        if scheduled:
            _set_lr(opt, cfg.train.lr * lr_factor(epoch * n_steps + i, total_steps, schedule=cfg.train.schedule,
                                                  warmup_steps=warmup_steps))
        value = loss.item()
        if not math.isfinite(value) and not scaler.is_enabled():
            raise diverged(f"the loss is {value} at step {epoch * n_steps + i} (epoch {epoch + 1}, batch {i + 1})")
        backward_step(loss, opt, scaler)
        if i % max(cfg.train.log_every, 1) == 0:
            logger.log("train", epoch * n_steps + i, epoch=epoch, loss=value, lr=opt.param_groups[0]["lr"])
        return {"loss": value}

    def validate(epoch: int) -> dict[str, float]:
        due = (epoch + 1) % max(cfg.train.val_every, 1) == 0 or epoch + 1 == cfg.train.epochs
        if not due or len(decide_ds) == 0:
            return {}
        metrics = evaluate_clips(unwrap(model), decide_ds, source.num_classes, ignore, device=device,
                                 batch_size=cfg.train.batch_size, show_progress=show_progress and dist_info.is_main)
        return _scores(metrics, decide)

    def end(res: EpochResult) -> None:
        nonlocal best_miou, best_epoch
        record: dict[str, Any] = {"epoch": res.epoch, "train_loss": res.loss, **res.val}
        history.append(record)
        timing["step_seconds"] += res.seconds
        timing["data_seconds"] += res.data_seconds
        # timings go to the log only: the history (and the checkpoint) of a run repeat bit for bit
        share = res.data_seconds / res.seconds if res.seconds > 0 else 0.0
        logger.log("epoch", res.epoch, **record, epoch_seconds=res.seconds, data_seconds=res.data_seconds,
                   data_share=share)
        is_best = f"{decide}_miou" in record and record[f"{decide}_miou"] > best_miou
        if is_best:
            best_miou, best_epoch = record[f"{decide}_miou"], res.epoch
        bad = [k for k, v in unwrap(model).state_dict().items() if v.is_floating_point()
               and not bool(torch.isfinite(v).all())]
        if bad:
            raise diverged(f"{len(bad)} weight tensors hold NaN or inf after epoch {res.epoch + 1} (e.g. {bad[0]})")
        if dist_info.is_main:
            state = {
                "model": unwrap(model).state_dict(),
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": res.epoch,
                "best_miou": best_miou,
                "best_epoch": best_epoch,
                "history": history,
                "config": config_to_dict(cfg),
                "arch": arch.to_dict() if arch is not None and hasattr(arch, "to_dict") else None,
                "num_classes": source.num_classes,
                "class_names": list(source.class_names),
            }
            save_checkpoint(last_path, state)
            if is_best:
                save_checkpoint(ckpt_dir / "best.pt", state)
        log.info("epoch %d: %s; %.1f s, data loading %.1f s (%.0f%%)", res.epoch,
                 {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}, res.seconds,
                 res.data_seconds, 100 * share)

    fit(step, batches, epochs=cfg.train.epochs, steps=n_steps, start_epoch=start_epoch, seed=cfg.train.seed,
        begin=begin, validate=validate, end=end, model=model, dist_info=dist_info, show_progress=show_progress)

    seconds = time.perf_counter() - t_start
    if dist_info.enabled:  # each rank records a fingerprint of its weights: DDP must keep them identical
        atomic_write_json(run_dir / "ranks" / f"rank{dist_info.rank}.json",
                          {"rank": dist_info.rank, "weights_sha256": weights_fingerprint(unwrap(model))})
    reported = None
    if select_ds is not None and dist_info.is_main and len(val_ds) > 0:
        reported = report_split(unwrap(model), ckpt_dir / "best.pt", history, best_epoch, val_ds, cfg,
                                source.num_classes, device=device, show_progress=show_progress)
        logger.log("report", len(history), **{f"{k}_{m}": v for k, d in reported.items() if isinstance(d, dict)
                                                   for m, v in d.items()}, split=reported["split"])
        log.info("reported split %r (read once, after training): %s", cfg.data.val_split, reported)
    elif select_ds is not None and dist_info.is_main:
        log.warning("split %r of %s has no annotated frames: nothing to report", cfg.data.val_split, cfg.data.format)
    result = TrainResult(run_dir=run_dir, best_miou=best_miou, best_epoch=best_epoch, history=history,
                         last_checkpoint=last_path if last_path.exists() else None,
                         best_checkpoint=(ckpt_dir / "best.pt") if (ckpt_dir / "best.pt").exists() else None,
                         train_seconds=seconds, reported=reported)
    if dist_info.is_main:
        summary: dict[str, Any] = {
            "best_miou": best_miou, "best_epoch": best_epoch, "epochs": cfg.train.epochs, "history": history,
            "train_seconds_this_invocation": seconds, "world_size": dist_info.world_size,
            "torch_threads": torch.get_num_threads(),
            # seconds of this invocation's epochs (steps, not validation) and the part spent waiting for batches
            "train_clips": len(train_ds), "batch_size": cfg.train.batch_size, "steps_per_epoch": n_steps,
            "step_seconds_this_invocation": timing["step_seconds"],
            "data_seconds_this_invocation": timing["data_seconds"],
            "data_share": timing["data_seconds"] / timing["step_seconds"] if timing["step_seconds"] > 0 else None,
        }
        if select_ds is not None:  # which split made which number
            summary["decided_on"] = {"split": cfg.data.train_split, "videos": list(cfg.data.selection_videos),
                                     "frames": len(select_ds), "decides": "best_epoch (best.pt) by select_miou"}
            summary["reported"] = reported
        atomic_write_json(run_dir / "train_summary.json", summary)
        plot_training_curves(history, run_dir / "curves.png",
                             title=f"{cfg.model.encoder} + {cfg.model.decoder} on {cfg.data.format}")
    logger.close()
    return result
