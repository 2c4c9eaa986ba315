"""A generic layout for your own data: one folder per video, frames and class-id masks side by side.

Layout::

    <root>/<video>/frames/*.png|*.jpg|*.jpeg    the video's frames
    <root>/<video>/masks/*.png                  class-id masks (single channel or palette PNG), matched by file stem
    <root>/classes.yaml                         optional, see below
    <root>/splits.yaml                          optional: split -> list of videos

Frames are ordered by the number at the end of their stem (``0001``, ``frame_17``) when every stem has one, by name
otherwise. Frames without a mask are unannotated (used as temporal context only).

``classes.yaml`` (every key optional)::

    names: [background, instrument, tissue]   # class k is pixel value k
    colors: [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    ignore_index: 255                         # raw value meaning void (default: data.ignore_index)
    splits: {train: [vid_a, vid_b], val: [vid_c]}

Without ``names`` the number of classes is the largest mask value found + 1 (all masks are read once, with a warning:
write ``classes.yaml``); masks whose values leave a class index below the largest in no mask are refused (a stray
value such as 200 among 0..2 would otherwise make a 201-class model). Mask values that are neither a class nor the
void value become ignore and are counted.

Splits: ``splits.yaml`` (or ``splits`` in ``classes.yaml``); a video listed in no split is only in ``all``. Without
either, every video is in every split (``train``, ``val``, ``test``) with a warning that they overlap.
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
    load_yaml,
    make_video,
    natural_key,
    read_label_png,
    read_rgb,
    register_format,
    split_table,
)
from vidnas.data.palette import default_palette

__all__ = ["FolderSource"]

logger = logging.getLogger(__name__)

_IMG_EXTS = (".png", ".jpg", ".jpeg")
_TRAILING_NUM = re.compile(r"(\d+)$")
_DEFAULT_SPLITS = ("train", "val", "test")


@register_format("folder")
class FolderSource(VideoSource):
    """``<root>/<video>/frames`` + ``<root>/<video>/masks``.

    Args:
        root: the folder of video folders.
        ignore_index: class id written for void and unknown values.
        splits: split -> videos; overrides ``splits.yaml`` and ``classes.yaml``.
    """

    def __init__(self, root: str | Path, *, ignore_index: int = 255,
                 splits: dict[str, list[str]] | None = None) -> None:
        super().__init__(root, ignore_index=ignore_index)
        assert self.root is not None
        dirs = sorted((p for p in self.root.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name))
        self._video_dirs = [p for p in dirs if (p / "frames").is_dir()]
        others = [p.name for p in dirs if not (p / "frames").is_dir() and not p.name.startswith(".")]
        if others:
            logger.warning("folder: %d sub-folder(s) of %s without frames/ are not videos, skipped: %s", len(others),
                           self.root, ", ".join(others[:10]))
        if not self._video_dirs:
            raise DataError(f"folder: no video folders in {self.root} (expected <root>/<video>/frames/*.png|jpg)")
        names = [p.name for p in self._video_dirs]

        meta = {}
        cpath = self.root / "classes.yaml"
        if cpath.is_file():
            meta = load_yaml(cpath) or {}
            if not isinstance(meta, dict):
                raise DataError(f"{cpath}: expected a mapping with keys names, colors, ignore_index, splits")
        raw_void = meta.get("ignore_index", self.ignore_index)
        if isinstance(raw_void, bool) or not isinstance(raw_void, int) or raw_void < 0:
            raise DataError(f"{cpath}: 'ignore_index' must be a non-negative integer (the raw mask value meaning "
                            f"void), got {raw_void!r}")
        self._raw_void = raw_void
        self._names: list[str] | None = None
        if meta.get("names") is not None:
            if not isinstance(meta["names"], list) or not meta["names"]:
                raise DataError(f"{cpath}: 'names' must be a non-empty list of class names")
            self._names = [str(n) for n in meta["names"]]
        self._colours = meta.get("colors", meta.get("colours"))
        if self._colours is not None and self._names is not None:
            self._check_colours(len(self._names))  # now, so `data stats` refuses them as `data preview` does

        self._table: dict[str, list[str]] | None
        spath = self.root / "splits.yaml"
        if splits is not None:
            self._table = split_table(names, splits, "folder splits")
        elif spath.is_file():
            self._table = split_table(names, load_splits_file(spath), str(spath))
        elif isinstance(meta.get("splits"), dict):
            self._table = split_table(names, {str(k): [str(x) for x in v] for k, v in meta["splits"].items()},
                                      str(cpath))
        else:
            self._table = None
        if self._table is not None:
            listed = {n for v in self._table.values() for n in v}
            unlisted = [n for n in names if n not in listed]
            if unlisted:
                logger.warning("folder: %d video(s) in no split (only in 'all'): %s", len(unlisted),
                               ", ".join(unlisted[:10]))
        self._warned_overlap = False
        self._label_map: LabelMap | None = None

    # -- classes -----------------------------------------------------------------------------------------------
    def _infer_names(self) -> list[str]:
        first: dict[int, Path] = {}  # every labelled value -> the first mask holding it
        for v in self.videos("all"):
            for f in v.frames:
                if f.mask is not None:
                    raw = read_label_png(f.mask)
                    for val in np.unique(raw[raw != self._raw_void]).tolist():
                        first.setdefault(int(val), Path(f.mask))
        if not first:
            raise DataError(f"folder: cannot infer the classes of {self.root}: no labelled pixel in any mask; write "
                            f"{self.root}/classes.yaml with 'names'")
        top = max(first)
        missing = [k for k in range(top) if k not in first]
        if missing:  # a stray value (say 200 among 0..2) would make a model of top + 1 classes that never appear
            raise DataError(f"folder: cannot infer the classes of {self.root}: mask value {top} (first in "
                            f"{first[top]}) leaves {len(missing)} class index(es) below it in no mask (e.g. "
                            f"{missing[0]}); write {self.root}/classes.yaml with 'names' (and 'ignore_index' for a "
                            f"void value)")
        logger.warning("folder: no class names in %s/classes.yaml; inferred %d classes from the masks (largest "
                       "value %d)", self.root, top + 1, top)
        return [f"class{i}" for i in range(top + 1)]

    @property
    def class_names(self) -> list[str]:
        if self._names is None:
            self._names = self._infer_names()
        return list(self._names)

    def _check_colours(self, k: int) -> np.ndarray:
        try:
            pal = np.array(self._colours, dtype=np.int64)
        except (TypeError, ValueError) as e:
            raise DataError(f"{self.root}/classes.yaml: 'colors' must be a list of [r, g, b]: {e}") from e
        if pal.shape != (k, 3) or pal.min() < 0 or pal.max() > 255:
            raise DataError(f"{self.root}/classes.yaml: 'colors' must hold {k} [r, g, b] triples in 0..255 (one per "
                            f"class), got shape {tuple(pal.shape)}")
        return pal.astype(np.uint8)

    @property
    def palette(self) -> np.ndarray:
        k = self.num_classes
        if self._colours is not None:
            return self._check_colours(k)
        return default_palette(k)

    @property
    def label_map(self) -> LabelMap:  # type: ignore[override]
        if self._label_map is None:
            k = self.num_classes
            self._label_map = LabelMap({i: i for i in range(k)}, void=(self._raw_void,), ignore_index=self.ignore_index)
        return self._label_map

    # -- videos ----------------------------------------------------------------------------------------------------
    def split_names(self) -> list[str]:
        return list(self._table) if self._table is not None else list(_DEFAULT_SPLITS)

    def _list_split(self, split: str) -> list[Video]:
        if self._table is None:
            if not self._warned_overlap:
                self._warned_overlap = True
                logger.warning("folder: no splits.yaml in %s: every video is in every split (train and val overlap)",
                               self.root)
            return [self._video(p, split) for p in self._video_dirs]
        wanted = set(self._table[split])
        return [self._video(p, split) for p in self._video_dirs if p.name in wanted]

    def _list_all(self) -> list[Video]:
        return [self._video(p, "all") for p in self._video_dirs]

    def _video(self, vdir: Path, split: str) -> Video:
        files = sorted((p for p in (vdir / "frames").iterdir() if p.suffix.lower() in _IMG_EXTS),
                       key=lambda p: natural_key(p.name))
        mdir = vdir / "masks"
        masks = {p.stem: p for p in mdir.iterdir() if p.suffix.lower() == ".png"} if mdir.is_dir() else {}
        nums = [_TRAILING_NUM.search(p.stem) for p in files]
        use_numbers = all(n is not None for n in nums) and len({int(n[1]) for n in nums if n}) == len(files)
        items = []
        for i, (p, n) in enumerate(zip(files, nums, strict=True)):
            num = int(n[1]) if use_numbers and n is not None else i
            m = masks.pop(p.stem, None)
            items.append((num, str(p), None if m is None else str(m)))
        if masks:
            logger.warning("folder: %d mask(s) in %s match no frame, ignored: %s", len(masks), mdir,
                           ", ".join(sorted(masks)[:5]))
        return make_video(vdir.name, split, items)

    def read_image(self, frame: FrameRef) -> np.ndarray:
        return read_rgb(frame.image)
