"""CholecSeg8K (Hong et al. 2020): 13-class semantic segmentation of laparoscopic cholecystectomy video.

Layout (as published on Kaggle)::

    <root>/video01/video01_00080/frame_80_endo.png                   RGB frame, 854x480
                                 frame_80_endo_watershed_mask.png    dense labels (grey: the same value in R, G, B)
                                 frame_80_endo_color_mask.png        display colours (not read)
                                 frame_80_endo_mask.png              sparse annotation-tool mask (never read)

A video is one clip folder ``videoNN_SSSSS`` (80 consecutive frames at 25 fps); frame numbers come from
``frame_<K>_endo.png``. Frames without a watershed mask are unannotated.

Splits are by video number, never by frame. Default (the SP-TCN authors' split): train = videos 01 09 17 18 24 25 26
27 28 35 37 43 52; test = 12 20 48 55; ``val`` is an alias of ``test``. Override with the ``splits`` argument or
``<root>/splits.yaml`` (split -> list of video numbers, ``videoNN`` folder names or ``videoNN_SSSSS`` clip names).

Labels (watershed grey value -> class): 50 background 0, 11 abdominal wall 1, 21 liver 2, 13 gastrointestinal tract 3,
12 fat 4, 31 grasper 5, 23 connective tissue 6, 24 blood 7, 25 cystic duct 8, 32 L-hook electrocautery 9,
22 gallbladder 10, 33 hepatic vein 11, 5 liver ligament 12. The 1-pixel white border (255) and 0 are void -> ignore;
any other value -> ignore, counted as unknown (never background). RGBA masks: alpha dropped; channel 0 is read.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from vidnas.data.base import (
    DataError,
    FrameRef,
    LabelMap,
    Video,
    VideoSource,
    load_splits_file,
    make_video,
    natural_key,
    read_label_png,
    read_rgb,
    register_format,
)

__all__ = ["CholecSeg8kSource", "CHOLECSEG8K_CLASSES", "CHOLECSEG8K_GREY", "CHOLECSEG8K_SPLITS"]

logger = logging.getLogger(__name__)

# (name, watershed grey value, display colour of the data set's colour masks)
CHOLECSEG8K_CLASSES: tuple[tuple[str, int, tuple[int, int, int]], ...] = (
    ("background", 50, (127, 127, 127)),
    ("abdominal wall", 11, (210, 140, 140)),
    ("liver", 21, (255, 114, 114)),
    ("gastrointestinal tract", 13, (231, 70, 156)),
    ("fat", 12, (186, 183, 75)),
    ("grasper", 31, (170, 255, 0)),
    ("connective tissue", 23, (255, 85, 0)),
    ("blood", 24, (255, 0, 0)),
    ("cystic duct", 25, (255, 255, 0)),
    ("L-hook electrocautery", 32, (169, 255, 184)),
    ("gallbladder", 22, (255, 160, 165)),
    ("hepatic vein", 33, (0, 50, 128)),
    ("liver ligament", 5, (111, 74, 0)),
)
CHOLECSEG8K_GREY: dict[int, int] = {grey: i for i, (_, grey, _) in enumerate(CHOLECSEG8K_CLASSES)}
CHOLECSEG8K_VOID = (0, 255)  # 1-pixel white border and unlabelled 0 pixels: void, expected in every mask
CHOLECSEG8K_SPLITS: dict[str, list[int]] = {
    "train": [1, 9, 17, 18, 24, 25, 26, 27, 28, 35, 37, 43, 52],
    "test": [12, 20, 48, 55],
}
_VIDEO_DIR = re.compile(r"^video(\d+)$")
_CLIP_DIR = re.compile(r"^video(\d+)_(\d+)$")
_FRAME = re.compile(r"^frame_(\d+)_endo\.png$")  # exact: never matches the *_mask.png siblings


@register_format("cholecseg8k")
class CholecSeg8kSource(VideoSource):
    """CholecSeg8K; one video per clip folder, split by video number.

    Args:
        root: folder holding ``video01/ video09/ ...``.
        ignore_index: class id for void and unknown values.
        splits: split -> video numbers (or ``videoNN`` / clip names); overrides ``splits.yaml`` and the default.
    """

    def __init__(self, root: str | Path, *, ignore_index: int = 255,
                 splits: dict[str, list[int | str]] | None = None) -> None:
        super().__init__(root, ignore_index=ignore_index)
        assert self.root is not None
        self._clips: list[tuple[int, Path]] = []
        for vdir in sorted(self.root.iterdir(), key=lambda p: natural_key(p.name)):
            m = _VIDEO_DIR.match(vdir.name)
            if not (vdir.is_dir() and m):
                continue
            for cdir in sorted(vdir.iterdir(), key=lambda p: natural_key(p.name)):
                if cdir.is_dir() and _CLIP_DIR.match(cdir.name):
                    self._clips.append((int(m[1]), cdir))
        if not self._clips:
            raise DataError(f"cholecseg8k: no clip folders videoNN/videoNN_SSSSS in {self.root}")
        if splits is None and (self.root / "splits.yaml").is_file():
            splits = load_splits_file(self.root / "splits.yaml")
        table = {k: list(v) for k, v in (splits if splits is not None else CHOLECSEG8K_SPLITS).items()}
        if "val" not in table and "test" in table:
            table["val"] = table["test"]  # the published split has no separate validation videos
        self._table = table
        self.label_map = LabelMap(CHOLECSEG8K_GREY, void=CHOLECSEG8K_VOID, ignore_index=self.ignore_index)

    @property
    def class_names(self) -> list[str]:
        return [n for n, _, _ in CHOLECSEG8K_CLASSES]

    @property
    def palette(self) -> np.ndarray:
        return np.array([c for _, _, c in CHOLECSEG8K_CLASSES], dtype=np.uint8)

    def split_names(self) -> list[str]:
        return list(self._table)

    @staticmethod
    def _matches(entry: int | str, number: int, clip: str) -> bool:
        s = str(entry).strip()
        if s.isdigit():
            return int(s) == number
        if _VIDEO_DIR.match(s):
            return int(s[5:]) == number
        return s == clip

    def _list_split(self, split: str) -> list[Video]:
        entries = self._table[split]
        return [self._video(cdir, split) for num, cdir in self._clips
                if any(self._matches(e, num, cdir.name) for e in entries)]

    def _list_all(self) -> list[Video]:
        return [self._video(cdir, "all") for _, cdir in self._clips]

    def _video(self, cdir: Path, split: str) -> Video:
        items = []
        for p in cdir.iterdir():
            m = _FRAME.match(p.name)
            if m is None:
                continue
            mask = p.with_name(f"frame_{m[1]}_endo_watershed_mask.png")
            items.append((int(m[1]), str(p), str(mask) if mask.is_file() else None))
        return make_video(cdir.name, split, items)

    def read_image(self, frame: FrameRef) -> np.ndarray:
        return read_rgb(frame.image)

    def _read_raw_mask(self, frame: FrameRef) -> np.ndarray:
        assert frame.mask is not None
        return read_label_png(frame.mask, channel=0)  # grey value repeated in R, G, B; RGBA: alpha dropped
