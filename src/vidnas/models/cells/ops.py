"""Cell operations [CELLS Sec. 3, Table 1 (RECONSTRUCTION, see ``vidnas.models.cells``)]: ``CELL_OPS``.

``CELL_OPS[name](channels)`` builds an op mapping (B, C, h, w) -> (B, C, h, w); each conv op is conv -> BN -> ReLU as
in the static search [18]. The registry's order is the op-token order of a genotype that does not list its own
vocabulary, so new ops are only ever appended.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import DeformConv2d

from vidnas.models.layers import ConvBNReLU
from vidnas.registry import Registry

__all__ = ["CELL_OPS", "SepConv", "GlobalPoolOp", "DeformConv3x3"]

# Every op maps (B, C, h, w) -> (B, C, h, w); each conv op is conv -> BN -> ReLU as in the static search [18].

CELL_OPS: Registry = Registry("cell op")


class SepConv(nn.Sequential):
    """Depthwise kxk (dilated) -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU. (B, C, h, w) -> same."""

    def __init__(self, channels: int, kernel: int, dilation: int = 1) -> None:
        super().__init__(
            ConvBNReLU(channels, channels, kernel, dilation=dilation, groups=channels),
            ConvBNReLU(channels, channels, 1),
        )


class GlobalPoolOp(nn.Module):
    """Global average pooling -> Conv1x1 -> ReLU, broadcast back over the map. (B, C, h, w) -> same.

    No BatchNorm: a pooled (B, C, 1, 1) map has one value per channel and sample, BN would fail at batch size 1.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.relu(self.conv(F.adaptive_avg_pool2d(x, 1)))  # (B, C, 1, 1)
        return g.expand_as(x)


class DeformConv3x3(nn.Module):
    """Deformable 3x3 conv [CELLS ref. 31] (torchvision.ops) -> BN -> ReLU. (B, C, h, w) -> same.

    A 3x3 conv predicts the 2 * 9 sampling offsets; it is initialised to zero so the op starts as a plain 3x3 conv.
    About 29x slower than a plain 3x3 conv on the development CPU (SPEC).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.offset = nn.Conv2d(channels, 2 * 3 * 3, 3, padding=1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x, self.offset(x))))


@CELL_OPS.register("conv1x1")
def _conv1x1(c: int) -> nn.Module:
    return ConvBNReLU(c, c, 1)


@CELL_OPS.register("conv3x3")
def _conv3x3(c: int) -> nn.Module:
    return ConvBNReLU(c, c, 3)


@CELL_OPS.register("sep3x3")
def _sep3x3(c: int) -> nn.Module:
    return SepConv(c, 3)


@CELL_OPS.register("sep5x5")
def _sep5x5(c: int) -> nn.Module:
    return SepConv(c, 5)


@CELL_OPS.register("gap")
def _gap(c: int) -> nn.Module:
    return GlobalPoolOp(c)


@CELL_OPS.register("conv3x3_d3")
def _conv3x3_d3(c: int) -> nn.Module:
    return ConvBNReLU(c, c, 3, dilation=3)


@CELL_OPS.register("conv3x3_d12")
def _conv3x3_d12(c: int) -> nn.Module:
    return ConvBNReLU(c, c, 3, dilation=12)


@CELL_OPS.register("sep3x3_d3")
def _sep3x3_d3(c: int) -> nn.Module:
    return SepConv(c, 3, dilation=3)


@CELL_OPS.register("sep5x5_d6")
def _sep5x5_d6(c: int) -> nn.Module:
    return SepConv(c, 5, dilation=6)


@CELL_OPS.register("skip")
def _skip(c: int) -> nn.Module:
    return nn.Identity()


@CELL_OPS.register("deform3x3")
def _deform3x3(c: int) -> nn.Module:
    return DeformConv3x3(c)
