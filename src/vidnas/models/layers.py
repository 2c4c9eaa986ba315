"""Small layers shared by the model families: 2D Conv-BN-ReLU and bilinear resizing.

(The 3D layers of the temporal decoders live with their ops in ``vidnas.models.ops``.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvBNReLU", "resize_to"]


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
