"""The per-frame head family (``decoder: head``): a non-temporal decoder for the papers' window-1 rows, stacked
per-frame encoder features (B, C, T, h, w) of the stride-32 map -> per-frame logits (B, K, T, h, w).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from vidnas.models.decoders.base import DecoderFamily

if TYPE_CHECKING:
    from vidnas.models.architecture import Arch
    from vidnas.models.incremental import ProgramBuilder

__all__ = ["HeadDecoder", "HeadFamily"]


class HeadDecoder(nn.Module):
    """Per-frame head (non-temporal baselines, window 1): Conv2d 3x3 -> BN -> ReLU -> Conv2d 1x1, on every frame.

    Args:
        in_channels: encoder channels C.
        num_classes: K.
        channels: hidden width.

    Shapes:
        (B, C, T, h, w) -> (B, K, T, h, w); frame t of the output depends on frame t of the input only.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 128) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.channels = channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, h, w) -> (B, K, T, h, w)."""
        b, c, t, h, w = x.shape
        y = x.transpose(1, 2).reshape(b * t, c, h, w)  # (B*T, C, h, w)
        y = self.body(y)  # (B*T, K, h, w)
        return y.reshape(b, t, -1, h, w).transpose(1, 2)  # (B, K, T, h, w)

    def incremental_program(self, g: ProgramBuilder) -> int:
        """Each time step on its own: one ``map`` node on the input register; returns the output register."""
        return g.map(self, g.inputs(1)[0])

    def temporal_receptive_field(self) -> int:
        """Always 1: each frame is decoded on its own."""
        return 1


class HeadFamily(DecoderFamily):
    """``decoder: head``: a ``HeadDecoder`` of width ``arch.channels`` on the stride-32 map of a ``VideoSegmenter``."""

    def build(self, arch: Arch, in_channels: Sequence[int], num_classes: int) -> nn.Module:
        """(B, C, T, h, w) -> (B, K, T, h, w), ``C = in_channels[0]``."""
        return HeadDecoder(in_channels[0], num_classes, arch.channels)

