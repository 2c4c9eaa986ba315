"""Evaluation: clip-wise (the training protocol) and streaming over whole videos (the deployment protocol).

- :func:`evaluate_clips` scores the target frame of every window of a ClipDataset (fast; used for validation).
- :func:`evaluate_stream` pushes every frame of every video through ``VideoSegmenter.stream()`` in order, exactly as
  ``vidnas predict`` does, scores every annotated frame and measures temporal consistency (VC_n, flicker) between
  consecutive annotated frames.
- :func:`run_eval` does both from a checkpoint and writes the report files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from vidnas.utils import atomic_write_json, atomic_write_text

__all__ = ["evaluate_clips", "evaluate_stream", "run_eval", "load_model_from_checkpoint", "per_class_table"]

log = logging.getLogger(__name__)


@torch.inference_mode()
def evaluate_clips(model: torch.nn.Module, clip_ds, num_classes: int, ignore_index: int, *, device="cpu",
                   batch_size: int = 4, show_progress: bool = False) -> dict[str, Any]:
    """Confusion-matrix metrics over the target frame of every clip.

    Under torchrun the matrix is summed over ranks only if the caller shards ``clip_ds``; here every rank scores
    the whole set, so all ranks agree without communication.
    """
    from tqdm.auto import tqdm

    from vidnas.metrics import ConfusionMatrix

    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    loader = DataLoader(clip_ds, batch_size=batch_size, shuffle=False)
    for batch in tqdm(loader, desc="val", leave=False, disable=not show_progress, dynamic_ncols=True):
        frames = batch["frames"].to(device)  # (B, T, 3, H, W)
        target = batch["target"].to(device)  # (B,)
        logits = model(frames)  # (B, T, K, H, W)
        idx = torch.arange(frames.shape[0], device=device)
        pred = logits[idx, target].argmax(1)  # (B, H, W)
        gt = batch["masks"].to(device)[idx, target]  # (B, H, W)
        cm.update(pred.cpu(), gt.cpu())
    model.train(was_training)
    return cm.compute()


@torch.inference_mode()
def evaluate_stream(model, source, split: str, data_cfg, *, device="cpu", show_progress: bool = False,
                    overlay_dir: Path | None = None, max_overlays: int = 4, vc_lengths=(2, 8)) -> dict[str, Any]:
    """Stream every video of ``split`` frame by frame; score annotated frames and temporal consistency.

    Returns the confusion-matrix metrics plus ``vc{n}`` and ``flicker``, ``frames`` (all frames pushed) and
    ``annotated`` (frames scored).
    """
    from tqdm.auto import tqdm

    from vidnas.data import VideoFrames
    from vidnas.metrics import ConfusionMatrix, TemporalConsistency

    model.eval()
    cm = ConfusionMatrix(source.num_classes, ignore_index=source.ignore_index)
    tc = TemporalConsistency(n=tuple(vc_lengths), ignore_index=source.ignore_index)
    videos = source.videos(split)
    total = sum(len(v.frames) for v in videos)
    bar = tqdm(total=total, desc=f"stream {split}", leave=False, disable=not show_progress, dynamic_ncols=True)
    n_frames = n_annot = n_overlays = 0
    for video in videos:
        streamer = model.stream(batch_size=1)
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

        for frame, mask, _num in VideoFrames(source, video, data_cfg):
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
    metrics.update(frames=n_frames, annotated=n_annot, videos=len(videos))
    return metrics


def _save_overlay(path: Path, frame: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, source) -> None:
    """Side by side: frame | prediction overlay | ground-truth overlay, in the data set's palette."""
    from PIL import Image

    from vidnas.data import denormalize

    img = (denormalize(frame).clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)  # (H, W, 3)
    palette = np.asarray(source.palette, dtype=np.uint8)

    def overlay(lbl: torch.Tensor) -> np.ndarray:
        lbl = lbl.numpy()
        valid = (lbl >= 0) & (lbl < len(palette))
        col = img.copy()
        col[valid] = (0.45 * img[valid] + 0.55 * palette[lbl[valid]]).astype(np.uint8)
        return col

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([img, overlay(pred), overlay(mask)], axis=1)).save(path)


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


def load_model_from_checkpoint(path: str | Path, cfg=None, device: str = "cpu", key_interval: int | None = None):
    """Rebuild the model a checkpoint was trained as (its stored config and arch) and load its weights.

    Checkpoints of `vidnas train` and the dynamic-cell models of `vidnas search cells` (``top/cellN/model.pt``) both
    load here, so `vidnas eval` works on either.

    Args:
        key_interval: dynamic-cell models only: re-run the static network every ``key_interval`` frames when
            streaming (None: only on the first frame). Refused for other models.

    Returns:
        (model, cfg, checkpoint state).
    """
    from vidnas.config import config_from_dict
    from vidnas.engine.checkpoint import load_checkpoint
    from vidnas.models import Arch, build_model

    state = load_checkpoint(path)
    if "cell" in state:  # a dynamic-cell model from `vidnas search cells` (static network + searched cell)
        from vidnas.models.cell import load_cell_model

        model, cell_cfg, state = load_cell_model(path, device=device)
        if key_interval is not None:
            from vidnas.models.cell import set_key_interval

            set_key_interval(model, key_interval, str(path))
        return model, (cell_cfg if cfg is None else cfg), state
    if key_interval is not None:
        raise ValueError(f"--key-interval applies to dynamic-cell models only; {path} is not one")
    ck_cfg = config_from_dict(state["config"]) if cfg is None else cfg
    arch = Arch.from_dict(state["arch"]) if state.get("arch") else None
    model = build_model(ck_cfg, arch, num_classes=state["num_classes"]).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, ck_cfg, state


def run_eval(cfg, checkpoint: str | Path, out_dir: str | Path, *, split: str | None = None, stream: bool = True,
             show_progress: bool = True, key_interval: int | None = None) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on ``split`` of ``cfg.data``; write ``eval.json``, ``per_class.md`` and overlays."""
    from vidnas.data import ClipDataset, open_source

    out_dir = Path(out_dir)
    model, _, state = load_model_from_checkpoint(checkpoint, device=cfg.train.device, key_interval=key_interval)
    source = open_source(cfg.data)
    if source.num_classes != state["num_classes"]:
        raise ValueError(f"{checkpoint} predicts {state['num_classes']} classes but {cfg.data.format} data at "
                         f"{cfg.data.root} has {source.num_classes}")
    split = split or cfg.data.val_split
    clip_ds = ClipDataset(source, split, cfg.data, train=False)
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "split": split, "format": cfg.data.format}
    if key_interval is not None:
        result["key_interval"] = int(key_interval)
    result["clips"] = evaluate_clips(model, clip_ds, source.num_classes, source.ignore_index,
                                     device=cfg.train.device, batch_size=max(1, cfg.train.batch_size // 2),
                                     show_progress=show_progress)
    if stream:
        result["stream"] = evaluate_stream(model, source, split, cfg.data, device=cfg.train.device,
                                           show_progress=show_progress, overlay_dir=out_dir / "overlays")
    atomic_write_json(out_dir / "eval.json", result)
    main = result.get("stream", result["clips"])
    atomic_write_text(out_dir / "per_class.md", per_class_table(main, list(source.class_names)))
    return result
