"""Clip windows over videos: the training/evaluation dataset and an in-order frame iterator for streaming evaluation."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Collection, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vidnas.data.base import DataError, FrameRef, Video, VideoSource
from vidnas.data.transforms import ClipTransform, normalize, resize_image, resize_mask

__all__ = ["window_indices", "target_position", "ClipDataset", "VideoFrames"]

logger = logging.getLogger(__name__)

TEMPORAL_MODES = ("causal", "centred")
SUPERVISE_MODES = ("target", "all")


def target_position(window: int, temporal: str) -> int:
    """Index of the target frame inside a window: ``window - 1`` (causal) or ``window // 2`` (centred)."""
    if temporal == "causal":
        return window - 1
    if temporal in ("centred", "centered"):
        return window // 2
    raise ValueError(f"unknown temporal mode {temporal!r}; valid: {', '.join(TEMPORAL_MODES)}")


def window_indices(num_frames: int, target: int, window: int, temporal: str = "causal", stride: int = 1) -> list[int]:
    """Frame indices of the window around ``target``, edge frames repeated past the video's ends.

    Causal: ``target - (w-1)*s, ..., target - s, target``. Centred: ``target + (k - w//2)*s`` for k in 0..w-1 (for an
    even ``w`` the window has one more frame before the target than after). Indices outside ``[0, num_frames)`` are
    clamped, i.e. the first / last frame is repeated.

    Args:
        num_frames: frames in the video.
        target: index of the target frame.
        window: frames per window (w >= 1).
        temporal: "causal" or "centred".
        stride: distance in frames between consecutive window slots (s >= 1).

    Returns:
        ``window`` indices in temporal order.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got {window} and {stride}")
    if not 0 <= target < num_frames:
        raise IndexError(f"target {target} outside a video of {num_frames} frames")
    pos = target_position(window, temporal)
    return [min(max(target + (k - pos) * stride, 0), num_frames - 1) for k in range(window)]


def _compact(mask: torch.Tensor) -> torch.Tensor:
    """An (H, W) int64 mask as uint8 when every class id fits (ids and the ignore index <= 255): 8x less cache."""
    if mask.numel() and 0 <= int(mask.min()) and int(mask.max()) <= 255:
        return mask.to(torch.uint8)
    return mask


class ClipDataset(Dataset):
    """One item per annotated frame: the window of frames ending at (causal) or centred on it.

    Args:
        source: the data set.
        split: split name (``source.videos(split)``).
        data_cfg: a ``DataConfig`` (height, width, window, temporal, supervise, frame_stride, augmentation, ignore).
        train: apply train-time augmentation (if ``data_cfg.augment``); evaluation resizes only.
        seed: if given, each item's augmentation is drawn from a generator seeded by (seed, epoch, index), so items
            are reproducible regardless of workers and order (call ``set_epoch`` each epoch); otherwise torch's global
            RNG is used (which DataLoader seeds per worker).
        cache_frames: how many resized frames to keep (LRU) so overlapping windows do not decode a file again (masks
            kept as uint8); ``preload`` fills it with every frame at once when they fit.
        videos: if given, only the split's videos of these names (in the split's order; a selection split).

    Item (dict):
        frames: (T, 3, H, W) float32, ImageNet-normalised.
        masks: (T, H, W) int64; ignore_index where void, unknown or not supervised.
        target: int, the target frame's position in the window.
        video: str, the video name.
        frame_numbers: (T,) int64, frame numbers of the window's frames (repeats at the edges).
    """

    def __init__(self, source: VideoSource, split: str, data_cfg: Any, train: bool = False, *,
                 seed: int | None = None, cache_frames: int | None = None,
                 videos: Collection[str] | None = None) -> None:
        self.source = source
        self.split = split
        self.window = int(getattr(data_cfg, "window", 1))
        self.temporal = str(getattr(data_cfg, "temporal", "causal"))
        self.supervise = str(getattr(data_cfg, "supervise", "target"))
        self.stride = int(getattr(data_cfg, "frame_stride", 1))
        self.ignore_index = int(getattr(data_cfg, "ignore_index", 255))
        if self.supervise not in SUPERVISE_MODES:
            raise DataError(f"unknown data.supervise {self.supervise!r}; valid: {', '.join(SUPERVISE_MODES)}")
        if self.temporal not in (*TEMPORAL_MODES, "centered"):
            raise DataError(f"unknown data.temporal {self.temporal!r}; valid: {', '.join(TEMPORAL_MODES)}")
        if self.window < 1 or self.stride < 1:
            raise DataError(f"data.window and data.frame_stride must be >= 1, got {self.window}, {self.stride}")
        self.train = bool(train)
        self.transform = ClipTransform.from_config(data_cfg, train)
        self.seed = seed
        self.epoch = 0
        self.videos: list[Video] = [v for v in source.videos(split) if videos is None or v.name in videos]
        self.items: list[tuple[int, int]] = [(vi, fi) for vi, v in enumerate(self.videos) for fi in v.annotated]
        if not self.items:
            logger.warning("%s/%s: no annotated frames, the clip dataset is empty", source.name, split)
        self.position = target_position(self.window, self.temporal)
        self._cache: OrderedDict[FrameRef, tuple[torch.Tensor, torch.Tensor | None]] = OrderedDict()
        self._cache_size = 2 * self.window + 2 if cache_frames is None else int(cache_frames)

    # -- info -------------------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def class_names(self) -> list[str]:
        return self.source.class_names

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw of every item (only matters with ``seed``)."""
        self.epoch = int(epoch)

    def window_frames(self, idx: int) -> list[FrameRef]:
        """The FrameRefs of item ``idx``'s window, in temporal order."""
        vi, fi = self.items[idx]
        video = self.videos[vi]
        return [video.frames[j] for j in window_indices(len(video), fi, self.window, self.temporal, self.stride)]

    # -- reading ------------------------------------------------------------------------------------------------
    def _load(self, frame: FrameRef, with_mask: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        hit = self._cache.get(frame)
        if hit is not None and (hit[1] is not None or not with_mask):
            self._cache.move_to_end(frame)
            return hit
        h, w = self.transform.height, self.transform.width
        img = resize_image(self.source.read_image(frame), h, w)  # (3, H, W) uint8
        mask = _compact(resize_mask(self.source.read_mask(frame), h, w)) if with_mask else None
        if self._cache_size > 0:
            self._cache[frame] = (img, mask)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return img, mask

    def window_frame_set(self) -> dict[FrameRef, bool]:
        """Every frame some item's window reads, and whether a window reads its mask (in first-use order)."""
        needed: dict[FrameRef, bool] = {}
        for idx in range(len(self.items)):
            for k, f in enumerate(self.window_frames(idx)):
                supervised = f.mask is not None and (k == self.position or self.supervise == "all")
                needed[f] = needed.get(f, False) or supervised
        return needed

    def preload(self) -> int:
        """Decode and resize every frame the windows read, once, into the cache, when they all fit
        (``cache_frames``): loader workers forked afterwards share it and never decode a file. Each cached frame
        holds a (3, H, W) uint8 image and, where supervised, an (H, W) uint8 mask (int64 for class ids above 255):
        at 360x480 about 0.69 MB a frame, 0.25 GB for CamVid's 367 training frames.

        Returns:
            Frames now cached (0 when they do not fit: frames are then decoded as windows need them).
        """
        needed = self.window_frame_set()
        if len(needed) > self._cache_size:
            return 0
        for frame, with_mask in needed.items():
            self._load(frame, with_mask)
        return len(needed)

    def _generator(self, idx: int) -> torch.Generator | None:
        if self.seed is None:
            return None
        state = np.random.SeedSequence([int(self.seed), self.epoch, idx]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if not 0 <= idx < len(self.items):
            raise IndexError(idx)
        frames = self.window_frames(idx)
        imgs, masks = [], []
        for k, f in enumerate(frames):
            supervised = f.mask is not None and (k == self.position or self.supervise == "all")
            img, m = self._load(f, supervised)
            imgs.append(img)
            masks.append(m if supervised else None)
        params = self.transform.sample(self._generator(idx))
        x, y = self.transform(imgs, masks, params)
        return {
            "frames": x,  # (T, 3, H, W)
            "masks": y,  # (T, H, W)
            "target": self.position,
            "video": frames[self.position].video,
            "frame_numbers": torch.tensor([f.frame_number for f in frames], dtype=torch.int64),
        }

    def __repr__(self) -> str:
        return (f"ClipDataset({self.source.name}/{self.split}: {len(self)} clips from {len(self.videos)} videos, "
                f"window={self.window} {self.temporal}, stride={self.stride}, supervise={self.supervise})")


class VideoFrames:
    """Every frame of one video, in order, at model resolution, for streaming evaluation.

    Yields ``(frame (3, H, W) float32 normalised, mask (H, W) int64 or None, frame_number)``.

    Args:
        source: the data set.
        video: a Video (from ``source.videos(split)``) or a video name (looked up in split "all").
        data_cfg: a ``DataConfig`` (height, width).
        stride: yield every ``stride``-th frame, starting at ``offset`` (a model trained with ``frame_stride = s``
            streams ``s`` interleaved sequences, offsets ``0..s-1``).
    """

    def __init__(self, source: VideoSource, video: Video | str, data_cfg: Any, *, stride: int = 1,
                 offset: int = 0) -> None:
        if isinstance(video, str):
            found = [v for v in source.videos("all") if v.name == video]
            if not found:
                names = ", ".join(v.name for v in source.videos("all")[:20])
                raise DataError(f"{source.name}: no video named {video!r} (videos: {names}...)")
            video = found[0]
        self.source = source
        self.video = video
        self.height, self.width = int(data_cfg.height), int(data_cfg.width)
        self.stride, self.offset = int(stride), int(offset)

    @property
    def frames(self) -> list[FrameRef]:
        return list(self.video.frames[self.offset::self.stride])

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, int]]:
        for f in self.frames:
            img = normalize(resize_image(self.source.read_image(f), self.height, self.width))
            mask = None if f.mask is None else resize_mask(self.source.read_mask(f), self.height, self.width)
            yield img, mask, f.frame_number
