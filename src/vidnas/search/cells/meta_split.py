"""The meta-train / meta-val split of the search's sequence windows [CELLS Sec. 4.1].

The windows of the train split are divided into meta-train and meta-val (``cells.meta_val_fraction``, 10 % [CELLS])
so that **the two parts share no frame** (``split_meta_frames``; ``cells.meta_split``):

* ``video``: whole videos go to meta-val (seeded order, a video is taken while the meta-val share stays at most
  twice the target), at least one video stays in meta-train;
* ``block``: in every video one contiguous block of windows (about the target share of its windows, at a seeded
  position) goes to meta-val, and the meta-train windows that would share a frame with it are dropped: a gap of
  ``T - 1`` windows on each side of the block (``T`` = the sequence length) [a window of ``T`` frames ending at frame
  ``t`` holds frames ``t - T + 1 .. t``];
* ``auto`` (default): ``video`` when whole videos can give between half and twice the target share, else ``block``;
* ``window``: the earlier seeded permutation of the windows (``split_meta``). Windows of one video fall on both sides
  and share frames (on CamVid 91 % of the supervised meta-val frames are also supervised in meta-train): the reward
  then largely measures fit. Kept only to reproduce older runs.

Frames are compared by (video, position in the video), every frame of a window counted (the unsupervised frame 0 too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["META_SPLITS", "MetaSplit", "Window", "split_meta", "split_meta_frames", "dataset_windows"]

META_SPLITS: tuple[str, ...] = ("auto", "video", "block", "window")


def split_meta(n: int, val_fraction: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
    """Seeded split of ``n`` windows into meta-train and meta-val (at least one window each when n >= 2).

    Returns:
        (meta-train indices, meta-val indices), each sorted.
    """
    if n < 2:
        raise ValueError(f"need at least 2 sequence windows to split into meta-train and meta-val, got {n}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"cells.meta_val_fraction must be in (0, 1), got {val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    return sorted(perm[n_val:]), sorted(perm[:n_val])


@dataclass(frozen=True)
class MetaSplit:
    """A meta-train / meta-val split of sequence windows.

    Attributes:
        train: meta-train window indices, sorted.
        val: meta-val window indices, sorted.
        mode: how it was made (``video``, ``block`` or ``window``).
        dropped: windows in neither part (the gaps of ``block``), sorted.
        val_videos: videos with at least one meta-val window.
    """

    train: list[int]
    val: list[int]
    mode: str
    dropped: list[int] = field(default_factory=list)
    val_videos: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "meta_train": len(self.train), "meta_val": len(self.val),
                "dropped": len(self.dropped), "val_videos": list(self.val_videos)}


Window = tuple[str, Sequence[int]]  # (video name, positions in the video of the window's frames)


def dataset_windows(dataset: Any) -> list[Window]:
    """``(video, frame positions)`` of every window of a ``ClipDataset`` (no image is read)."""
    out = []
    for i in range(len(dataset)):
        refs = dataset.window_frames(i)
        out.append((refs[0].video, tuple(int(f.index) for f in refs)))
    return out


def _pick_videos(sizes: dict[str, int], target: float, seed: int) -> list[str] | None:
    """Meta-val videos: in a seeded order, take a video while the share stays <= 2 x target, until >= target;
    None when that gives less than half the target or leaves no video for meta-train."""
    names = sorted(sizes)
    order = [names[i] for i in torch.randperm(len(names), generator=torch.Generator().manual_seed(int(seed)))]
    chosen, total = [], 0
    for v in order:
        if total >= target:
            break
        if total + sizes[v] <= 2 * target:
            chosen.append(v)
            total += sizes[v]
    if total < target / 2 or len(chosen) == len(names):
        return None
    return chosen


def _split_blocks(windows: Sequence[Window], val_fraction: float, seed: int) -> MetaSplit:
    by_video: dict[str, list[int]] = {}
    for i, (video, _) in enumerate(windows):
        by_video.setdefault(video, []).append(i)
    gen = torch.Generator().manual_seed(int(seed))
    val: list[int] = []
    for video in sorted(by_video):
        idx = sorted(by_video[video], key=lambda i: max(windows[i][1]))  # temporal order of the windows' ends
        k = min(round(len(idx) * val_fraction), len(idx) - 1)
        if k < 1:
            continue
        start = int(torch.randint(0, len(idx) - k + 1, (1,), generator=gen))
        val += idx[start:start + k]
    if not val:  # every video too short for its own block: one window of the longest video
        longest = max(sorted(by_video), key=lambda v: len(by_video[v]))
        idx = sorted(by_video[longest], key=lambda i: max(windows[i][1]))
        val = [idx[int(torch.randint(0, len(idx), (1,), generator=gen))]]
    val_frames = {(windows[i][0], f) for i in val for f in windows[i][1]}
    val_set = set(val)
    train, dropped = [], []
    for i, (video, frames) in enumerate(windows):
        if i in val_set:
            continue
        (dropped if any((video, f) in val_frames for f in frames) else train).append(i)
    return MetaSplit(sorted(train), sorted(val), "block", sorted(dropped),
                     sorted({windows[i][0] for i in val}))


def split_meta_frames(windows: Sequence[Window], val_fraction: float = 0.1, seed: int = 0,
                      mode: str = "auto") -> MetaSplit:
    """Split sequence windows into meta-train and meta-val that share no frame (rules in the module docstring).

    Args:
        windows: ``(video, frame positions)`` per window (``dataset_windows``).
        val_fraction: target share of meta-val windows.
        seed: seeds the choice of videos or block positions.
        mode: ``auto``, ``video``, ``block`` or ``window`` (the frame-sharing permutation of ``split_meta``).

    Returns:
        The split; ``video`` and ``block`` splits are frame-disjoint.

    Raises:
        ValueError: unknown mode, a fraction outside (0, 1), fewer than 2 windows, ``video`` on data whose videos
            cannot give the share, or a split that leaves meta-train empty.
    """
    if mode not in META_SPLITS:
        raise ValueError(f"cells.meta_split={mode!r}: valid values are {', '.join(META_SPLITS)}")
    n = len(windows)
    if mode == "window":
        train, val = split_meta(n, val_fraction, seed)
        return MetaSplit(train, val, "window", [], sorted({windows[i][0] for i in val}))
    if n < 2:
        raise ValueError(f"need at least 2 sequence windows to split into meta-train and meta-val, got {n}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"cells.meta_val_fraction must be in (0, 1), got {val_fraction}")
    sizes: dict[str, int] = {}
    for video, _ in windows:
        sizes[video] = sizes.get(video, 0) + 1
    videos = _pick_videos(sizes, n * val_fraction, seed) if len(sizes) > 1 and mode in ("auto", "video") else None
    if videos is not None:
        chosen = set(videos)
        val = [i for i, (v, _) in enumerate(windows) if v in chosen]
        train = [i for i, (v, _) in enumerate(windows) if v not in chosen]
        split = MetaSplit(train, val, "video", [], sorted(chosen))
    elif mode == "video":
        raise ValueError(f"cells.meta_split=video: no set of whole videos gives about {val_fraction:.0%} of the "
                         f"{n} windows (videos: {dict(sorted(sizes.items()))}); use block or auto")
    else:
        split = _split_blocks(windows, val_fraction, seed)
    if not split.train:
        raise ValueError(f"the {split.mode} meta split of {n} windows leaves no meta-train window (windows too long "
                         "for the videos, or too few videos): use more data or a shorter cells.seq_len")
    return split
