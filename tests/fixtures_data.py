"""Builders of tiny data sets in the exact published layouts (CholecSeg8K, Cityscapes sequences) and the folder layout.

CholecSeg8K and Cityscapes cannot be redistributed, so tests write small look-alikes: real PNG files, real folder
structure, real label codes. Plain functions (not fixtures) so each test module decides the scope.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# watershed grey codes of the 13 CholecSeg8K classes, in class order
CHOLEC_GREYS = (50, 11, 21, 13, 12, 31, 23, 24, 25, 32, 22, 33, 5)
CHOLEC_H, CHOLEC_W = 24, 32
CHOLEC_STRAY = 77
CHOLEC_STRAY_PIXELS = 3  # per mask that carries strays


def save_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def cholec_watershed(seed: int, stray: bool) -> np.ndarray:
    """A (H, W) watershed grey mask: the 13 codes in vertical bands, a few 0 pixels, a 255 border, optional strays."""
    inner = CHOLEC_W - 2
    cols = np.roll(np.arange(inner) * len(CHOLEC_GREYS) // inner, seed)
    m = np.full((CHOLEC_H, CHOLEC_W), 255, np.uint8)
    m[1:-1, 1:-1] = np.array(CHOLEC_GREYS, dtype=np.uint8)[cols][None, :]
    m[5, 5:8] = 0  # unlabelled pixels
    if stray:
        m[10, 10:10 + CHOLEC_STRAY_PIXELS] = CHOLEC_STRAY
    m[0, :] = m[-1, :] = 255  # the 1-pixel white border of every CholecSeg8K mask
    m[:, 0] = m[:, -1] = 255
    return m


def make_cholecseg8k(root: Path, frames_per_clip: int = 4) -> Path:
    """Two videos (01: train, 12: test), one clip each, in the Kaggle layout.

    video01/video01_00080: frames 80..; every frame annotated; frame 81's watershed mask is RGBA; frame 82 has stray
    values. video12/video12_00400: frames 400..; the last frame has no watershed mask. Every frame also has a
    ``_endo_color_mask.png`` and a ``_endo_mask.png`` full of garbage values (of another size) that must never be read.
    """
    rng = np.random.default_rng(0)
    for vid, start in ((1, 80), (12, 400)):
        clip = root / f"video{vid:02d}" / f"video{vid:02d}_{start:05d}"
        for i in range(frames_per_clip):
            k = start + i
            save_png(clip / f"frame_{k}_endo.png", rng.integers(0, 256, (CHOLEC_H, CHOLEC_W, 3), dtype=np.uint8))
            grey = cholec_watershed(i, stray=(vid == 1 and i == 2))
            if not (vid == 12 and i == frames_per_clip - 1):
                rgb = np.stack([grey] * 3, -1)
                if vid == 1 and i == 1:
                    rgb = np.concatenate([rgb, np.full((CHOLEC_H, CHOLEC_W, 1), 255, np.uint8)], -1)  # RGBA
                save_png(clip / f"frame_{k}_endo_watershed_mask.png", rgb)
            save_png(clip / f"frame_{k}_endo_color_mask.png", rng.integers(0, 256, (CHOLEC_H, CHOLEC_W, 3),
                                                                           dtype=np.uint8))
            save_png(clip / f"frame_{k}_endo_mask.png", np.full((CHOLEC_H + 2, CHOLEC_W), 199, np.uint8))
    return root


CITY_H, CITY_W = 8, 16
# labelIds painted in the annotated frames, one per column, and the trainIds they must become
CITY_LABEL_IDS = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 26, 31, 33, 0, 1, 9, 14, 29], np.uint8)
CITY_TRAIN_IDS = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 16, 18] + [255] * 5, np.int64)


def city_label_mask() -> np.ndarray:
    """(H, W) labelIds: columns cycle through CITY_LABEL_IDS."""
    cols = CITY_LABEL_IDS[np.arange(CITY_W) % len(CITY_LABEL_IDS)]
    return cols[None, :].repeat(CITY_H, 0)


def make_cityscapes(root: Path) -> Path:
    """Sequence release layout with three 30-frame snippets.

    train/aachen: seq 000000 frames 0..59 (two contiguous snippets, annotated at 19 and 49).
    val/frankfurt: seq 000000 frames 276..305 (one snippet annotated at 295).
    Frame pixel values encode the frame number (for order checks).
    """
    def snippet(split: str, city: str, seq: str, first: int, annotated: list[int], last: int) -> None:
        for k in range(first, last + 1):
            img = np.full((CITY_H, CITY_W, 3), k % 256, np.uint8)
            save_png(root / "leftImg8bit_sequence" / split / city / f"{city}_{seq}_{k:06d}_leftImg8bit.png", img)
        for k in annotated:
            save_png(root / "gtFine" / split / city / f"{city}_{seq}_{k:06d}_gtFine_labelIds.png", city_label_mask())
            # the other gtFine files of the release must be ignored
            save_png(root / "gtFine" / split / city / f"{city}_{seq}_{k:06d}_gtFine_color.png",
                     np.zeros((CITY_H, CITY_W, 3), np.uint8))

    snippet("train", "aachen", "000000", 0, [19, 49], 59)
    snippet("val", "frankfurt", "000000", 276, [295], 305)
    return root


def make_folder(root: Path, n_frames: int = 6, size: tuple[int, int] = (12, 16), annotated: tuple[int, ...] = (0, 2, 4),
                classes: tuple[str, ...] = ("background", "thing", "stuff"), splits: bool = True) -> Path:
    """``folder`` layout: video ``clipA`` (frames 0..n-1, masks for ``annotated``), ``clipB`` (no masks at all).

    Frame i of clipA is a flat image of grey value 20 * i + 10 (so a window's frames can be identified by colour);
    mask i holds class (i % 3) in the left half and ((i + 1) % 3) in the right half.
    """
    h, w = size
    for name in ("clipA", "clipB"):
        for i in range(n_frames):
            save_png(root / name / "frames" / f"frame_{i:04d}.png", np.full((h, w, 3), 20 * i + 10, np.uint8))
    for i in annotated:
        m = np.zeros((h, w), np.uint8)
        m[:, : w // 2] = i % 3
        m[:, w // 2:] = (i + 1) % 3
        save_png(root / "clipA" / "masks" / f"frame_{i:04d}.png", m)
    cls_yaml = "names: [" + ", ".join(classes) + "]\ncolors: [" + ", ".join(
        f"[{40 * k}, {80 * k % 256}, 200]" for k in range(len(classes))) + "]\n"
    (root / "classes.yaml").write_text(cls_yaml)
    if splits:
        (root / "splits.yaml").write_text("train: [clipA]\nval: [clipB]\n")
    return root


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 24) -> Path:
    """A real video file of ``frames`` (each (H, W, 3) uint8), MPEG-4 in MP4 (always in PyAV's FFmpeg; the readers do
    not care about the codec)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path
