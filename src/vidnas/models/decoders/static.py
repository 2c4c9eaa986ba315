"""The static (arch2) decoder family (``decoder: arch2``): the per-frame decoder of the static segmenter the
dynamic-cell search builds on [CELLS Sec. 3.1, Fig. 2] (``vidnas.models.static_segmenter``).

arch2 is an encoder-decoder network found by Nekrasov et al.'s earlier static search ("Fast NAS of compact semantic
segmentation models via auxiliary cells", CVPR 2019): a light-weight decoder that aggregates the encoder outputs at
strides 4/8/16/32 at 64 channels and predicts at stride 8. ``arch2`` stays its saved name (``arch.json``'s
``decoder: arch2``, ``--model arch2``), the name the paper uses; the classes are named for what they are.

RECONSTRUCTION. The paper's Fig. 2 (the exact arch2 topology) was lost; its caption says only that 'gap' stands for
global average pooling. The decoder below is a light-weight RefineNet-like reconstruction with three decoder blocks,
which is what SPEC records ("three decoder blocks over encoder outputs at strides 4/8/16/32, aggregated at 64
channels")::

    a_i   = Conv1x1-BN-ReLU(layer_i) -> 64 ch                        (i = 1..4, strides 4, 8, 16, 32)
    g     = ReLU(Conv1x1(GAP(a_4)))  broadcast over a_4               ('gap' branch of Fig. 2)
    b_1   = Block(up(a_4 + g) + a_3)                                  stride 16  -> aux head 1
    b_2   = Block(up(b_1) + a_2)                                      stride 8   -> aux head 2
    dec   = Block(b_2 + Conv3x3/2-BN-ReLU(a_1))                       stride 8, 64 ch
    pred  = Conv1x1(dec) -> K                                         stride 8

    Block(x) = ReLU(x + BN(Conv3x3(ReLU(BN(Conv3x3(x))))))            (a residual 3x3 conv block)

``up`` is bilinear resizing to the next input's size. The auxiliary heads (Conv1x1 to K on ``b_1`` and ``b_2``) give
the auxiliary losses of [CELLS appendix] (weight 0.3 in the training engine).

Shapes: four maps ``(N, C_s, H / s, W / s)`` (strides 4, 8, 16, 32) in, ``{"dec", "pred", "aux"}`` out, frame by frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from vidnas.models.decoders.base import DecoderFamily
from vidnas.models.layers import ConvBNReLU, resize_to

if TYPE_CHECKING:
    from vidnas.models.architecture import Arch

__all__ = ["ARCH2_CHANNELS", "StaticBlock", "StaticDecoder", "StaticFamily"]

ARCH2_CHANNELS = 64  # [CELLS Sec. 3.1] dec has 64 channels


class StaticBlock(nn.Module):
    """Residual 3x3 block: ``ReLU(x + BN(Conv3x3(ConvBNReLU3x3(x))))``.

    Shapes:
        (N, C, h, w) -> (N, C, h, w).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(channels, channels, 3)
        self.conv2 = ConvBNReLU(channels, channels, 3, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(self.conv1(x)))


class StaticDecoder(nn.Module):
    """The reconstructed arch2 decoder, per frame (topology in the module docstring).

    Args:
        in_channels: channels of the four encoder maps (strides 4, 8, 16, 32).
        num_classes: K.
        channels: aggregation width (64 [CELLS Sec. 3.1]).
        aux: build the two auxiliary heads.

    Shapes:
        four maps ``(N, C_i, H / s_i, W / s_i)`` -> ``dec (N, 64, H/8, W/8)``, ``pred (N, K, H/8, W/8)``,
        ``aux`` = [(N, K, H/16, W/16), (N, K, H/8, W/8)] (empty without aux heads).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, *, channels: int = ARCH2_CHANNELS,
                 aux: bool = True) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"arch2 reads four encoder maps (strides 4/8/16/32), got {len(in_channels)} channels")
        self.channels = channels
        self.adapt = nn.ModuleList(ConvBNReLU(c, channels, 1) for c in in_channels)
        # no BatchNorm after global pooling: a (N, C, 1, 1) map has a single value per channel when N = 1
        self.gap = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True))
        self.down = ConvBNReLU(channels, channels, 3, stride=2)  # stride 4 -> 8
        self.block1 = StaticBlock(channels)  # stride 16
        self.block2 = StaticBlock(channels)  # stride 8
        self.block3 = StaticBlock(channels)  # stride 8 -> dec
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.aux_heads = nn.ModuleList(nn.Conv2d(channels, num_classes, 1) for _ in range(2)) if aux \
            else nn.ModuleList()

    def forward(self, feats: Sequence[torch.Tensor]) -> dict[str, Any]:
        """Decode the four encoder maps; returns ``{"dec", "pred", "aux": [...]}`` (shapes in the class docstring)."""
        a1, a2, a3, a4 = (m(f) for m, f in zip(self.adapt, feats, strict=True))
        top = a4 + self.gap(a4)  # (N, 64, H/32, W/32), gap broadcast over the map
        b1 = self.block1(resize_to(top, a3.shape[-2:]) + a3)  # (N, 64, H/16, W/16)
        b2 = self.block2(resize_to(b1, a2.shape[-2:]) + a2)  # (N, 64, H/8, W/8)
        dec = self.block3(b2 + resize_to(self.down(a1), a2.shape[-2:]))  # (N, 64, H/8, W/8)
        aux = [head(b) for head, b in zip(self.aux_heads, (b1, b2), strict=False)]
        return {"dec": dec, "pred": self.classifier(dec), "aux": aux}


class StaticFamily(DecoderFamily):
    """``decoder: arch2``: a ``StaticDecoder`` (with its auxiliary heads) on the four encoder maps of a
    ``StaticSegmenter``, per frame. Its encoder keeps its own depths: the static segmenter never read
    ``arch.depths``, so its checkpoints load as they were written."""

    model = "static"

    def scales(self, arch: Arch) -> tuple[int, ...]:
        """All four encoder maps, fine first: strides 4, 8, 16, 32."""
        return (4, 8, 16, 32)

    def depths(self, arch: Arch) -> tuple[int, ...] | None:
        """None: the encoder's own depths."""
        return None

    def build(self, arch: Arch, in_channels: Sequence[int], num_classes: int) -> nn.Module:
        """Four maps -> ``{"dec", "pred", "aux"}`` (``StaticDecoder``)."""
        return StaticDecoder(in_channels, num_classes)

