"""Cell aggregations [CELLS Sec. 3, Table 2 (RECONSTRUCTION, see ``vidnas.models.cells``)]: ``AGGREGATIONS``.

``AGGREGATIONS[name](channels)`` builds a module mapping two (B, C, h, w) tensors to one (B, C, h, w) tensor. Where an
aggregation is asymmetric, the first argument drives and the second is transformed. The registry's order is the
aggregation-token order of a genotype that does not list its own vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vidnas.models.layers import ConvBNReLU
from vidnas.registry import Registry

__all__ = [
    "AGGREGATIONS",
    "WeightedSum",
    "ConcatConv",
    "DenseAttention",
    "PredictiveFilter",
    "AffineSampling",
    "Conv3dAggregation",
]

# Every aggregation maps two (B, C, h, w) tensors to one (B, C, h, w) tensor.

AGGREGATIONS: Registry = Registry("aggregation")


class WeightedSum(nn.Module):
    """``w1 * x1 + w2 * x2`` with learned scalars initialised to 1 (the plain sum of the static search [18])."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.weight[0] * x1 + self.weight[1] * x2


class ConcatConv(nn.Module):
    """``Conv1x1-BN-ReLU(cat(x1, x2))``: 2C -> C channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(2 * channels, channels, 1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x1, x2], dim=1))  # (B, 2C, h, w) -> (B, C, h, w)


class DenseAttention(nn.Module):
    """Dense (non-local) attention of every position of x1 over all positions of x2.

    ``q = Wq x1, k = Wk x2, v = Wv x2`` (1x1 convs to d = C / 2 channels),
    ``y = softmax(q^T k / sqrt(d)) v`` over the h*w positions of x2, output ``x1 + BN(Wo y)`` with the BN weight
    initialised to 0, so a fresh block is the identity on x1 (the non-local block's initialisation).
    Memory is O((h w)^2) per sample: at stride 8 of a 360x480 frame, 2700^2 floats.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        d = max(1, channels // 2)
        self.d = d
        self.q = nn.Conv2d(channels, d, 1)
        self.k = nn.Conv2d(channels, d, 1)
        self.v = nn.Conv2d(channels, d, 1)
        self.out = nn.Conv2d(d, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x1.shape
        q = self.q(x1).flatten(2).transpose(1, 2)  # (B, hw, d)
        k = self.k(x2).flatten(2)  # (B, d, h'w')
        v = self.v(x2).flatten(2).transpose(1, 2)  # (B, h'w', d)
        attn = torch.softmax(torch.bmm(q, k) / math.sqrt(self.d), dim=-1)  # (B, hw, h'w')
        y = torch.bmm(attn, v).transpose(1, 2).reshape(b, self.d, h, w)  # (B, d, h, w)
        return x1 + self.bn(self.out(y))


class PredictiveFilter(nn.Module):
    """Per-pixel dynamic kxk filters predicted from x1 and applied to x2 (cf. Li et al. [CELLS ref. 14]).

    ``f = softmax_taps(Conv3x3(x1))`` gives k*k weights per pixel (shared across channels, summing to 1);
    ``y[c, p] = sum_j f[j, p] * x2[c, p + offset_j]`` with zero padding. The filter conv is initialised to zero, so a
    fresh op is a kxk box filter of x2.
    """

    def __init__(self, channels: int, kernel: int = 3) -> None:
        super().__init__()
        self.kernel = kernel
        self.filters = nn.Conv2d(channels, kernel * kernel, 3, padding=1)
        nn.init.zeros_(self.filters.weight)
        nn.init.zeros_(self.filters.bias)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x2.shape
        kk = self.kernel * self.kernel
        f = torch.softmax(self.filters(x1), dim=1).reshape(b, 1, kk, h * w)  # (B, 1, k*k, hw)
        patches = F.unfold(x2, self.kernel, padding=self.kernel // 2).reshape(b, c, kk, h * w)  # (B, C, k*k, hw)
        return (patches * f).sum(2).reshape(b, c, h, w)


class AffineSampling(nn.Module):
    """Spatial transformer [CELLS ref. 11]: a 2x3 affine matrix predicted from x1 warps x2 by bilinear sampling.

    ``theta = Linear(GAP(ReLU(Conv1x1(x1))))`` with the Linear layer initialised to the identity transform (weight 0,
    bias [1, 0, 0, 0, 1, 0]), so a fresh op returns x2 unchanged; ``out = grid_sample(x2, affine_grid(theta))``
    (zeros outside, align_corners=False).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)
        self.fc = nn.Linear(channels, 6)
        nn.init.zeros_(self.fc.weight)
        with torch.no_grad():
            self.fc.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        g = F.adaptive_avg_pool2d(F.relu(self.conv(x1)), 1).flatten(1)  # (B, C)
        theta = self.fc(g).reshape(-1, 2, 3)  # (B, 2, 3)
        grid = F.affine_grid(theta, list(x2.shape), align_corners=False)  # (B, h, w, 2)
        return F.grid_sample(x2, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class Conv3dAggregation(nn.Module):
    """3D conv over the two inputs stacked along time: ``Conv3d(C, C, (2, 3, 3))`` -> BN -> ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, (2, 3, 3), padding=(0, 1, 1), bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        x = torch.stack([x1, x2], dim=2)  # (B, C, 2, h, w)
        return F.relu(self.bn(self.conv(x).squeeze(2)))  # (B, C, 1, h, w) -> (B, C, h, w)


AGGREGATIONS.register("sum")(WeightedSum)
AGGREGATIONS.register("concat")(ConcatConv)
AGGREGATIONS.register("attention")(DenseAttention)
AGGREGATIONS.register("predictive")(PredictiveFilter)
AGGREGATIONS.register("affine")(AffineSampling)
AGGREGATIONS.register("conv3d")(Conv3dAggregation)
