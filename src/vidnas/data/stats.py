"""Data set statistics and preview grids (the library side of `vidnas data stats|preview`)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vidnas.data.base import FrameRef, VideoSource
from vidnas.data.palette import overlay

__all__ = ["split_stats", "preview_grid", "preview_layout"]

Progress = Callable[[Iterable[Any], int, str], Iterable[Any]]


def _spacing(source: VideoSource, split: str) -> dict[str, float | None]:
    diffs: list[int] = []
    for v in source.videos(split):
        nums = [f.frame_number for f in v.frames if f.mask is not None]
        diffs += [b - a for a, b in zip(nums[:-1], nums[1:], strict=True)]
    if not diffs:
        return {"median": None, "min": None, "max": None}
    return {"median": float(np.median(diffs)), "min": int(min(diffs)), "max": int(max(diffs))}


def split_stats(source: VideoSource, split: str, progress: Progress | None = None) -> dict[str, Any]:
    """Count videos and frames of a split and read every mask for the class histogram.

    Args:
        source: the data set.
        split: split name (or "all").
        progress: optional wrapper ``progress(iterable, total, description)`` (the CLI passes a tqdm bar).

    Returns:
        A JSON-ready dict: ``videos``, ``frames``, ``annotated``, ``spacing`` (median/min/max frame-number difference
        between consecutive annotated frames of a video), ``sizes`` (``"HxW": masks``), ``class_share``
        (class name -> fraction of labelled pixels), ``ignored_share`` (fraction of all mask pixels that are void or
        unknown), ``unknown_labels`` (raw value -> pixels), ``unannotated_videos``, ``empty_videos``.
    """
    vids = source.videos(split)
    annotated: list[FrameRef] = [f for v in vids for f in v.frames if f.mask is not None]
    k = source.num_classes
    counts = np.zeros(k + 1, dtype=np.int64)  # last bin: ignore
    sizes: Counter[str] = Counter()
    it: Iterable[FrameRef] = annotated
    if progress is not None:
        it = progress(annotated, len(annotated), f"{source.name}/{split}")
    for f in it:
        m = source.read_mask(f)
        sizes[f"{m.shape[0]}x{m.shape[1]}"] += 1
        valid = (m >= 0) & (m < k)
        counts[:k] += np.bincount(m[valid].ravel(), minlength=k)[:k]
        counts[k] += int((~valid).sum())
    labelled = int(counts[:k].sum())
    total = int(counts.sum())
    names = source.class_names
    return {
        "format": source.name,
        "split": split,
        "videos": len(vids),
        "frames": sum(len(v) for v in vids),
        "annotated": len(annotated),
        "spacing": _spacing(source, split),
        "sizes": dict(sizes.most_common()),
        "num_classes": k,
        "class_share": {names[i]: (float(counts[i]) / labelled if labelled else 0.0) for i in range(k)},
        "ignored_share": float(counts[k]) / total if total else 0.0,
        "unknown_labels": {str(v): c for v, c in source.unknown_labels(annotated).items()},
        "unannotated_videos": [v.name for v in vids if len(v) > 0 and v.num_annotated == 0],
        "empty_videos": [v.name for v in vids if len(v) == 0],
    }


def _pick(source: VideoSource, split: str, n: int) -> list[FrameRef]:
    frames = [f for v in source.videos(split) for f in v.frames if f.mask is not None]
    if not frames:
        frames = [f for v in source.videos(split) for f in v.frames]
    if len(frames) <= n:
        return frames
    idx = np.linspace(0, len(frames) - 1, n).round().astype(int)  # spread over the split's videos
    return [frames[i] for i in idx]


LEGEND_ROW = 18  # pixels per legend row
LEGEND_ITEM = 170  # pixels per legend entry


def preview_layout(n: int, tile_h: int, tile_w: int, num_classes: int, cols: int = 4) -> tuple[int, int, int, int]:
    """Grid geometry: ``(columns, rows, width, height)`` of a preview of ``n`` tiles of ``tile_h x tile_w`` pixels.

    Height includes the legend: ``ceil(num_classes / per_row)`` rows of 18 pixels plus 6 pixels of margin, with
    ``per_row = max(1, width // 170)`` entries per row.
    """
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    width = cols * tile_w
    per_row = max(1, width // LEGEND_ITEM)
    legend = math.ceil(num_classes / per_row) * LEGEND_ROW + 6
    return cols, rows, width, rows * tile_h + legend


def preview_grid(source: VideoSource, split: str, n: int = 8, tile_width: int = 320, cols: int = 4,
                 alpha: float = 0.5) -> Any:
    """A grid of frames with their masks overlaid in the data set's palette, and a legend of class names.

    Frames are annotated frames spread evenly over the split; each tile is ``tile_width`` wide with the first frame's
    aspect ratio, captioned with video and frame number.

    Returns:
        A ``PIL.Image.Image`` (RGB) of the size given by ``preview_layout``.
    """
    frames = _pick(source, split, n)
    if not frames:
        raise ValueError(f"{source.name}/{split}: no frames to preview")
    first = source.read_image(frames[0])
    tile_w = int(tile_width)
    tile_h = max(1, round(tile_w * first.shape[0] / first.shape[1]))
    pal = source.palette
    cols, rows, width, height = preview_layout(len(frames), tile_h, tile_w, source.num_classes, cols)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, f in enumerate(frames):
        img = source.read_image(f)
        mask = source.read_mask(f) if f.mask is not None else None
        tile = Image.fromarray(overlay(img, mask, pal, source.ignore_index, alpha))
        resample = Image.Resampling.NEAREST if mask is not None else Image.Resampling.BILINEAR
        tile = tile.resize((tile_w, tile_h), resample)
        x, y = (i % cols) * tile_w, (i // cols) * tile_h
        canvas.paste(tile, (x, y))
        caption = f"{f.video} #{f.frame_number}" + ("" if mask is not None else " (no mask)")
        draw.rectangle([x, y, x + 6 * len(caption) + 4, y + 12], fill=(0, 0, 0))
        draw.text((x + 2, y), caption, fill=(255, 255, 255))
    per_row = max(1, width // LEGEND_ITEM)
    y0 = rows * tile_h + 3
    for c, name in enumerate(source.class_names):
        x = (c % per_row) * LEGEND_ITEM + 4
        y = y0 + (c // per_row) * LEGEND_ROW
        draw.rectangle([x, y + 2, x + 12, y + 14], fill=tuple(int(v) for v in pal[c]), outline=(0, 0, 0))
        draw.text((x + 16, y + 2), f"{c} {name}"[:26], fill=(0, 0, 0))
    return canvas
