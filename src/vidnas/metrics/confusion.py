"""Streaming confusion matrix and the IoU family of segmentation scores computed from it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["ConfusionMatrix", "all_reduce_sum", "as_label_tensor"]


def as_label_tensor(x: torch.Tensor | np.ndarray, name: str, device: torch.device | str | None = "cpu") -> torch.Tensor:
    """Return ``x`` as an int64 tensor of labels; raise TypeError for floating or complex inputs.

    Args:
        x: integer (or bool) labels of any shape, a tensor or a numpy array.
        name: argument name used in the error message.
        device: where the result lives; None keeps the input's device.
    """
    t = torch.as_tensor(x)
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must hold integer class labels, got dtype {t.dtype} (take argmax of the logits first)")
    return t.detach().to(device=t.device if device is None else device, dtype=torch.int64)


def all_reduce_sum(counts: torch.Tensor) -> torch.Tensor:
    """``counts`` (a CPU tensor) summed over all processes of the default group, on the CPU; ``counts`` itself,
    untouched, unless torch.distributed is initialised.

    Every rank must call it (collective). NCCL only reduces CUDA tensors, so the counts visit the current CUDA device
    there and come back to the CPU; other backends sum in place.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return counts
    if dist.get_backend() == "nccl":
        buf = counts.to(device=torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(buf)
        return buf.cpu()
    dist.all_reduce(counts)
    return counts


class ConfusionMatrix:
    """Streaming ``K x K`` confusion matrix over pixels; rows are ground truth, columns are predictions.

    ``mat[i, j]`` counts the pixels whose ground truth is class ``i`` and whose prediction is class ``j``; pixels whose
    ground truth equals ``ignore_index`` are not counted. The matrix is an int64 CPU tensor, so it stays exact for any
    number of pixels and can be summed across processes (``merge`` / ``all_reduce``).

    With ``tp_c = mat[c, c]``, ``gt_c = sum_j mat[c, j]`` (ground-truth pixels of c), ``pr_c = sum_i mat[i, c]``
    (predicted pixels of c) and ``N = sum_c gt_c``, ``compute()`` returns:

    - ``per_class_iou[c] = tp_c / (gt_c + pr_c - tp_c)``; NaN when class c is absent from both ground truth and
      prediction (the union is empty), 0 when it is only predicted or only in the ground truth.
    - ``miou = mean_c per_class_iou[c]`` over the classes present in the ground truth OR the prediction
      (union > 0), i.e. NaNs are skipped and a class that is only predicted counts with IoU 0.
    - ``fwiou = sum_c (gt_c / N) * per_class_iou[c]`` (frequency-weighted IoU; classes absent from the ground truth
      have weight 0).
    - ``pixel_acc = sum_c tp_c / N``.
    - ``per_class_acc[c] = tp_c / gt_c`` (recall); NaN when class c is absent from the ground truth.
    - ``macc = mean_c per_class_acc[c]`` over the classes present in the ground truth.
    - ``reward = (miou * fwiou * macc) ** (1/3)``: the geometric mean used as the validation score of the dynamic-cell
      search (Nekrasov et al., "Architecture Search of Dynamic Cells for Semantic Video Segmentation", Sec. 3.3,
      following their earlier "Fast NAS of compact semantic segmentation models via auxiliary cells", CVPR 2019).
    - ``num_pixels = N``.

    Every score is NaN when no pixel has been counted.

    Example:
        >>> cm = ConfusionMatrix(num_classes=3)
        >>> cm.update(logits.argmax(1), masks)  # any equal shapes, e.g. (B, H, W)
        >>> cm.compute()["miou"]

    Args:
        num_classes: number of classes K; labels are ``0 .. K-1``.
        ignore_index: ground-truth value that marks void pixels (not counted); None counts every pixel.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"num_pixels={int(self.mat.sum())})"
        )

    # ------------------------------------------------------------------------------------------------------ update

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add one batch of predictions.

        Args:
            pred: predicted labels, integer tensor of any shape (e.g. ``(B, H, W)`` or ``(B, T, H, W)``), every value
                in ``[0, K)``.
            target: ground-truth labels of the same shape; values in ``[0, K)`` or ``ignore_index``.

        Raises:
            ValueError: if the shapes differ, or a prediction or a non-ignored target is outside ``[0, K)``.
            TypeError: if either input holds floating-point values (logits instead of labels).
        """
        if tuple(pred.shape) != tuple(target.shape):
            raise ValueError(f"pred and target shapes differ: pred {tuple(pred.shape)} vs target {tuple(target.shape)}")
        # count on the inputs' device (a GPU batch is not copied to the host), accumulate on the CPU
        p = as_label_tensor(pred, "pred", device=None).reshape(-1)
        t = as_label_tensor(target, "target", device=p.device).reshape(-1)
        k = self.num_classes
        if p.numel() and (int(p.min()) < 0 or int(p.max()) >= k):
            raise ValueError(f"pred values must be in [0, {k}), got range [{int(p.min())}, {int(p.max())}]")
        if self.ignore_index is not None:
            keep = t != self.ignore_index
            p, t = p[keep], t[keep]
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= k):
            raise ValueError(
                f"target values must be in [0, {k}) or ignore_index={self.ignore_index}, "
                f"got range [{int(t.min())}, {int(t.max())}]"
            )
        # one bincount over flattened (gt, pred) pairs is far faster than K^2 masked sums
        self.mat += torch.bincount(t * k + p, minlength=k * k).reshape(k, k).cpu()

    def reset(self) -> None:
        """Zero the counts."""
        self.mat.zero_()

    # ------------------------------------------------------------------------------------------------- distributed

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add the counts of ``other`` (e.g. from another worker) into this matrix; returns ``self``.

        Raises:
            ValueError: if the class count or the ignore index differ.
        """
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(
                f"cannot merge ConfusionMatrix(num_classes={other.num_classes}, ignore_index={other.ignore_index}) "
                f"into ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index})"
            )
        self.mat += other.mat.to(device="cpu", dtype=torch.int64)
        return self

    def all_reduce(self) -> None:
        """Sum the counts over all processes of the default group (``all_reduce_sum``: collective, every rank must
        call it); a no-op unless torch.distributed is initialised."""
        self.mat = all_reduce_sum(self.mat)

    # ----------------------------------------------------------------------------------------------------- (de)ser

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{"mat": (K, K) int64}``, a copy, for checkpoints."""
        return {"mat": self.mat.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore counts saved by ``state_dict``; raise ValueError on a class-count mismatch."""
        mat = torch.as_tensor(state["mat"])
        k = self.num_classes
        if tuple(mat.shape) != (k, k):
            raise ValueError(f"state 'mat' has shape {tuple(mat.shape)}, expected ({k}, {k})")
        self.mat = mat.to(device="cpu", dtype=torch.int64).clone()

    # ----------------------------------------------------------------------------------------------------- compute

    def compute(self) -> dict[str, Any]:
        """Scores of the pixels seen so far (formulas in the class docstring).

        Returns:
            ``{"per_class_iou": list[float] (K), "miou": float, "fwiou": float, "pixel_acc": float,
            "per_class_acc": list[float] (K), "macc": float, "reward": float, "num_pixels": int}``.
        """
        m = self.mat.to(torch.float64)
        tp = torch.diag(m)
        gt = m.sum(1)
        pr = m.sum(0)
        union = gt + pr - tp
        n = gt.sum()
        nan = torch.tensor(float("nan"), dtype=torch.float64)

        in_union = union > 0
        in_gt = gt > 0
        iou = torch.where(in_union, tp / union.clamp_min(1), nan)
        acc = torch.where(in_gt, tp / gt.clamp_min(1), nan)

        miou = float(iou[in_union].mean()) if bool(in_union.any()) else math.nan
        macc = float(acc[in_gt].mean()) if bool(in_gt.any()) else math.nan
        if float(n) > 0:
            # classes absent from the ground truth have weight 0 and may have IoU NaN: sum over in_gt only
            fwiou = float((gt[in_gt] / n * iou[in_gt]).sum())
            pixel_acc = float(tp.sum() / n)
        else:
            fwiou = pixel_acc = math.nan
        reward = (miou * fwiou * macc) ** (1.0 / 3.0) if not any(map(math.isnan, (miou, fwiou, macc))) else math.nan
        return {
            "per_class_iou": iou.tolist(),
            "miou": miou,
            "fwiou": fwiou,
            "pixel_acc": pixel_acc,
            "per_class_acc": acc.tolist(),
            "macc": macc,
            "reward": reward,
            "num_pixels": int(self.mat.sum()),
        }
