"""DAVIS 2016 (Perazzi et al. 2016): binary video object segmentation as 2-class semantic segmentation.

Layout (the ``480p`` level is optional)::

    <root>/JPEGImages/480p/<sequence>/00000.jpg
    <root>/Annotations/480p/<sequence>/00000.png     0 = background, 255 = foreground
    <root>/splits.yaml                               (optional) split -> list of sequences

A video is one sequence; frame numbers are the file stems. A frame without an annotation file is unannotated.

Splits, first match wins:
1. ``<root>/splits.yaml``, e.g. ``{train: [blackswan, dog], val: [car-shadow, libby]}``;
2. the official ``<root>/ImageSets/2016/<split>.txt`` (one sequence per line) or ``ImageSets/480p/<split>.txt``
   (lines ``/JPEGImages/480p/<seq>/00000.jpg /Annotations/...``);
3. the built-in split of the four-sequence subset shipped with the project: train = blackswan, dog;
   val = car-shadow, libby (a project choice: in the official DAVIS 2016 split all four are validation sequences).
   A root holding other sequences must then use ``splits.yaml`` or split ``all``; asking for ``train``/``val``
   raises a DataError naming the unlisted sequences.

Labels: 0 -> 0 (background), 255 -> 1 (foreground); other values -> ignore, counted as unknown.
"""

from __future__ import annotations

import logging
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
    read_rgb,
    register_format,
    split_table,
)

__all__ = ["DavisSource", "DAVIS_DEFAULT_SPLITS"]

logger = logging.getLogger(__name__)

DAVIS_DEFAULT_SPLITS: dict[str, list[str]] = {"train": ["blackswan", "dog"], "val": ["car-shadow", "libby"]}
_IMG_EXTS = (".jpg", ".jpeg", ".png")


def _frame_number(stem: str, fallback: int) -> int:
    return int(stem) if stem.isdigit() else fallback


@register_format("davis")
class DavisSource(VideoSource):
    """DAVIS 2016 layout; 2 classes (background, foreground).

    Args:
        root: folder holding ``JPEGImages/`` and ``Annotations/``.
        ignore_index: class id for unknown values.
        splits: split -> sequences; overrides ``splits.yaml`` and the defaults.
    """

    def __init__(self, root: str | Path, *, ignore_index: int = 255,
                 splits: dict[str, list[str]] | None = None) -> None:
        super().__init__(root, ignore_index=ignore_index)
        assert self.root is not None
        self.image_root = self._level(self.root / "JPEGImages")
        self.mask_root = self._level(self.root / "Annotations")
        self.sequences = sorted((p.name for p in self.image_root.iterdir() if p.is_dir()), key=natural_key)
        if not self.sequences:
            raise DataError(f"davis: no sequence folders in {self.image_root}")
        self._table, self._table_source = self._splits(splits)
        self.label_map = LabelMap({0: 0, 255: 1}, ignore_index=self.ignore_index)

    def _level(self, base: Path) -> Path:
        if not base.is_dir():
            raise DataError(f"davis: folder not found: {base} (expected JPEGImages/ and Annotations/ in {self.root})")
        return base / "480p" if (base / "480p").is_dir() else base

    def _splits(self, given: dict[str, list[str]] | None) -> tuple[dict[str, list[str]], str]:
        assert self.root is not None
        if given is not None:
            return split_table(self.sequences, given, "davis splits"), "argument"
        path = self.root / "splits.yaml"
        if path.is_file():
            return split_table(self.sequences, load_splits_file(path), str(path)), str(path)
        for level in ("2016", "480p"):
            folder = self.root / "ImageSets" / level
            if folder.is_dir():
                table = {}
                for f in sorted(folder.glob("*.txt")):
                    names: list[str] = []
                    for line in f.read_text().split("\n"):
                        tok = line.strip().split()
                        if not tok:
                            continue
                        parts = Path(tok[0]).parts
                        name = parts[-2] if len(parts) >= 2 else tok[0]
                        if name not in names:
                            names.append(name)
                    table[f.stem] = [n for n in names if n in self.sequences]
                if table:
                    return table, str(folder)
        return {k: list(v) for k, v in DAVIS_DEFAULT_SPLITS.items()}, "built-in default"

    @property
    def class_names(self) -> list[str]:
        return ["background", "foreground"]

    @property
    def palette(self) -> np.ndarray:
        return np.array([[0, 0, 0], [220, 20, 60]], dtype=np.uint8)

    def split_names(self) -> list[str]:
        return list(self._table)

    def _list_split(self, split: str) -> list[Video]:
        names = self._table[split]
        if self._table_source == "built-in default":
            listed = {n for v in self._table.values() for n in v}
            unlisted = [s for s in self.sequences if s not in listed]
            if unlisted:
                raise DataError(f"davis: sequence(s) {', '.join(unlisted)} in {self.image_root} are in no split of the "
                                f"built-in default; write {self.root}/splits.yaml (split -> sequences) or use split "
                                "'all'")
            names = [n for n in names if n in self.sequences]
        return [self._video(n, split) for n in names]

    def _list_all(self) -> list[Video]:
        return [self._video(n, "all") for n in self.sequences]

    def _video(self, seq: str, split: str) -> Video:
        img_dir, ann_dir = self.image_root / seq, self.mask_root / seq
        masks = {p.stem: p for p in ann_dir.glob("*.png")} if ann_dir.is_dir() else {}
        files = sorted((p for p in img_dir.iterdir() if p.suffix.lower() in _IMG_EXTS),
                       key=lambda p: natural_key(p.name))
        items = []
        for i, p in enumerate(files):
            m = masks.get(p.stem)
            items.append((_frame_number(p.stem, i), str(p), None if m is None else str(m)))
        return make_video(seq, split, items)

    def read_image(self, frame: FrameRef) -> np.ndarray:
        return read_rgb(frame.image)
