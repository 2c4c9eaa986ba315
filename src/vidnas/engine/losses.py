"""The training losses of a video segmenter: cross-entropy over the supervised pixels (plain, class-weighted or with
online hard example mining) and the median-frequency class weights of the ``balanced`` loss.

Used by training (``vidnas.engine.train``, ``train.loss``) and the ST-NAS supernet phases (the task loss of Eq. 2).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["segmentation_loss", "class_weights"]


def class_weights(source: Any, split: str, num_classes: int) -> torch.Tensor:
    """Median-frequency balancing [Eigen & Fergus]: ``w_k = median_j(f_j) / f_k`` with ``f_k`` the share of class k
    among the labelled pixels of ``split`` (every mask read once); a class that never occurs gets weight 1.

    Returns:
        float32 (K,).
    """
    counts = np.zeros(num_classes, dtype=np.float64)
    for video in source.videos(split):
        for f in video.frames:
            if f.mask is not None:
                m = source.read_mask(f)
                m = m[(m >= 0) & (m < num_classes)]
                counts += np.bincount(m.ravel(), minlength=num_classes)[:num_classes]
    freq = counts / max(counts.sum(), 1.0)
    seen = freq > 0
    w = np.ones(num_classes)
    if seen.any():
        w[seen] = np.median(freq[seen]) / freq[seen]
    return torch.tensor(w, dtype=torch.float32)


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, ignore_index: int, *,
                      weight: torch.Tensor | None = None, ohem_keep: float | None = None) -> torch.Tensor:
    """Cross-entropy over the supervised pixels of every frame.

    * plain (``weight`` and ``ohem_keep`` None): the mean over supervised pixels;
    * ``weight`` (K,): class-weighted, normalised by the summed weights of the supervised pixels (``balanced``);
    * ``ohem_keep`` q: online hard example mining, the mean over the ``ceil(q n)`` supervised pixels of highest loss.

    Args:
        logits: (B, T, K, H, W).
        masks: (B, T, H, W) int64, ``ignore_index`` where unsupervised.

    Returns:
        Scalar loss; 0 (with a graph) when no pixel is supervised, instead of NaN.
    """
    b, t, k, h, w = logits.shape
    flat = logits.reshape(b * t, k, h, w)  # (B*T, K, H, W)
    target = masks.reshape(b * t, h, w)  # (B*T, H, W)
    supervised = target != ignore_index
    if ohem_keep is not None:
        per_pixel = F.cross_entropy(flat, target, ignore_index=ignore_index, reduction="none")[supervised]  # (n,)
        if per_pixel.numel() == 0:
            return flat.sum() * 0.0
        keep = max(1, math.ceil(ohem_keep * per_pixel.numel()))
        return per_pixel.topk(keep).values.mean()
    if weight is not None:
        total = F.cross_entropy(flat, target, weight=weight, ignore_index=ignore_index, reduction="sum")
        norm = weight[target[supervised]].sum()
        return total / norm.clamp(min=1e-12)
    total = F.cross_entropy(flat, target, ignore_index=ignore_index, reduction="sum")
    return total / supervised.sum().clamp(min=1)
