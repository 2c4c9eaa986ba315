"""Cityscapes, sequence release (Cordts et al. 2016): 30-frame snippets whose 20th frame has fine labels.

Layout::

    <root>/leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

A video is one snippet: the frames of one ``<city>_<seq>`` with consecutive frame numbers (a gap starts a new snippet;
a run holding several annotated frames is cut 10 frames after each, where its 30-frame snippet ends). It is named
after its annotated frame, ``<city>_<seq>_<frame>`` (the stem of the gtFine file), or its first frame if it has none.
Splits are the folders of ``leftImg8bit_sequence/`` (train, val, test).

Labels: labelIds -> the 19 trainIds of cityscapesscripts' ``labels.py``; every other id (unlabeled, ego vehicle,
parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer, ...) -> ignore; values above 33 are
unknown (ignored and counted).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from vidnas.data.base import DataError, FrameRef, LabelMap, Video, VideoSource, make_video, read_rgb, register_format

__all__ = ["CityscapesSource", "CITYSCAPES_CLASSES", "CITYSCAPES_LABEL_TO_TRAIN"]

logger = logging.getLogger(__name__)

# (trainId name, labelId, colour) from cityscapesscripts/helpers/labels.py, in trainId order
CITYSCAPES_CLASSES: tuple[tuple[str, int, tuple[int, int, int]], ...] = (
    ("road", 7, (128, 64, 128)),
    ("sidewalk", 8, (244, 35, 232)),
    ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)),
    ("fence", 13, (190, 153, 153)),
    ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)),
    ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)),
    ("terrain", 22, (152, 251, 152)),
    ("sky", 23, (70, 130, 180)),
    ("person", 24, (220, 20, 60)),
    ("rider", 25, (255, 0, 0)),
    ("car", 26, (0, 0, 142)),
    ("truck", 27, (0, 0, 70)),
    ("bus", 28, (0, 60, 100)),
    ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)),
    ("bicycle", 33, (119, 11, 32)),
)
CITYSCAPES_LABEL_TO_TRAIN: dict[int, int] = {lid: t for t, (_, lid, _) in enumerate(CITYSCAPES_CLASSES)}
_KNOWN_IDS = range(34)  # labelIds 0..33 of labels.py (license plate, -1, never appears in labelIds PNGs)
_IMG = re.compile(r"^(?P<city>.+)_(?P<seq>\d+)_(?P<frame>\d+)_leftImg8bit\.png$")
SNIPPET_LENGTH = 30
SNIPPET_TARGET = 19  # the annotated frame is the 20th of its 30-frame snippet


@register_format("cityscapes")
class CityscapesSource(VideoSource):
    """Cityscapes sequence release; one video per 30-frame snippet, 19 classes.

    Args:
        root: folder holding ``leftImg8bit_sequence/`` and ``gtFine/``.
        ignore_index: class id for ignored and unknown labelIds.
    """

    def __init__(self, root: str | Path, *, ignore_index: int = 255) -> None:
        super().__init__(root, ignore_index=ignore_index)
        assert self.root is not None
        self.seq_root = self.root / "leftImg8bit_sequence"
        if not self.seq_root.is_dir():
            raise DataError(f"cityscapes: folder not found: {self.seq_root} (the sequence release, "
                            "leftImg8bit_sequence_trainvaltest.zip, is needed for clips)")
        self._splits = sorted(p.name for p in self.seq_root.iterdir() if p.is_dir())
        if not self._splits:
            raise DataError(f"cityscapes: no split folders in {self.seq_root}")
        void = [i for i in _KNOWN_IDS if i not in CITYSCAPES_LABEL_TO_TRAIN]
        self.label_map = LabelMap(CITYSCAPES_LABEL_TO_TRAIN, void=void, ignore_index=self.ignore_index)

    @property
    def class_names(self) -> list[str]:
        return [n for n, _, _ in CITYSCAPES_CLASSES]

    @property
    def palette(self) -> np.ndarray:
        return np.array([c for _, _, c in CITYSCAPES_CLASSES], dtype=np.uint8)

    def split_names(self) -> list[str]:
        return list(self._splits)

    def _list_split(self, split: str) -> list[Video]:
        assert self.root is not None
        gt_dir = self.root / "gtFine" / split
        runs: dict[tuple[str, str], list[tuple[int, Path]]] = {}
        for city_dir in sorted(p for p in (self.seq_root / split).iterdir() if p.is_dir()):
            for p in city_dir.iterdir():
                m = _IMG.match(p.name)
                if m is not None:
                    runs.setdefault((m["city"], m["seq"]), []).append((int(m["frame"]), p))
        videos: list[Video] = []
        for (city, seq), frames in sorted(runs.items()):
            frames.sort()
            items = []
            for num, p in frames:
                gt = gt_dir / city / f"{city}_{seq}_{num:06d}_gtFine_labelIds.png"
                items.append((num, p, gt if gt.is_file() else None))
            for snippet in _snippets(items):
                gts = [n for n, _, g in snippet if g is not None]
                label = gts[0] if gts else snippet[0][0]
                name = f"{city}_{seq}_{label:06d}"
                videos.append(make_video(name, split, [(n, str(p), None if g is None else str(g))
                                                       for n, p, g in snippet]))
        return videos

    def read_image(self, frame: FrameRef) -> np.ndarray:
        return read_rgb(frame.image)


def _snippets(items: list[tuple[int, Path, Path | None]]) -> list[list[tuple[int, Path, Path | None]]]:
    """Cut sorted frames of one sequence into snippets: at gaps, and between two annotated frames."""
    runs: list[list[tuple[int, Path, Path | None]]] = []
    for it in items:
        if runs and it[0] == runs[-1][-1][0] + 1:
            runs[-1].append(it)
        else:
            runs.append([it])
    out = []
    for run in runs:
        gts = [n for n, _, g in run if g is not None]
        if len(gts) <= 1:
            out.append(run)
            continue
        # last frame of each piece: its snippet's end (10 frames after the annotated one) unless the next is closer
        after = SNIPPET_LENGTH - 1 - SNIPPET_TARGET
        cuts = [min(a + after, (a + b) // 2) for a, b in zip(gts[:-1], gts[1:], strict=True)]
        piece: list[tuple[int, Path, Path | None]] = []
        k = 0
        for it in run:
            while k < len(cuts) and it[0] > cuts[k]:
                out.append(piece)
                piece = []
                k += 1
            piece.append(it)
        out.append(piece)
    return [p for p in out if p]
