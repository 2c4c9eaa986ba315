"""The SP-TCN decoder family (``decoder: sptcn``): stacked per-frame encoder features (B, C, T, h, w) of the stride-32
map -> per-frame logits (B, K, T, h, w).

``SPTCNDecoder`` is the SP-TCN temporal-convolution decoder of [ST-NAS Sec. 4], reconstructed from its description
(SPEC "SP-TCN decoder"), with the full-channels (FC) variant and the searched TCNNAS variant (``layer_ops``), built of
``ResidualLayer``s (which the multi-scale decoders' temporal trunk reuses). It keeps the time length and the spatial
size; the caller (``VideoSegmenter``) upsamples to the image size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from vidnas.models.decoders.base import DecoderFamily, Slotted
from vidnas.models.ops import ConvBNReLU3d, STConv3d, get_op, temporal_extent

if TYPE_CHECKING:
    from vidnas.models.architecture import Arch
    from vidnas.models.incremental import ProgramBuilder

__all__ = ["SPTCNDecoder", "SPTCNFamily", "ResidualLayer", "OPS_PER_CONV", "CONVS_PER_LAYER"]

OPS_PER_CONV = 2  # [ST-NAS Fig. 2] "We replace each 3D conv with two supernet blocks"
CONVS_PER_LAYER = 2  # conv1 and conv2 of each residual layer


class ResidualLayer(nn.Module):
    """One dilated residual layer of the SP-TCN.

    Baseline: ``conv1 = Conv3d 3x3x3 (dilation (d, 1, 1)) -> BN -> ReLU``, ``conv2 = Conv3d 3x3x3`` (SPEC gives the
    dilation of the first conv only, so the second is undilated), then ``relu(conv2(conv1(x)) + skip(x))``.

    Searched (``ops`` given): ``conv1`` and ``conv2`` are each an ``nn.Sequential`` of two ops from ``OPS`` built at the
    layer's dilation; every op keeps the channel count. Each of the four op modules is a slot a supernet may replace
    (``conv1[0]``, ``conv1[1]``, ``conv2[0]``, ``conv2[1]``).

    When ``in_channels != out_channels`` (the first layer of the full-channels variant) the skip path gets a 1x1x1
    projection [SPEC "Full channels"]. The baseline conv1 changes the width itself; searched ops cannot, so a fixed
    1x1x1 Conv-BN-ReLU ``adapter`` (not searched) brings the input to ``out_channels`` before conv1.

    Args:
        in_channels: C_in.
        out_channels: C_out (F).
        dilation: temporal dilation d.
        causal: causal or centred temporal padding.
        ops: None for the baseline, else four op names (conv1 op 1, conv1 op 2, conv2 op 1, conv2 op 2).

    Shapes:
        (B, C_in, T, h, w) -> (B, C_out, T, h, w).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dilation: int,
        *,
        causal: bool = True,
        ops: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.dilation = dilation
        self.adapter: nn.Module | None = None
        if ops is None:
            self.conv1: nn.Module = ConvBNReLU3d(in_channels, out_channels, (3, 3, 3), (dilation, 1, 1), causal=causal)
            self.conv2: nn.Module = STConv3d(out_channels, out_channels, (3, 3, 3), causal=causal)
        else:
            if len(ops) != OPS_PER_CONV * CONVS_PER_LAYER:
                raise ValueError(f"a residual layer takes {OPS_PER_CONV * CONVS_PER_LAYER} op names, got {len(ops)}")
            if in_channels != out_channels:
                self.adapter = ConvBNReLU3d(in_channels, out_channels, (1, 1, 1), causal=causal)
            self.conv1 = nn.Sequential(*(get_op(n)(out_channels, dilation, causal=causal) for n in ops[:OPS_PER_CONV]))
            self.conv2 = nn.Sequential(*(get_op(n)(out_channels, dilation, causal=causal) for n in ops[OPS_PER_CONV:]))
        self.skip: nn.Module = (
            nn.Identity() if in_channels == out_channels else nn.Conv3d(in_channels, out_channels, kernel_size=1)
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, T, h, w) -> (B, C_out, T, h, w)."""
        y = x if self.adapter is None else self.adapter(x)
        y = self.conv2(self.conv1(y))
        return self.relu(y + self.skip(x))

    def incremental_visit(self, g: ProgramBuilder, r: int) -> int:
        """``forward`` as nodes of an incremental program reading register ``r``; returns the output register."""
        y = r if self.adapter is None else g.visit(self.adapter, r)
        y = g.visit(self.conv2, g.visit(self.conv1, y))
        return g.add(y, g.visit(self.skip, r), post=[self.relu])


class SPTCNDecoder(Slotted, nn.Module):
    """SP-TCN decoder (reconstructed; SPEC "SP-TCN decoder", "Full channels", "Decoder supernet").

    ``reduce``: Conv3d 3x3x3 C -> F, BN, ReLU (absent with ``full_channels``) -> four ``ResidualLayer`` with temporal
    dilations 1, 2, 4, 8 -> ``final``: Conv3d 3x3x3 F -> F, BN, ReLU -> ``head``: Conv3d 1x1x1 F -> F, BN, ReLU,
    Conv3d 1x1x1 F -> K. Time length and spatial size are preserved (causal or centred temporal padding).

    With ``layer_ops`` (4 ops per layer, 16 for four layers, in slot order: layer 0 conv1 op 1, conv1 op 2, conv2 op 1,
    conv2 op 2, layer 1 ...), every 3x3x3 conv of the residual layers is replaced by two ops: the derived TCNNAS
    decoder. ``reduce`` and ``final`` are not searched [ST-NAS Sec. 4: "the initial 3D conv ... was not part of the
    search"].

    Args:
        in_channels: encoder channels C of the last stage.
        num_classes: K.
        channels: decoder width F.
        dilations: temporal dilation of each residual layer.
        full_channels: drop ``reduce``; the first residual layer takes C channels directly.
        causal: causal (True) or centred temporal padding.
        layer_ops: None (baseline 3x3x3 convs) or ``4 * len(dilations)`` names from ``OPS``.

    Shapes:
        (B, C, T, h, w) -> (B, K, T, h, w).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        channels: int = 128,
        dilations: Sequence[int] = (1, 2, 4, 8),
        full_channels: bool = False,
        causal: bool = True,
        layer_ops: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        per_layer = OPS_PER_CONV * CONVS_PER_LAYER
        if layer_ops is not None:
            layer_ops = tuple(layer_ops)
            if len(layer_ops) != per_layer * len(dilations):
                raise ValueError(
                    f"layer_ops needs {per_layer} ops for each of the {len(dilations)} residual layers "
                    f"({per_layer * len(dilations)} names), got {len(layer_ops)}"
                )
            for name in layer_ops:
                get_op(name)  # fail early with the list of valid names
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.channels = channels
        self.dilations = tuple(dilations)
        self.full_channels = full_channels
        self.causal = causal
        self.layer_ops = layer_ops

        self.reduce: nn.Module | None = (
            None if full_channels else ConvBNReLU3d(in_channels, channels, (3, 3, 3), causal=causal)
        )
        layers = []
        for i, d in enumerate(self.dilations):
            c_in = in_channels if (full_channels and i == 0) else channels
            ops = None if layer_ops is None else layer_ops[i * per_layer : (i + 1) * per_layer]
            layers.append(ResidualLayer(c_in, channels, d, causal=causal, ops=ops))
        self.res_layers = nn.ModuleList(layers)
        self.final = ConvBNReLU3d(channels, channels, (3, 3, 3), causal=causal)
        self.head = nn.Sequential(
            ConvBNReLU3d(channels, channels, (1, 1, 1), causal=causal),
            nn.Conv3d(channels, num_classes, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, h, w) -> (B, K, T, h, w)."""
        if self.reduce is not None:
            x = self.reduce(x)  # (B, F, T, h, w)
        for layer in self.res_layers:
            x = layer(x)  # (B, F, T, h, w)
        return self.head(self.final(x))

    def incremental_program(self, g: ProgramBuilder) -> int:
        """``forward`` as a dataflow for ``vidnas.models.incremental.compile_decoder``; returns the output register."""
        r = g.inputs(1)[0]
        if self.reduce is not None:
            r = g.visit(self.reduce, r)
        for layer in self.res_layers:
            r = g.visit(layer, r)
        return g.visit(self.head, g.visit(self.final, r))

    def searchable_slots(self) -> list[tuple[str, int, int]]:
        """The op positions a decoder supernet searches, in beta-row order: ``(name, channels, dilation)``.

        ``name`` is the dotted path of the op module (``res_layers.0.conv1.0`` ...). The modules exist under these
        names when the decoder was built with ``layer_ops`` (a supernet builds it with any placeholder ops, then
        swaps each slot with ``set_slot``); ``channels`` and ``dilation`` are what ``OPS[name](channels, dilation)``
        must be called with.
        """
        slots = []
        for i, d in enumerate(self.dilations):
            for conv in ("conv1", "conv2"):
                for j in range(OPS_PER_CONV):
                    slots.append((f"res_layers.{i}.{conv}.{j}", self.channels, d))
        return slots

    def set_slot(self, slot: int | str, module: nn.Module) -> None:
        """Replace the op in ``slot`` (an index into ``searchable_slots()`` or its name) by ``module``; only a decoder
        built with ``layer_ops`` has its slots."""
        if self.layer_ops is None:
            raise RuntimeError(
                "set_slot needs a decoder built with layer_ops (the baseline has 3x3x3 convs, not slots)"
            )
        super().set_slot(slot, module)

    def temporal_receptive_field(self) -> int:
        """Frames of context the decoder uses for one output frame (1 + the sum of temporal extents).

        Causal: all of them are the frame itself and earlier frames; centred: split about evenly before and after.
        """
        return 1 + temporal_extent(self)


class SPTCNFamily(DecoderFamily):
    """``decoder: sptcn``: an ``SPTCNDecoder`` on the stride-32 map of a ``VideoSegmenter`` (``arch.decoder_ops``: its
    searched ops, ``full_channels``, ``channels``, ``dilations``, ``causal``)."""

    def build(self, arch: Arch, in_channels: Sequence[int], num_classes: int) -> nn.Module:
        """(B, C, T, h, w) -> (B, K, T, h, w), ``C = in_channels[0]``."""
        return SPTCNDecoder(in_channels[0], num_classes, channels=arch.channels, dilations=arch.dilations,
                            full_channels=arch.full_channels, causal=arch.causal, layer_ops=arch.decoder_ops)

