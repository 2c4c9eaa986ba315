"""Evaluation: clip-wise (the training protocol) and streaming over whole videos (the deployment protocol).

- :func:`evaluate_clips` scores the target frame of every window of a ClipDataset (fast; used for validation).
- :func:`evaluate_stream` pushes every frame of every video through ``model.stream()`` in order, exactly as
  ``vidnas predict`` does, scores every annotated frame and measures temporal consistency (VC_n, flicker) between
  consecutive annotated frames.
- :func:`run_eval` does both on a checkpoint (any kind ``vidnas.models.load_model`` reads) and writes the report files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from vidnas.checkpoint import load_checkpoint
from vidnas.config import Config, apply_overrides, config_from_dict, load_config
from vidnas.data import ClipDataset, DataError, VideoFrames, denormalize, open_source, overlay, val_data_config
from vidnas.metrics import ConfusionMatrix, TemporalConsistency
from vidnas.models import load_model
from vidnas.utils import atomic_write_json, atomic_write_text

__all__ = [
    "evaluate_clips",
    "evaluate_stream",
    "eval_config",
    "default_eval_dir",
    "run_eval",
    "per_class_table",
]

log = logging.getLogger(__name__)


@torch.inference_mode()
def evaluate_clips(model: torch.nn.Module, clip_ds, num_classes: int, ignore_index: int, *, device="cpu",
                   batch_size: int = 4, show_progress: bool = False,
                   forward_kwargs: Mapping[str, Any] | None = None, context: str = "real") -> dict[str, Any]:
    """Confusion-matrix metrics over the target frame of every clip.

    Under torchrun the matrix is summed over ranks only if the caller shards ``clip_ds``; here every rank scores
    the whole set, so all ranks agree without communication.

    Args:
        forward_kwargs: keyword arguments of every clip forward (a dynamic-cell model's ``key_interval``).
        context: ``real`` (the clip as it is) or ``target`` (every frame of the window replaced by the target
            frame: what the model predicts without its context, the ablation of ``vidnas eval --context-ablation``).
    """
    if context not in ("real", "target"):
        raise ValueError(f"context must be 'real' or 'target', got {context!r}")
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    loader = DataLoader(clip_ds, batch_size=batch_size, shuffle=False)
    for batch in tqdm(loader, desc="val", leave=False, disable=not show_progress, dynamic_ncols=True):
        frames = batch["frames"].to(device)  # (B, T, 3, H, W)
        target = batch["target"].to(device)  # (B,)
        idx = torch.arange(frames.shape[0], device=device)
        if context == "target":  # (B, 3, H, W) -> the window (B, T, 3, H, W) of copies
            frames = frames[idx, target][:, None].expand_as(frames).contiguous()
        logits = model(frames, **(forward_kwargs or {}))  # (B, T, K, H, W)
        pred = logits[idx, target].argmax(1)  # (B, H, W)
        gt = batch["masks"].to(device)[idx, target]  # (B, H, W)
        cm.update(pred.cpu(), gt.cpu())
    model.train(was_training)
    return cm.compute()


@torch.inference_mode()
def context_changed_pixels(model: torch.nn.Module, clip_ds, *, device="cpu", batch_size: int = 4) -> float:
    """Fraction of the target frames' pixels whose predicted label changes when the real context frames of each
    window are replaced by the target frame (0: the model ignores its context)."""
    was_training = model.training
    model.eval()
    changed = total = 0
    for batch in DataLoader(clip_ds, batch_size=batch_size, shuffle=False):
        frames = batch["frames"].to(device)  # (B, T, 3, H, W)
        target = batch["target"].to(device)
        idx = torch.arange(frames.shape[0], device=device)
        real = model(frames)[idx, target].argmax(1)  # (B, H, W)
        alone = model(frames[idx, target][:, None].expand_as(frames).contiguous())[idx, target].argmax(1)
        changed += int((real != alone).sum())
        total += real.numel()
    model.train(was_training)
    return changed / max(total, 1)


@torch.inference_mode()
def evaluate_stream(model, source, split: str, data_cfg, *, device="cpu", show_progress: bool = False,
                    overlay_dir: Path | None = None, max_overlays: int = 4, vc_lengths=(2, 8),
                    stream_kwargs: Mapping[str, Any] | None = None, stride: int = 1) -> dict[str, Any]:
    """Stream every video of ``split`` frame by frame; score annotated frames and temporal consistency.

    Args:
        stream_kwargs: streaming settings for ``model.stream`` (e.g. a dynamic-cell model's ``key_interval``).
        stride: stream every ``stride``-th frame: each video becomes ``stride`` interleaved sequences (offsets
            ``0 .. stride - 1``), each streamed from its own start, so consecutive frames are as far apart as in a
            model trained with that spacing (``data.val_frame_stride``).

    Returns the confusion-matrix metrics plus ``vc{n}`` and ``flicker``, ``frames`` (all frames pushed) and
    ``annotated`` (frames scored).
    """
    model.eval()
    cm = ConfusionMatrix(source.num_classes, ignore_index=source.ignore_index)
    tc = TemporalConsistency(n=tuple(vc_lengths), ignore_index=source.ignore_index)
    videos = source.videos(split)
    total = sum(len(v.frames) for v in videos)
    bar = tqdm(total=total, desc=f"stream {split}", leave=False, disable=not show_progress, dynamic_ncols=True)
    n_frames = n_annot = n_overlays = 0
    sequences = [(video, offset) for video in videos for offset in range(min(stride, max(len(video.frames), 1)))]
    for video, offset in sequences:
        streamer = model.stream(batch_size=1, **(stream_kwargs or {}))
        tc.reset_video()
        pending: list[tuple[Any, Any]] = []  # (mask, frame) waiting for their logits (centred windows lag)

        def consume(logits, mask, frame, video=video):
            nonlocal n_annot, n_overlays
            pred = logits.argmax(1)[0].cpu()  # (H, W)
            if mask is None:
                tc.reset_video()  # consistency is only defined between consecutive annotated frames
                return
            cm.update(pred, mask)
            tc.update(pred, mask)
            n_annot += 1
            if overlay_dir is not None and n_overlays < max_overlays:
                _save_overlay(overlay_dir / f"{video.name}_{n_annot:05d}.png", frame, pred, mask, source)
                n_overlays += 1

        for frame, mask, _num in VideoFrames(source, video, data_cfg, stride=stride, offset=offset):
            out = streamer.push(frame.unsqueeze(0).to(device))  # (1, K, H, W) or None
            pending.append((mask, frame))
            n_frames += 1
            bar.update(1)
            if out is not None:
                m, f = pending.pop(0)
                consume(out, m, f)
        for out in streamer.flush():
            m, f = pending.pop(0)
            consume(out, m, f)
    bar.close()
    metrics = cm.compute()
    metrics.update(tc.compute())
    metrics.update(frames=n_frames, annotated=n_annot, videos=len(videos), stride=stride)
    return metrics


def _save_overlay(path: Path, frame: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, source) -> None:
    """Side by side: frame | prediction overlay | ground-truth overlay, in the data set's palette."""
    img = (denormalize(frame).clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)  # (H, W, 3)
    palette = np.asarray(source.palette, dtype=np.uint8)
    tiles = [img] + [overlay(img, lbl.numpy(), palette, source.ignore_index, alpha=0.55) for lbl in (pred, mask)]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles, axis=1)).save(path)


def per_class_table(metrics: dict[str, Any], class_names: list[str]) -> str:
    """Markdown table of per-class IoU plus the summary metrics."""
    lines = ["| class | IoU |", "|---|---|"]
    for name, iou in zip(class_names, metrics["per_class_iou"], strict=False):
        lines.append(f"| {name} | {'n/a' if iou != iou else f'{iou:.4f}'} |")
    lines.append("")
    for key in ("miou", "fwiou", "pixel_acc", "macc", "reward", "vc2", "vc8", "flicker"):
        if key in metrics:
            lines.append(f"- {key}: {metrics[key]:.4f}")
    return "\n".join(lines) + "\n"


def eval_config(checkpoint: str | Path, config: str | None = None, overrides: Sequence[str] = ()) -> Config:
    """The config to evaluate ``checkpoint`` with: the one it was trained with (or the ``config`` preset), plus
    ``overrides`` (``data.root=...``, ``data.format=...``...).

    Raises:
        CheckpointError: unreadable checkpoint. ConfigError: a bad preset or override.
    """
    if config is not None:
        cfg = load_config(config, list(overrides))
    else:
        cfg = apply_overrides(config_from_dict(load_checkpoint(checkpoint)["config"]), list(overrides))
    root = cfg.data.root
    if root and not Path(root).exists():
        how = ("relative, resolved against the working directory " + str(Path.cwd())) if not Path(root).is_absolute() \
            else "absolute"
        raise DataError(f"data.root {root} ({how}, as the config of {checkpoint} stores it) does not exist here; "
                        "pass --root DIR (or --set data.root=DIR)")
    return cfg


def default_eval_dir(checkpoint: str | Path) -> Path:
    """Where ``vidnas eval`` writes without ``--out``: ``eval/<checkpoint name>`` in the run the checkpoint belongs
    to (``RUN/checkpoints/best.pt`` -> ``RUN/eval/best``; ``RUN/derived_init.pt`` -> ``RUN/eval/derived_init``;
    ``SEARCH/top/cell0/model.pt`` -> ``SEARCH/top/cell0/eval/model``)."""
    p = Path(checkpoint).resolve()
    run = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    return run / "eval" / p.stem


def run_eval(cfg, checkpoint: str | Path, out_dir: str | Path, *, split: str | None = None, stream: bool = True,
             show_progress: bool = True, key_interval: int | None = None,
             context_ablation: bool = False, ready: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on ``split`` of ``cfg.data``; write ``eval.json``, ``per_class.md`` and overlays.
    ``eval.json`` names the split it scored (``split``) and, for a checkpoint chosen on a selection split
    (``data.selection_videos`` of its training), the videos that chose it (``chosen_on``).

    Args:
        key_interval: dynamic-cell models: also run the static network every ``key_interval`` frames, in the clip
            forward and the stream (refused for other models).
        context_ablation: window models: score the clips again with every frame of each window replaced by its
            target frame (``clips_target_context``, and ``clips_matched_target_context`` under the matched
            protocol), and the fraction of target pixels whose label the real context changes
            (``context_changed_pixels``): whether the model uses its context, and whether that pays.
        ready: called once the model, its options and the data are loaded and checked, before anything is written
            to ``out_dir`` (the CLI prepares, and may replace, its output directory there).
    """
    out_dir = Path(out_dir)
    loaded = load_model(checkpoint, device=cfg.train.device)
    model = loaded.model
    if context_ablation and int(getattr(model, "window", 1)) <= 1:
        raise ValueError(f"--context-ablation: {checkpoint} has window 1: its clips hold no context "
                         "frames to replace (per-frame models)")
    options = {} if key_interval is None else {"key_interval": int(key_interval)}
    if options:
        try:
            model.stream(**options)  # refuses a key interval for models without key frames, before any work
        except ValueError as e:
            raise ValueError(f"--key-interval: {checkpoint}: {e}") from e
    source = open_source(cfg.data)
    if source.num_classes != loaded.num_classes:
        raise ValueError(f"{checkpoint} predicts {loaded.num_classes} classes but {cfg.data.format} data at "
                         f"{cfg.data.root} has {source.num_classes}")
    split = split or cfg.data.val_split
    clip_ds = ClipDataset(source, split, cfg.data, train=False)
    if ready is not None:
        ready()
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "split": split, "format": cfg.data.format}
    trained = loaded.cfg.data
    if trained.selection_videos:  # the training chose this checkpoint on a selection split: say which
        result["chosen_on"] = {"split": trained.train_split, "videos": list(trained.selection_videos),
                               "epoch": loaded.checkpoint.get("epoch")}
    if key_interval is not None:
        result["key_interval"] = int(key_interval)
    result["clips"] = evaluate_clips(model, clip_ds, source.num_classes, source.ignore_index,
                                     device=cfg.train.device, batch_size=max(1, cfg.train.batch_size // 2),
                                     show_progress=show_progress, forward_kwargs=options)
    if stream:
        result["stream"] = evaluate_stream(model, source, split, cfg.data, device=cfg.train.device,
                                           show_progress=show_progress, overlay_dir=out_dir / "overlays",
                                           stream_kwargs=options)
    matched = cfg.data.val_frame_stride
    if matched is not None and matched != cfg.data.frame_stride:  # the protocol whose spacing matches training
        result["val_frame_stride"] = matched
        result["clips_matched"] = evaluate_clips(
            model, ClipDataset(source, split, val_data_config(cfg.data), train=False), source.num_classes,
            source.ignore_index, device=cfg.train.device, batch_size=max(1, cfg.train.batch_size // 2),
            show_progress=show_progress, forward_kwargs=options)
        if stream:
            result["stream_matched"] = evaluate_stream(model, source, split, cfg.data, device=cfg.train.device,
                                                       show_progress=show_progress, stream_kwargs=options,
                                                       stride=matched)
    if context_ablation:
        protocols = [("clips", cfg.data)]
        if "clips_matched" in result:
            protocols.append(("clips_matched", val_data_config(cfg.data)))
        for name, data_cfg in protocols:
            result[f"{name}_target_context"] = evaluate_clips(
                model, ClipDataset(source, split, data_cfg, train=False), source.num_classes, source.ignore_index,
                device=cfg.train.device, batch_size=max(1, cfg.train.batch_size // 2), show_progress=show_progress,
                forward_kwargs=options, context="target")
        result["context_changed_pixels"] = context_changed_pixels(model, clip_ds, device=cfg.train.device,
                                                                  batch_size=max(1, cfg.train.batch_size // 2))
    atomic_write_json(out_dir / "eval.json", result)
    main = result.get("stream", result["clips"])
    atomic_write_text(out_dir / "per_class.md", per_class_table(main, list(source.class_names)))
    return result
