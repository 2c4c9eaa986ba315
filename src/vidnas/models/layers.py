"""Small layers shared by the model families: 2D Conv-BN-ReLU and bilinear resizing.

(The 3D layers of the temporal decoders live with their ops in ``vidnas.models.ops``.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvBNReLU", "resize_to", "encode_clip"]


def resize_to(x: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of (N, C, h, w) to ``hw`` (align_corners=False); returns ``x`` itself if already that size."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=(int(hw[0]), int(hw[1])), mode="bilinear", align_corners=False)


class ConvBNReLU(nn.Sequential):
    """``Conv2d(k, stride, dilation, groups, no bias) -> BatchNorm2d -> ReLU`` with "same" padding.

    Shapes:
        (N, C_in, h, w) -> (N, C_out, ceil(h / stride), ceil(w / stride)).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, *, stride: int = 1, dilation: int = 1,
                 groups: int = 1, relu: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=dilation * (kernel - 1) // 2,
                      dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def encode_clip(encode: Callable[[torch.Tensor], torch.Tensor | Sequence[torch.Tensor]], frames: torch.Tensor,
                grad_frames: Sequence[bool] | None = None) -> list[torch.Tensor]:
    """Encode every frame of a clip, each encoder output regrouped per clip and time step.

    ``grad_frames`` (one flag per time step; None = all) says through which frames gradients reach the encoder: the
    others are encoded under ``torch.no_grad`` in a separate call. With ``data.supervise=target`` only the target frame
    carries a loss, and its context frames' encoder backward passes are most of a temporal model's training cost
    (``train.context_grad=false``: one encoder backward per clip instead of ``T``). The decoder still trains on every
    frame's features. BatchNorm layers in train mode see the two groups as two batches.

    Args:
        encode: ``(N, 3, H, W) -> (N, C, h, w)`` or a sequence of such maps (one per scale).
        frames: (B, T, 3, H, W).
        grad_frames: T flags, or None.

    Returns:
        One ``(B, C, T, h, w)`` tensor per encoder output, in ``encode``'s order.
    """
    b, t, c, h, w = frames.shape

    def run(x: torch.Tensor, n: int) -> list[torch.Tensor]:  # (B*n, 3, H, W) -> [(B, n, C, h, w), ...]
        out = encode(x)
        maps = [out] if isinstance(out, torch.Tensor) else list(out)
        return [m.reshape(b, n, *m.shape[1:]) for m in maps]

    if grad_frames is None or all(grad_frames) or not torch.is_grad_enabled():
        return [m.transpose(1, 2) for m in run(frames.reshape(b * t, c, h, w), t)]
    if len(grad_frames) != t:
        raise ValueError(f"grad_frames needs one flag per frame ({t}), got {len(grad_frames)}")
    keep = [i for i in range(t) if grad_frames[i]]
    rest = [i for i in range(t) if not grad_frames[i]]
    parts: list[list[torch.Tensor]] = []
    if keep:
        parts.append(run(frames[:, keep].reshape(b * len(keep), c, h, w), len(keep)))
    with torch.no_grad():
        parts.append(run(frames[:, rest].reshape(b * len(rest), c, h, w), len(rest)))
    order = torch.tensor(keep + rest).argsort().tolist()  # time step -> position in keep + rest
    out = []
    for per_output in zip(*parts, strict=True):
        stacked = torch.cat(per_output, dim=1)  # (B, T, C, h, w) in keep + rest order
        out.append(stacked[:, order].transpose(1, 2))
    return out
