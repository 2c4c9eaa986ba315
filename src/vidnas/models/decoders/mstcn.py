"""The multi-scale spatial-temporal decoder family (``decoder: mstcn``): a temporal path on the coarse encoder map,
fused top-down with paths on finer maps, so thin and small classes are not lost in a 32x upsampling.

The SP-TCN of [ST-NAS] decodes only the stride-32 map and upsamples it 32x; per-frame decoders such as arch2 read
strides 4-32. ``MultiScaleDecoder`` keeps the SP-TCN's temporal path where it is cheap (the coarse map) and adds, per
finer scale, a lateral projection, a path of two ops and a fusion op (FPN-style)::

    y  = proj(trunk(x_coarse))                                  trunk: [reduce] + SP-TCN residual layers (dilations)
    for each finer scale s (coarse to fine):
        y = fuse_s( up(y, size of x_s) + path_s(lateral_s(x_s)) )
    logits = head(y)                                            at the finest scale

Every tensor is ``(B, C, T, h, w)`` and every op comes from ``vidnas.models.ops.OPS``, so each slot can be spatial
(per frame) or temporal (causal or centred like the model): ST-NAS searches the trunk's ops and, per scale, whether
temporal context pays there (``searchable_slots``). The default is a temporal trunk with per-frame spatial paths.

``fusion="arch2"`` (``StaticFusionDecoder``) keeps the temporal trunk on the stride-32 map and puts the per-frame
arch2 decoder of the cell search on top of it (strides 16/8/4, its global-pooling branch, residual 3x3 blocks,
auxiliary heads; ``vidnas.models.decoders.static``), each per-frame module wrapped in ``PerFrame``: the temporal twin
of per-frame arch2, whose decoder step costs almost nothing more when streamed incrementally (the trunk runs on a 6x8
map at 176x240).
``fusion="arch2_res"`` keeps arch2's own stride-32 lateral and adds the trunk to it as a residual branch whose last
BatchNorm starts at zero, so the model starts as per-frame arch2 and can be initialised from a trained arch2
checkpoint (``MultiScaleSegmenter.translate_init_state``); the temporal context then only has to learn a correction.

``vidnas.models.multiscale.MultiScaleSegmenter`` is the video model around both: the encoder's maps at the chosen
strides for every frame, the decoder over a window of them, bilinear upsampling to the image. Causal, it streams
incrementally (``vidnas.models.incremental``), which reads each decoder's dataflow from its ``incremental_program``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from vidnas.models.decoders.base import DecoderFamily, Slotted
from vidnas.models.decoders.sptcn import CONVS_PER_LAYER, OPS_PER_CONV, ResidualLayer
from vidnas.models.decoders.static import StaticBlock
from vidnas.models.layers import ConvBNReLU, resize_to
from vidnas.models.ops import ConvBNReLU3d, get_op, temporal_extent

if TYPE_CHECKING:
    from vidnas.models.architecture import Arch
    from vidnas.models.incremental import ProgramBuilder

__all__ = [
    "DEFAULT_SCALES",
    "OPS_PER_SCALE",
    "default_scale_ops",
    "MultiScaleDecoder",
    "StaticFusionDecoder",
    "PerFrame",
    "MultiScaleFamily",
]

DEFAULT_SCALES: tuple[int, ...] = (32, 8, 4)  # the temporal trunk's stride, then the finer paths, coarse to fine
OPS_PER_SCALE = 3  # per finer scale: path op 1, path op 2, fusion op
_DEFAULT_FINE = ("identity", "identity", "spatial_k3")  # a lateral projection, then a 3x3 fusion conv: per frame


def default_scale_ops(num_fine: int) -> tuple[str, ...]:
    """The per-frame default of ``num_fine`` finer scales: ``("identity", "identity", "spatial_k3") * num_fine``."""
    return _DEFAULT_FINE * num_fine


def _up(y: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of every time step: (B, C, T, h, w) -> (B, C, T, H, W)."""
    b, c, t, h, w = y.shape
    if (h, w) == tuple(hw):
        return y
    z = resize_to(y.transpose(1, 2).reshape(b * t, c, h, w), hw)  # (B*T, C, H, W)
    return z.reshape(b, t, c, *z.shape[-2:]).transpose(1, 2)  # (B, C, T, H, W)


def arch2_top_down_maps(dec: nn.Module, top: torch.Tensor, a16: torch.Tensor, a8: torch.Tensor,
                        a4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The maps of ``arch2_top_down`` before its classifier: ``(b1 (B, F, T, h/16, w/16), b2 (B, F, T, h/8, w/8),
    dec (B, F, T, h/8, w/8))``, the stride-16 block's, the stride-8 block's and the last block's outputs (``dec`` is
    what the classifier reads)."""
    b1 = dec.blocks[0](_up(top, a16.shape[-2:]) + a16)  # stride 16
    b2 = dec.blocks[1](_up(b1, a8.shape[-2:]) + a8)  # stride 8
    out = dec.blocks[2](_up(dec.down(a4), b2.shape[-2:]) + b2)  # stride 8
    return b1, b2, out


def arch2_top_down(dec: nn.Module, top: torch.Tensor, a16: torch.Tensor, a8: torch.Tensor,
                   a4: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """arch2's top-down tail on ``(B, F, T, h, w)`` maps, shared by ``StaticFusionDecoder`` and the arch2 space:
    ``dec.blocks[0]`` over the coarse ``top`` upsampled onto the stride-16 lateral, ``dec.blocks[1]`` onto the stride-8
    one, ``dec.blocks[2]`` over the strided stride-4 lateral (``dec.down``) plus that, then ``dec.classifier``.

    Returns:
        logits (B, K, T, h/8, w/8); ``(logits, aux)`` in training mode when ``dec.aux_heads`` (on the stride-16 and
        stride-8 blocks' outputs).
    """
    b1, b2, out = arch2_top_down_maps(dec, top, a16, a8, a4)
    pred = dec.classifier(out)  # (B, K, T, h8, w8)
    if dec.training and len(dec.aux_heads):
        return pred, [head(b) for head, b in zip(dec.aux_heads, (b1, b2), strict=True)]
    return pred


def _trunk(c0: int, channels: int, dilations: Sequence[int], full_channels: bool, causal: bool,
           layer_ops: Sequence[str] | None) -> tuple[nn.Module | None, nn.ModuleList]:
    """The temporal trunk on the coarse map: ``[reduce]`` (a 3x3x3 conv to ``channels``, unless full channels) and one
    SP-TCN residual layer per dilation (``layer_ops``: 4 ops per layer, None = the 3x3x3 baseline)."""
    per_layer = OPS_PER_CONV * CONVS_PER_LAYER
    if layer_ops is not None and len(layer_ops) != per_layer * len(dilations):
        raise ValueError(f"layer_ops needs {per_layer} ops per trunk layer ({per_layer * len(dilations)}), got "
                         f"{len(layer_ops)}")
    reduce = None if full_channels else ConvBNReLU3d(c0, channels, (3, 3, 3), causal=causal)
    layers = []
    for i, d in enumerate(dilations):
        c_in = c0 if (full_channels and i == 0) else channels
        ops = None if layer_ops is None else layer_ops[i * per_layer:(i + 1) * per_layer]
        layers.append(ResidualLayer(c_in, channels, d, causal=causal, ops=ops))
    return reduce, nn.ModuleList(layers)


class PerFrame(nn.Module):
    """A 2-D module applied to every time step alone: (B, C, T, h, w) -> (B, C', T, h', w').

    ``temporal_extent`` is 0 and ``per_frame`` is True, so the incremental compiler runs it as a ``map`` node.
    """

    temporal_extent = 0
    per_frame = True

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.module(x.transpose(1, 2).reshape(b * t, c, h, w))  # (B*T, C', h', w')
        return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


class _GapAdd(nn.Module):
    """arch2's global-pooling branch: ``x + ReLU(Conv1x1(GAP(x)))``, (N, C, h, w) -> (N, C, h, w) (no BatchNorm after
    the pooling: one value per channel when N = 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.conv(x.mean(dim=(2, 3), keepdim=True)))


class _TrunkDecoder(Slotted, nn.Module):
    """What both fusions share: the attributes, the temporal trunk on the coarse map and its projection to the fusion
    width, ``y = proj(res_layers(reduce(x_coarse)))``, its dataflow, context and op slots (``set_slot`` from
    ``Slotted``)."""

    residual = False  # ``trunk`` replaces the coarse map's projection (True: adds a branch to it, ``arch2_res``)

    def _build_trunk(self, in_channels: Sequence[int], num_classes: int, channels: int, fuse_channels: int,
                     dilations: Sequence[int], full_channels: bool, causal: bool,
                     layer_ops: Sequence[str] | None, residual: bool = False) -> None:
        for name in layer_ops or ():
            get_op(name)  # fail early with the list of valid names
        self.in_channels = tuple(int(c) for c in in_channels)
        self.num_classes = num_classes
        self.channels = channels
        self.fuse_channels = fuse_channels
        self.dilations = tuple(dilations)
        self.full_channels = full_channels
        self.causal = causal
        self.layer_ops = None if layer_ops is None else tuple(layer_ops)
        self.residual = residual
        if residual:  # a = lateral(x_coarse), per frame; the branch reads a (no reduce), its last BN starts at 0
            self.top_lateral = ConvBNReLU3d(self.in_channels[0], fuse_channels, (1, 1, 1), causal=causal)
            self.reduce, self.res_layers = _trunk(fuse_channels, channels, self.dilations, True, causal,
                                                  self.layer_ops)
            self.proj = ConvBNReLU3d(channels, fuse_channels, (1, 1, 1), causal=causal, relu=False)
            nn.init.zeros_(self.proj[1].weight)
            return
        self.reduce, self.res_layers = _trunk(self.in_channels[0], channels, self.dilations, full_channels, causal,
                                              self.layer_ops)
        self.proj = ConvBNReLU3d(channels, fuse_channels, (1, 1, 1), causal=causal)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_coarse, T, h, w) -> (B, fuse_channels, T, h, w): ``proj(res_layers(reduce(x)))``, or with
        ``residual`` ``a + proj(res_layers(a))`` where ``a = top_lateral(x)`` (per frame)."""
        if self.residual:
            a = self.top_lateral(x)  # (B, Ff, T, h, w)
            y = a
            for layer in self.res_layers:
                y = layer(y)
            return a + self.proj(y)
        if self.reduce is not None:
            x = self.reduce(x)  # (B, F, T, h, w)
        for layer in self.res_layers:
            x = layer(x)
        return self.proj(x)

    def trunk_program(self, g: ProgramBuilder, r: int) -> int:
        """``trunk`` as nodes of an incremental program (``incremental_program``); returns its output register."""
        if self.residual:
            a = g.visit(self.top_lateral, r)
            y = a
            for m in (*self.res_layers, self.proj):
                y = g.visit(m, y)
            return g.add(y, a)
        for m in (self.reduce, *self.res_layers, self.proj):
            if m is not None:
                r = g.visit(m, r)
        return r

    @property
    def trunk_extent(self) -> int:
        """Frames of temporal context the trunk adds."""
        return sum(temporal_extent(m) for m in (self.reduce, *self.res_layers) if m is not None)

    def temporal_receptive_field(self) -> int:
        """Frames of context of one output frame: ``1 + temporal_extent``."""
        return 1 + int(self.temporal_extent)  # type: ignore[attr-defined]

    def trunk_slots(self) -> list[tuple[str, int, int]]:
        """The trunk's 4 op slots per residual layer (only when built with ``layer_ops``): ``(name, channels,
        dilation)``."""
        if self.layer_ops is None:
            return []
        return [(f"res_layers.{i}.{conv}.{j}", self.channels, d) for i, d in enumerate(self.dilations)
                for conv in ("conv1", "conv2") for j in range(OPS_PER_CONV)]


class MultiScaleDecoder(_TrunkDecoder):
    """The multi-scale spatial-temporal decoder (module docstring).

    Args:
        in_channels: encoder channels of each scale, coarse first (e.g. stride 32, 8, 4).
        num_classes: K.
        channels: width F of the temporal trunk.
        fuse_channels: width of the finer paths and the fusion.
        dilations: temporal dilation of each trunk residual layer.
        full_channels: drop the trunk's channel reduction (the first residual layer reads the encoder directly).
        causal: causal or centred temporal padding of every op.
        layer_ops: None (the 3x3x3 baseline) or 4 ops per trunk layer from ``OPS`` (a derived TCNNAS trunk).
        scale_ops: ``OPS_PER_SCALE`` ops per finer scale (path op 1, path op 2, fusion op); None = per frame.

    Shapes:
        ``[(B, C_0, T, h_0, w_0), (B, C_1, T, h_1, w_1), ...]`` -> (B, K, T, h_last, w_last).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, *, channels: int = 128, fuse_channels: int = 64,
                 dilations: Sequence[int] = (1, 2), full_channels: bool = False, causal: bool = True,
                 layer_ops: Sequence[str] | None = None, scale_ops: Sequence[str] | None = None) -> None:
        super().__init__()
        in_channels = [int(c) for c in in_channels]
        if len(in_channels) < 1:
            raise ValueError("a multi-scale decoder needs at least the coarse scale")
        fine = len(in_channels) - 1
        scale_ops = tuple(scale_ops) if scale_ops is not None else default_scale_ops(fine)
        if len(scale_ops) != OPS_PER_SCALE * fine:
            raise ValueError(f"scale_ops needs {OPS_PER_SCALE} ops per finer scale ({OPS_PER_SCALE * fine}), got "
                             f"{len(scale_ops)}")
        for name in scale_ops:
            get_op(name)  # fail early with the list of valid names
        self._build_trunk(in_channels, num_classes, channels, fuse_channels, dilations, full_channels, causal,
                          layer_ops)
        self.scale_ops = scale_ops
        self.laterals = nn.ModuleList(ConvBNReLU3d(c, fuse_channels, (1, 1, 1), causal=causal)
                                      for c in in_channels[1:])
        self.paths = nn.ModuleList(
            nn.Sequential(*(get_op(n)(fuse_channels, 1, causal=causal) for n in scale_ops[k * 3:k * 3 + 2]))
            for k in range(fine))
        self.fuses = nn.ModuleList(nn.Sequential(get_op(scale_ops[k * 3 + 2])(fuse_channels, 1, causal=causal))
                                   for k in range(fine))
        self.head = nn.Sequential(ConvBNReLU3d(fuse_channels, fuse_channels, (1, 1, 1), causal=causal),
                                  nn.Conv3d(fuse_channels, num_classes, kernel_size=1))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Coarse first: ``[(B, C_0, T, h_0, w_0), ...]`` -> (B, K, T, h_last, w_last)."""
        if len(feats) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps (one per scale), got {len(feats)}")
        y = self.trunk(feats[0])  # (B, Ff, T, h0, w0)
        for lateral, path, fuse, f in zip(self.laterals, self.paths, self.fuses, feats[1:], strict=True):
            y = fuse(_up(y, f.shape[-2:]) + path(lateral(f)))  # (B, Ff, T, h_s, w_s)
        return self.head(y)  # (B, K, T, h_last, w_last)

    def incremental_program(self, g: ProgramBuilder) -> int:
        """``forward`` as a dataflow for ``vidnas.models.incremental.compile_decoder``: one input register per scale,
        the modules visited in ``forward``'s order, each ``up(y) + path`` one resize-and-add node. Returns the
        output register."""
        regs = g.inputs(len(self.in_channels))
        y = self.trunk_program(g, regs[0])
        for lateral, path, fuse, r in zip(self.laterals, self.paths, self.fuses, regs[1:], strict=True):
            y = g.visit(fuse, g.resize_add(y, g.visit(path, g.visit(lateral, r))))
        return g.visit(self.head, y)

    @property
    def temporal_extent(self) -> int:
        """Past (or, centred, surrounding) frames the output depends on, along the longest path through the trunk,
        the paths and the fusions."""
        e = self.trunk_extent
        for path, fuse in zip(self.paths, self.fuses, strict=True):
            e = max(e, temporal_extent(path)) + temporal_extent(fuse)
        return e

    def searchable_slots(self) -> list[tuple[str, int, int]]:
        """The op positions a decoder supernet searches, in order: ``(name, channels, dilation)``.

        The trunk's 4 slots per residual layer (only when built with ``layer_ops``), then per finer scale its two
        path ops and its fusion op (always). ``OPS[op](channels, dilation)`` builds a candidate for a slot.
        """
        slots = self.trunk_slots()
        for k in range(len(self.paths)):
            slots += [(f"paths.{k}.0", self.fuse_channels, 1), (f"paths.{k}.1", self.fuse_channels, 1),
                      (f"fuses.{k}.0", self.fuse_channels, 1)]
        return slots


class StaticFusionDecoder(_TrunkDecoder):
    """``fusion="arch2"``: the per-frame arch2 decoder (``vidnas.models.decoders.static``) on a temporal trunk::

        top  = g(proj(trunk(x_32)))              trunk: [reduce] + SP-TCN residual layers
               g(a + proj'(trunk(a)))            residual (fusion "arch2_res"): a = Conv1x1-BN-ReLU(x_32), per frame
                                                 (arch2's own lateral); trunk: residual layers on a;
                                                 proj' = Conv1x1-BN with BN weight 0 at init, so top = g(a) = arch2's
                                                 g(y) = y + ReLU(Conv1x1(GAP(y))), per frame
        b_1  = Block(up(top) + a_16)             a_s = Conv1x1-BN-ReLU(x_s), per frame          -> aux head 1
        b_2  = Block(up(b_1) + a_8)                                                             -> aux head 2
        dec  = Block(up(Conv3x3/2-BN-ReLU(a_4)) + b_2)                                          stride 8
        pred = Conv1x1(dec) -> K                                                                stride 8

    Everything after the trunk is per frame, so the temporal context enters through the stride-32 map only: at
    window 1 this is arch2's decoder (the trunk then adds two residual conv layers at stride 32). With ``residual``
    it is exactly arch2's decoder at initialisation, at every window, and arch2's weights map onto it
    (``MultiScaleSegmenter.translate_init_state``).

    Args:
        in_channels: encoder channels at strides 32, 16, 8, 4 (that order).
        num_classes: K.
        channels: width F of the temporal trunk.
        fuse_channels: arch2's aggregation width (64).
        dilations, full_channels, causal, layer_ops: the trunk, as ``MultiScaleDecoder``.
        aux: the two auxiliary heads (returned in training mode only).
        residual: the trunk is a branch added to arch2's stride-32 lateral (fusion ``arch2_res``); ``full_channels``
            does not apply (the branch reads the ``fuse_channels`` lateral).

    Shapes:
        ``[(B, C_32, T, h/32, w/32), (B, C_16, T, ..), (B, C_8, T, ..), (B, C_4, T, ..)]`` -> (B, K, T, h/8, w/8);
        in training mode with ``aux``: ``(logits, [(B, K, T, h/16, w/16), (B, K, T, h/8, w/8)])``.
    """

    fusion = "arch2"

    def __init__(self, in_channels: Sequence[int], num_classes: int, *, channels: int = 128, fuse_channels: int = 64,
                 dilations: Sequence[int] = (1, 2), full_channels: bool = False, causal: bool = True,
                 layer_ops: Sequence[str] | None = None, aux: bool = True, residual: bool = False) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"the arch2 fusion reads four encoder maps (strides 32, 16, 8, 4), got {len(in_channels)}")
        self._build_trunk(in_channels, num_classes, channels, fuse_channels, dilations, full_channels, causal,
                          layer_ops, residual=residual)
        self.fusion = "arch2_res" if residual else "arch2"
        f = fuse_channels
        self.gap = PerFrame(_GapAdd(f))
        self.laterals = nn.ModuleList(ConvBNReLU3d(c, f, (1, 1, 1), causal=causal) for c in in_channels[1:])
        self.down = PerFrame(ConvBNReLU(f, f, 3, stride=2))  # stride 4 -> 8
        self.blocks = nn.ModuleList(PerFrame(StaticBlock(f)) for _ in range(3))
        self.classifier = nn.Conv3d(f, num_classes, kernel_size=1)
        self.aux_heads = nn.ModuleList(nn.Conv3d(f, num_classes, kernel_size=1) for _ in range(2)) if aux \
            else nn.ModuleList()

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Strides 32, 16, 8, 4 -> logits (B, K, T, h/8, w/8); ``(logits, aux)`` in training mode with aux heads."""
        if len(feats) != 4:
            raise ValueError(f"expected 4 feature maps (strides 32, 16, 8, 4), got {len(feats)}")
        top = self.gap(self.trunk(feats[0]))  # (B, Ff, T, h32, w32)
        a16, a8, a4 = (lat(f) for lat, f in zip(self.laterals, feats[1:], strict=True))
        return arch2_top_down(self, top, a16, a8, a4)

    def incremental_program(self, g: ProgramBuilder) -> int:
        """``forward`` (eval mode) as a dataflow for ``vidnas.models.incremental.compile_decoder``."""
        r32, r16, r8, r4 = g.inputs(4)
        y = g.visit(self.gap, self.trunk_program(g, r32))
        b1 = g.visit(self.blocks[0], g.resize_add(y, g.visit(self.laterals[0], r16)))
        b2 = g.visit(self.blocks[1], g.resize_add(b1, g.visit(self.laterals[1], r8)))
        dec = g.visit(self.blocks[2], g.resize_add(g.visit(self.down, g.visit(self.laterals[2], r4)), b2))
        return g.visit(self.classifier, dec)

    @property
    def temporal_extent(self) -> int:
        """Past (or, centred, surrounding) frames the output depends on: the trunk's."""
        return self.trunk_extent

    def searchable_slots(self) -> list[tuple[str, int, int]]:
        """The trunk's 4 op slots per residual layer when built with ``layer_ops`` (the per-frame part has none)."""
        return self.trunk_slots()


class MultiScaleFamily(DecoderFamily):
    """``decoder: mstcn``: on a ``MultiScaleSegmenter``, a ``MultiScaleDecoder`` (``fusion: fpn``, with
    ``arch.scale_ops``) or a ``StaticFusionDecoder`` (``fusion: arch2``; ``arch2_res``: its residual form), both with
    the temporal trunk ``arch.decoder_ops`` / ``channels`` / ``dilations`` / ``full_channels`` describe."""

    model = "multiscale"

    def scales(self, arch: Arch) -> tuple[int, ...]:
        """``arch.scales``: the trunk's stride, then the finer ones."""
        return tuple(arch.scales)

    def build(self, arch: Arch, in_channels: Sequence[int], num_classes: int) -> nn.Module:
        """One map per stride of ``arch.scales`` -> (B, K, T, h_last, w_last) (shapes in the decoders' docstrings)."""
        common = dict(channels=arch.channels, fuse_channels=arch.fuse_channels, dilations=arch.dilations,
                      full_channels=arch.full_channels, causal=arch.causal, layer_ops=arch.decoder_ops)
        if arch.fusion in ("arch2", "arch2_res"):
            return StaticFusionDecoder(in_channels, num_classes, residual=arch.fusion == "arch2_res", **common)
        return MultiScaleDecoder(in_channels, num_classes, scale_ops=arch.scale_ops, **common)

