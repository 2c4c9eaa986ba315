"""The clip model's vocabulary: frames, videos, sources, the format registry and the shared IO helpers.

A data set is a list of videos; a video is an ordered list of frames, each with an optional mask. A ``VideoSource``
knows how one data set is laid out on disk (or generates it), lists the videos of a split and reads one frame's image
and class-id mask. Everything above it (clip windows, transforms, statistics) is format-agnostic.
"""

from __future__ import annotations

import abc
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from vidnas import registry
from vidnas.registry import Registry

__all__ = [
    "DataError",
    "UnknownNameError",
    "FrameRef",
    "Video",
    "VideoSource",
    "LabelMap",
    "Registry",
    "FORMATS",
    "register_format",
    "check_data_config",
    "open_source",
    "read_rgb",
    "read_label_png",
    "image_size",
    "load_yaml",
    "load_splits_file",
    "natural_key",
]

logger = logging.getLogger(__name__)

ALL_SPLIT = "all"


class DataError(ValueError):
    """Bad input data: a missing, unreadable or mis-sized file, a bad layout or an unknown split.

    The message always names the offending file, folder or split.
    """


class UnknownNameError(DataError, registry.UnknownNameError):
    """A registry or split lookup failed; the message lists the valid names."""


# --------------------------------------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class FrameRef:
    """One frame of one video.

    Attributes:
        video: name of the video it belongs to.
        index: position in the video's frame list (0-based, temporal order).
        frame_number: the frame's number in the original recording (from the file name); gaps are allowed.
        image: path of the RGB image (or a ``synthetic://`` key for generated data).
        mask: path of the class-id mask, or None when the frame is not annotated.
    """

    video: str
    index: int
    frame_number: int
    image: str
    mask: str | None = None

    @property
    def annotated(self) -> bool:
        return self.mask is not None


@dataclass(frozen=True)
class Video:
    """A video: its frames in temporal order.

    Attributes:
        name: unique within the source.
        split: the split it was listed for (``"all"`` when listed for every split).
        frames: frames sorted by frame number; ``frames[i].index == i``.
    """

    name: str
    split: str
    frames: tuple[FrameRef, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def annotated(self) -> list[int]:
        """Indices (into ``frames``) of the annotated frames."""
        return [f.index for f in self.frames if f.mask is not None]

    @property
    def num_annotated(self) -> int:
        return sum(1 for f in self.frames if f.mask is not None)


def make_video(name: str, split: str, items: Iterable[tuple[int, str, str | None]]) -> Video:
    """Build a Video from ``(frame_number, image, mask)`` triples, sorting them by frame number."""
    ordered = sorted(items, key=lambda t: t[0])
    frames = tuple(FrameRef(name, i, int(num), str(img), None if m is None else str(m))
                   for i, (num, img, m) in enumerate(ordered))
    return Video(name, split, frames)


# --------------------------------------------------------------------------------------------------------- label maps


class LabelMap:
    """Raw mask values -> class ids, through a lookup table.

    Three kinds of raw value: mapped to a class, known-void (mapped to the ignore index silently, e.g. CamVid's 11 or
    CholecSeg8K's white border) and unknown (mapped to the ignore index and reported by ``apply``).

    Args:
        mapping: raw value -> class id.
        void: raw values that are expected and mean "ignore".
        ignore_index: value written for void and unknown pixels.
    """

    _LUT_SIZE = 65536  # covers 8- and 16-bit PNGs; larger values are always unknown

    def __init__(self, mapping: Mapping[int, int], void: Iterable[int] = (), ignore_index: int = 255) -> None:
        self.mapping = dict(mapping)
        self.void = frozenset(int(v) for v in void)
        self.ignore_index = int(ignore_index)
        lut = np.full(self._LUT_SIZE, -1, dtype=np.int64)  # -1 marks an unknown value
        for v in self.void:
            if 0 <= v < self._LUT_SIZE:
                lut[v] = self.ignore_index
        for raw, cls in self.mapping.items():
            lut[int(raw)] = int(cls)
        self._lut = lut

    def apply(self, raw: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
        """Map a raw mask.

        Args:
            raw: integer array (H, W).

        Returns:
            The class-id mask (H, W) int64 and ``{unknown raw value: pixel count}`` (empty when all values are known).
        """
        raw = np.asarray(raw)
        if raw.dtype == np.bool_:
            raw = raw.astype(np.uint8)
        if raw.dtype.kind not in "iu":
            raise TypeError(f"label mask must be integer, got {raw.dtype}")
        if raw.size and (raw.min() < 0 or raw.max() >= self._LUT_SIZE):
            inside = (raw >= 0) & (raw < self._LUT_SIZE)
            out = np.full(raw.shape, -1, dtype=np.int64)
            out[inside] = self._lut[raw[inside].astype(np.int64)]
        else:
            out = self._lut[raw.astype(np.intp, copy=False)]
        unknown: dict[int, int] = {}
        bad = out < 0
        if bad.any():
            vals, counts = np.unique(raw[bad], return_counts=True)
            unknown = {int(v): int(c) for v, c in zip(vals, counts, strict=True)}
            out[bad] = self.ignore_index
        return out, unknown


# --------------------------------------------------------------------------------------------------------- IO helpers


def _open_image(path: str | Path, what: str, *, decode: bool = True) -> Any:
    """``Image.open(path)``, decoded now unless ``decode`` is False (then only the header is read: size, mode).

    Raises:
        DataError: the ``what`` file (``"image"``, ``"mask"``) is missing or cannot be read; the message names it.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"missing {what} file: {p}")
    try:
        im = Image.open(p)
        if decode:
            im.load()  # decode now so truncated or corrupt files fail here, naming the file
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read {what} file {p}: {e}") from e
    return im


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB.

    Returns:
        uint8 array (H, W, 3).

    Raises:
        DataError: the file is missing or cannot be decoded (the message names it).
    """
    im = _open_image(path, "image")
    try:
        if im.mode != "RGB":
            im = im.convert("RGB")
        return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read image file {path}: {e}") from e


def read_label_png(path: str | Path, channel: int | None = None) -> np.ndarray:
    """Read a label image as raw integer values (no class mapping).

    Palette PNGs give their palette indices; 16-bit PNGs their 16-bit values.

    Args:
        path: the mask file.
        channel: for RGB(A) masks, the channel to read (alpha is dropped). None: an RGB mask must have three equal
            channels (a grey image saved as RGB), otherwise it is a colour mask and is rejected.

    Returns:
        integer array (H, W).

    Raises:
        DataError: missing, unreadable, or a colour mask where class ids were expected.
    """
    im = _open_image(path, "mask")
    try:
        if im.mode == "1":
            im = im.convert("L")
        elif im.mode in ("LA", "PA"):
            im = im.getchannel(0)
        arr = np.asarray(im)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read mask file {path}: {e}") from e
    if arr.ndim == 3:
        arr = arr[..., :3]  # RGBA masks exist (e.g. four in CholecSeg8K): alpha carries no label
        if channel is not None:
            arr = arr[..., channel]
        elif (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all():
            arr = arr[..., 0]
        else:
            raise DataError(f"mask file {path} is a colour image; expected single-channel class ids")
    if arr.ndim != 2:
        raise DataError(f"mask file {path} has unexpected shape {arr.shape}")
    return arr


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file from its header (no decoding)."""
    with _open_image(path, "image", decode=False) as im:
        w, h = im.size
    return h, w


def load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"cannot read {path}: {e}") from e


def load_splits_file(path: Path) -> dict[str, list[str]]:
    """Read a ``splits.yaml`` mapping split name -> list of video names (ints are kept as their text)."""
    data = load_yaml(path)
    if not isinstance(data, dict) or not all(isinstance(v, list | tuple) for v in data.values()):
        raise DataError(f"{path}: expected a mapping split -> list of videos, e.g. 'train: [a, b]'")
    return {str(k): [str(x) for x in v] for k, v in data.items()}


_NUM_RE = re.compile(r"(\d+)")


def natural_key(s: str) -> list[Any]:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(t) if t.isdigit() else t for t in _NUM_RE.split(s)]


# --------------------------------------------------------------------------------------------------------- sources


class VideoSource(abc.ABC):
    """One data set: lists videos per split and reads frames.

    Subclasses implement ``_list_split`` (and ``split_names``), ``read_image`` and ``_read_raw_mask`` plus the class
    table; this base class adds split validation, caching of listings, one warning per split for empty or unannotated
    videos, size checks, and the unknown-label counter.

    Args:
        root: data set root folder (None only for generated data).
        ignore_index: class id written for void / unknown / unsupervised pixels.
    """

    name: ClassVar[str] = "base"
    label_map: LabelMap

    def __init__(self, root: str | Path | None, *, ignore_index: int = 255) -> None:
        self.root = None if root is None else Path(root).expanduser()
        if self.root is not None and not self.root.is_dir():
            raise DataError(f"{self.name}: data root not found: {self.root}")
        self.ignore_index = int(ignore_index)
        self._videos: dict[str, list[Video]] = {}
        self._unknown: dict[str, dict[int, int]] = {}  # mask file -> {raw value: pixels}; re-reads do not add up
        self._warned_unknown = False
        self._lock = threading.Lock()

    # -- construction from config ------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, data_cfg: Any) -> VideoSource:
        """Build from a ``DataConfig`` (format-specific options are read with defaults)."""
        root = getattr(data_cfg, "root", None)
        if root is None:
            raise DataError(f"{cls.name}: data.root is required (the folder holding the data set)")
        return cls(root, ignore_index=getattr(data_cfg, "ignore_index", 255))

    # -- class table ---------------------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def class_names(self) -> list[str]:
        """Names of the classes 0..K-1."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    @abc.abstractmethod
    def palette(self) -> np.ndarray:
        """Display colours (K, 3) uint8."""

    # -- splits and videos ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def split_names(self) -> list[str]:
        """Splits this source can list (``"all"`` is always accepted in addition)."""

    @abc.abstractmethod
    def _list_split(self, split: str) -> list[Video]:
        """Videos of one split (never called with ``"all"``)."""

    def _list_all(self) -> list[Video]:
        seen: dict[str, Video] = {}
        for s in self.split_names():
            for v in self._list_split(s):
                name = v.name
                if name in seen and seen[name].frames != v.frames:
                    # the same name in two splits with different frames (CamVid 0016E5 in train and val): keep both
                    name = f"{s}/{v.name}"
                if name not in seen:
                    seen[name] = Video(name, ALL_SPLIT, tuple(FrameRef(name, f.index, f.frame_number, f.image, f.mask)
                                                              for f in v.frames))
        return sorted(seen.values(), key=lambda v: natural_key(v.name))

    def videos(self, split: str) -> list[Video]:
        """The videos of ``split`` (or of every split with ``"all"``), in a stable order.

        Raises:
            UnknownNameError: ``split`` is not a split of this source (the message lists the valid ones).
        """
        with self._lock:
            if split in self._videos:
                return self._videos[split]
        valid = [*self.split_names(), ALL_SPLIT]
        if split not in valid:
            raise UnknownNameError(f"{self.name}: unknown split {split!r}; valid splits: {', '.join(valid)}")
        vids = self._list_all() if split == ALL_SPLIT else self._list_split(split)
        self._report(split, vids)
        with self._lock:
            self._videos[split] = vids
        return vids

    def _report(self, split: str, vids: list[Video]) -> None:
        empty = [v.name for v in vids if len(v) == 0]
        bare = [v.name for v in vids if len(v) > 0 and v.num_annotated == 0]
        if empty:
            logger.warning("%s/%s: %d empty video(s) (no frames): %s", self.name, split, len(empty), ", ".join(empty))
        if bare:
            logger.warning("%s/%s: %d video(s) without any annotation (usable as context only, never as targets): %s",
                           self.name, split, len(bare), ", ".join(bare))

    def frames(self, split: str) -> Iterator[FrameRef]:
        """Every frame of every video of ``split``."""
        for v in self.videos(split):
            yield from v.frames

    # -- reading ---------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def read_image(self, frame: FrameRef) -> np.ndarray:
        """The frame's RGB image, uint8 (H, W, 3)."""

    def _read_raw_mask(self, frame: FrameRef) -> np.ndarray:
        """The raw mask values (H, W) before class mapping."""
        assert frame.mask is not None
        return read_label_png(frame.mask)

    def _image_size(self, frame: FrameRef) -> tuple[int, int]:
        return image_size(frame.image)

    def read_mask(self, frame: FrameRef) -> np.ndarray:
        """The frame's class-id mask, int64 (H, W); void and unknown values are ``ignore_index``.

        Unknown values are counted (see ``unknown_labels``) and the first occurrence is logged once per source.

        Raises:
            DataError: the frame is not annotated, the mask is missing or unreadable, or its size differs from the
                image's (the message names the mask file).
        """
        if frame.mask is None:
            raise DataError(f"{self.name}: frame {frame.image} of video {frame.video} has no mask")
        raw = self._read_raw_mask(frame)
        ih, iw = self._image_size(frame)
        if raw.shape != (ih, iw):
            raise DataError(f"mask file {frame.mask} is {raw.shape[0]}x{raw.shape[1]} (HxW) but its image "
                            f"{frame.image} is {ih}x{iw}")
        mask, unknown = self.label_map.apply(raw)
        self._count_unknown(frame, unknown)
        return mask

    def _count_unknown(self, frame: FrameRef, unknown: dict[int, int]) -> None:
        if not unknown:
            return
        assert frame.mask is not None
        with self._lock:
            self._unknown[frame.mask] = unknown
            first = not self._warned_unknown
            self._warned_unknown = True
        if first:
            vals = ", ".join(f"{v} ({c} px)" for v, c in sorted(unknown.items()))
            logger.warning("%s: unknown label value(s) %s in %s mapped to ignore index %d; further unknown values are "
                           "counted without warning (`vidnas data stats` lists them)", self.name, vals, frame.mask,
                           self.ignore_index)

    def unknown_labels(self, frames: Iterable[FrameRef] | None = None) -> dict[int, int]:
        """Unknown raw label values seen so far, ``{value: pixel count}``, over ``frames`` (default: every mask read).

        Counts are per mask file, so reading a mask again does not add to them. DataLoader worker processes keep their
        own counters: read the masks in the main process (as ``vidnas data stats`` does) for complete numbers.
        """
        with self._lock:
            if frames is None:
                per_file = list(self._unknown.values())
            else:
                per_file = [self._unknown[f.mask] for f in frames if f.mask is not None and f.mask in self._unknown]
        total: dict[int, int] = {}
        for d in per_file:
            for v, c in d.items():
                total[v] = total.get(v, 0) + c
        return dict(sorted(total.items()))

    def corrupted(self, frame: FrameRef) -> str | None:
        """Kind of synthetic corruption applied to ``frame`` (None for real data)."""
        return None

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers (locks are not)
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, classes={self.num_classes})"


# --------------------------------------------------------------------------------------------------------- registry

FORMATS: Registry[type[VideoSource]] = Registry("data format", error=UnknownNameError)


def register_format(name: str) -> Callable[[type[VideoSource]], type[VideoSource]]:
    """Class decorator: add a VideoSource to ``FORMATS`` under ``name`` (sets ``cls.name``)."""

    def deco(cls: type[VideoSource]) -> type[VideoSource]:
        cls.name = name
        return FORMATS.register(name)(cls)

    return deco


def open_source(data_cfg: Any) -> VideoSource:
    """Build the VideoSource named by ``data_cfg.format`` (a ``DataConfig``, or a ``Config`` holding one).

    Raises:
        UnknownNameError: unknown format (the message lists the valid ones).
        DataError: the root is missing or not laid out as the format expects.
    """
    cfg = getattr(data_cfg, "data", data_cfg)
    return FORMATS[getattr(cfg, "format", "synthetic")].from_config(cfg)


def check_data_config(data_cfg: Any) -> None:
    """Check, without reading any data, that ``data_cfg`` names a known format and (except for ``synthetic``) a root
    that exists. Commands call it before they create a run directory.

    Raises:
        UnknownNameError: unknown format. DataError: a missing root.
    """
    cfg = getattr(data_cfg, "data", data_cfg)
    cls = FORMATS[getattr(cfg, "format", "synthetic")]
    root = getattr(cfg, "root", None)
    if cls.name != "synthetic":
        if root is None:
            raise DataError(f"{cls.name}: data.root is required (the folder holding the data set; --root)")
        if not Path(root).is_dir():
            raise DataError(f"{cls.name}: data root {root} does not exist (or is not a folder)")


def split_table(videos: Sequence[str], table: Mapping[str, Sequence[str]], where: str) -> dict[str, list[str]]:
    """Check a split table against the videos that exist; every listed video must exist."""
    have = set(videos)
    out: dict[str, list[str]] = {}
    for split, names in table.items():
        missing = [n for n in names if n not in have]
        if missing:
            raise DataError(f"{where}: split {split!r} lists video(s) not found in the data: {', '.join(missing)}")
        out[split] = list(names)
    return out
