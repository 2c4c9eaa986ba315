"""Temporal consistency of video predictions: VC_n and the flicker rate, functional and streaming.

Both scores only look at pixels whose ground truth is stable, so a prediction that follows a real change in the scene
is never penalised; they complement the IoU family, which is blind to frame-to-frame jitter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from vidnas.metrics.confusion import all_reduce_sum, as_label_tensor

__all__ = ["vc", "flicker", "TemporalConsistency"]


def _check_sequence(preds: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, ...]:
    if tuple(preds.shape) != tuple(targets.shape):
        raise ValueError(
            f"preds and targets shapes differ: preds {tuple(preds.shape)} vs targets {tuple(targets.shape)}"
        )
    if len(preds.shape) < 2:
        raise ValueError(f"expected (T, H, W) label sequences, got shape {tuple(preds.shape)}")
    return as_label_tensor(preds, "preds"), as_label_tensor(targets, "targets")


def _not_ignored(t: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    return torch.ones_like(t, dtype=torch.bool) if ignore_index is None else t != ignore_index


def _changes_in_windows(x: torch.Tensor, n: int) -> torch.Tensor:
    """Number of frame-to-frame changes of each pixel inside every window of ``n`` frames.

    Args:
        x: (T, ...) labels.
    Returns:
        (T - n + 1, ...) int32; entry ``s`` counts the changes over frames ``s .. s+n-1``.
    """
    changed = (x[1:] != x[:-1]).to(torch.int32)  # (T-1, ...): pair k is frames (k, k+1)
    csum = torch.cat([torch.zeros_like(changed[:1]), changed.cumsum(0, dtype=torch.int32)])  # (T, ...): changes < k
    # window s spans pairs s .. s+n-2, i.e. csum[s+n-1] - csum[s]
    return csum[n - 1 :] - csum[: x.shape[0] - n + 1]


def vc(
    preds: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray,
    n: int,
    ignore_index: int | None = 255,
) -> float:
    """Video consistency VC_n of one video.

    For every run of ``n`` consecutive frames ``s .. s+n-1`` (windows ``s = 0 .. T-n``), the *eligible* pixels are
    those whose ground truth is the same non-ignored class in all ``n`` frames; an eligible pixel is *consistent* when
    its prediction is also the same in all ``n`` frames. The windows are pooled pixel-weighted:

        VC_n = sum_s #consistent_s / sum_s #eligible_s

    (a window with more eligible pixels counts more; this equals the per-pixel-window mean and makes the streaming
    ``TemporalConsistency`` exact).

    Args:
        preds: (T, H, W) integer predicted labels (any trailing pixel dims work; time is dim 0).
        targets: (T, H, W) integer ground truth, ``ignore_index`` where void.
        n: window length, >= 2.
        ignore_index: ground-truth value of void pixels; None means no void pixels.

    Returns:
        VC_n in [0, 1]; NaN when ``T < n`` or no pixel is eligible.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    p, t = _check_sequence(preds, targets)
    if t.shape[0] < n:
        return math.nan
    eligible = (_changes_in_windows(t, n) == 0) & _not_ignored(t[: t.shape[0] - n + 1], ignore_index)
    consistent = eligible & (_changes_in_windows(p, n) == 0)
    denom = int(eligible.sum())
    return int(consistent.sum()) / denom if denom else math.nan


def flicker(
    preds: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray,
    ignore_index: int | None = 255,
) -> float:
    """Flicker rate of one video: how often the prediction changes where the ground truth did not.

    Over every (pixel, consecutive frame pair ``(t, t+1)``) whose ground truth is not ignored in either frame:

        flicker = #{gt_t == gt_{t+1} and pred_t != pred_{t+1}} / #{gt_t, gt_{t+1} both not ignored}

    The denominator holds all valid pairs, not only those with a static ground truth, so the rate is the share of all
    supervised pixel transitions that are spurious; with ``S`` the fraction of valid pairs whose ground truth is
    static, ``flicker = S * (1 - VC_2)``.

    Args:
        preds: (T, H, W) integer predicted labels (any trailing pixel dims work; time is dim 0).
        targets: (T, H, W) integer ground truth, ``ignore_index`` where void.
        ignore_index: ground-truth value of void pixels; None means no void pixels.

    Returns:
        The rate in [0, 1]; NaN when ``T < 2`` or no pair is valid.
    """
    p, t = _check_sequence(preds, targets)
    keep = _not_ignored(t, ignore_index)
    valid = keep[1:] & keep[:-1]
    events = valid & (t[1:] == t[:-1]) & (p[1:] != p[:-1])
    denom = int(valid.sum())
    return int(events.sum()) / denom if denom else math.nan


class TemporalConsistency:
    """Streaming VC_n (for several n) and flicker over videos fed frame by frame.

    Same definitions and pixel-weighted pooling as ``vc`` and ``flicker`` (see them), pooled over every video seen:
    ``compute()`` equals the functional forms applied to the concatenation of the videos' windows/pairs (windows and
    pairs never straddle two videos). Memory is constant in the video length: instead of the last ``n - 1`` frames it
    keeps the previous frame plus, per pixel, the length of the current run of equal ground truth and of equal
    prediction (capped at ``max(n)``); a window of ``n`` frames ending now is constant iff that run is ``>= n``.

    Example:
        >>> tc = TemporalConsistency(n=(2, 8))
        >>> for video in videos:
        ...     tc.reset_video()
        ...     for pred_t, target_t in video:  # (H, W) each, in temporal order
        ...         tc.update(pred_t, target_t)
        >>> tc.compute()  # {"vc2": ..., "vc8": ..., "flicker": ...}

    Args:
        n: window lengths, each >= 2; one ``vc{n}`` entry each.
        ignore_index: ground-truth value of void pixels; None means no void pixels.
    """

    def __init__(self, n: Iterable[int] = (2, 8), ignore_index: int | None = 255) -> None:
        self.ns = tuple(sorted({int(k) for k in n}))
        if not self.ns or self.ns[0] < 2:
            raise ValueError(f"every n must be >= 2, got {tuple(n)}")
        self.ignore_index = ignore_index
        # [consistent_n ... , eligible_n ..., flicker events, valid pairs]
        self.counts = torch.zeros(2 * len(self.ns) + 2, dtype=torch.int64)
        self.reset_video()

    def reset_video(self) -> None:
        """Start a new video: forget the previous frame and the runs (the counts are kept)."""
        self._prev_pred: torch.Tensor | None = None
        self._prev_target: torch.Tensor | None = None
        self._gt_run: torch.Tensor | None = None
        self._pred_run: torch.Tensor | None = None

    def reset(self) -> None:
        """Zero the counts and start a new video."""
        self.counts.zero_()
        self.reset_video()

    def update(self, pred_t: torch.Tensor | np.ndarray, target_t: torch.Tensor | np.ndarray) -> None:
        """Add the next frame of the current video.

        Args:
            pred_t: (H, W) integer predicted labels of this frame (or (B, H, W) for B videos advanced in lockstep).
            target_t: ground truth of the same shape, ``ignore_index`` where void.

        Raises:
            ValueError: if the shapes differ, or differ from the previous frame of this video.
        """
        if tuple(pred_t.shape) != tuple(target_t.shape):
            raise ValueError(f"pred_t and target_t shapes differ: {tuple(pred_t.shape)} vs {tuple(target_t.shape)}")
        p = as_label_tensor(pred_t, "pred_t")
        t = as_label_tensor(target_t, "target_t")
        keep = _not_ignored(t, self.ignore_index)
        cap = self.ns[-1]
        k = len(self.ns)
        if self._prev_target is None:
            self._gt_run = torch.ones_like(t, dtype=torch.int32)
            self._pred_run = torch.ones_like(p, dtype=torch.int32)
        else:
            assert self._prev_pred is not None and self._gt_run is not None and self._pred_run is not None
            if self._prev_target.shape != t.shape:
                raise ValueError(
                    f"frame shape {tuple(t.shape)} differs from the previous frame {tuple(self._prev_target.shape)}; "
                    "call reset_video() between videos"
                )
            same_gt = t == self._prev_target
            same_pred = p == self._prev_pred
            # runs only need to reach max(n): capping keeps int32 safe on arbitrarily long videos
            self._gt_run = torch.where(same_gt, self._gt_run + 1, 1).clamp_max_(cap)
            self._pred_run = torch.where(same_pred, self._pred_run + 1, 1).clamp_max_(cap)
            valid = keep & _not_ignored(self._prev_target, self.ignore_index)
            self.counts[2 * k] += int((valid & same_gt & ~same_pred).sum())
            self.counts[2 * k + 1] += int(valid.sum())
        for i, n in enumerate(self.ns):
            eligible = keep & (self._gt_run >= n)
            self.counts[i] += int((eligible & (self._pred_run >= n)).sum())
            self.counts[k + i] += int(eligible.sum())
        self._prev_pred, self._prev_target = p, t

    def merge(self, other: TemporalConsistency) -> TemporalConsistency:
        """Add the counts of ``other`` (e.g. another worker's videos); returns ``self``."""
        if other.ns != self.ns or other.ignore_index != self.ignore_index:
            raise ValueError(
                f"cannot merge TemporalConsistency(n={other.ns}, ignore_index={other.ignore_index}) into "
                f"TemporalConsistency(n={self.ns}, ignore_index={self.ignore_index})"
            )
        self.counts += other.counts
        return self

    def all_reduce(self) -> None:
        """Sum the counts over all processes (``all_reduce_sum``); a no-op unless torch.distributed is initialised
        (collective)."""
        self.counts = all_reduce_sum(self.counts)

    def compute(self) -> dict[str, Any]:
        """``{"vc{n}": float for each n, "flicker": float}``; NaN where nothing was eligible."""
        c = self.counts.tolist()
        k = len(self.ns)
        out: dict[str, Any] = {}
        for i, n in enumerate(self.ns):
            out[f"vc{n}"] = c[i] / c[k + i] if c[k + i] else math.nan
        out["flicker"] = c[2 * k] / c[2 * k + 1] if c[2 * k + 1] else math.nan
        return out
