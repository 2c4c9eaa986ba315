"""The searchable arch2 decoder family (``decoder: arch2_space``): the per-frame arch2 decoder
(``vidnas.models.decoders.static``) with a small list of candidate ops in each of its slots, so the hand-made arch2 is
one point of a searched space and time is a choice per slot.

The topology is arch2's (``static.py``), on windows ``(B, C, T, h, w)``; every op below is one slot::

    a_32 = lateral_0(x_32)    a_16 = lateral_1(x_16)    a_8 = lateral_2(x_8)    a_4 = lateral_3(x_4)   -> F channels
    top  = a_32 + ReLU(Conv1x1(GAP(a_32)))                                       (fixed: arch2's 'gap' branch)
    b_1  = block_0(up(top) + a_16)                                               stride 16  -> aux head 1
    b_2  = block_1(up(b_1) + a_8)                                                stride 8   -> aux head 2
    dec  = block_2(up(down(a_4)) + b_2)                                          stride 8
    pred = Conv1x1(dec) -> K                                                     (fixed)

Candidates per slot (``SLOTS``; the first of each list is arch2's own op):

=============================  ======================================================================================
slot (``arch.decoder_ops`` i)  candidates
=============================  ======================================================================================
0-1 ``laterals.0/1`` (32, 16)  ``conv1x1`` (Conv1x1-BN-ReLU), ``gconv1x1`` (the same with ``LATERAL_GROUPS`` groups:
                               a quarter of the multiply-adds), ``temporal_k3`` (causal (3, 1, 1) conv-BN-ReLU over
                               the window: reads the two previous frames)
2-3 ``laterals.2/3`` (8, 4)    ``conv1x1``, ``gconv1x1``
4 ``blocks.0`` (stride 16)     ``block`` (arch2's residual 3x3 ``StaticBlock``), ``sep_block`` (the same with
                               depthwise-separable 3x3 convs), ``skip`` (identity), ``temporal_block`` (residual
                               ``ReLU(x + BN(Conv3x3(ConvBNReLU_t3(x))))``, its first conv a causal (3, 1, 1) conv)
5-6 ``blocks.1/2`` (stride 8)  ``block``, ``sep_block``, ``skip``
7 ``down`` (stride 4 -> 8)     ``conv3x3_s2`` (arch2's Conv3x3/2-BN-ReLU), ``sep3x3_s2`` (depthwise 3x3/2,
                               pointwise-BN-ReLU)
=============================  ======================================================================================

Temporal candidates sit on the coarse slots only (strides 32 and 16), where reading the past is cheap and its state
small. An encoding without a temporal op is a per-frame model: its output at frame t reads frame t only, whatever the
window. ``decoder_ops = None`` (or ``ARCH2_OPS``) is arch2 itself: the same modules, the same parameter count, and a
per-frame arch2 checkpoint loads onto it (``Arch2SpaceDecoder.arch2_state``, used by
``MultiScaleSegmenter.translate_init_state``, so ``vidnas train --init arch2.pt`` works). ``CHEAPEST_OPS`` is the
cheapest point. The width ``F`` is ``arch.fuse_channels`` (64, arch2's; not searched).

The model around the decoder is a ``MultiScaleSegmenter`` (strides 32, 16, 8, 4, one window per stride); causal, it
streams incrementally (``incremental_program``): per-frame encodings trivially, temporal ones with the state of their
temporal convs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from vidnas.models.decoders.base import DecoderFamily, Slotted
from vidnas.models.decoders.mstcn import PerFrame, _GapAdd, arch2_top_down, arch2_top_down_maps
from vidnas.models.decoders.static import ARCH2_CHANNELS, StaticBlock
from vidnas.models.layers import ConvBNReLU
from vidnas.models.ops import ConvBNReLU3d, IdentityOp, STConv3d, temporal_extent

if TYPE_CHECKING:
    from vidnas.models.architecture import Arch
    from vidnas.models.incremental import ProgramBuilder

__all__ = [
    "SPACE_SCALES",
    "LATERAL_GROUPS",
    "SLOT_OPS",
    "TEMPORAL_OPS",
    "SLOTS",
    "ARCH2_OPS",
    "CHEAPEST_OPS",
    "space_ops_error",
    "SepBlock",
    "TemporalBlock",
    "Arch2SpaceDecoder",
    "Arch2SpaceFrameDecoder",
    "Arch2SpaceFamily",
]

SPACE_SCALES: tuple[int, ...] = (32, 16, 8, 4)  # the four encoder maps, coarse first (the decoder's input order)
LATERAL_GROUPS = 4  # gconv1x1: groups of the cheap lateral (gcd with both widths, so any encoder fits)


class SepBlock(nn.Module):
    """arch2's residual block with depthwise-separable convs: ``ReLU(x + pwBN(dw3x3(pwBNReLU(dw3x3(x)))))``.

    Shapes:
        (N, C, h, w) -> (N, C, h, w).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dw1 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pw1 = ConvBNReLU(channels, channels, 1)
        self.dw2 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pw2 = ConvBNReLU(channels, channels, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.pw2(self.dw2(self.pw1(self.dw1(x)))))


class TemporalBlock(nn.Module):
    """A residual block whose first conv reads the past: ``ReLU(x + BN(Conv3x3(ReLU(BN(Conv_t3(x))))))``, ``Conv_t3``
    a (3, 1, 1) temporal conv (causal or centred like the model), then arch2's spatial 3x3 conv.

    Shapes:
        (B, C, T, h, w) -> (B, C, T, h, w); adds 2 frames of context.
    """

    def __init__(self, channels: int, *, causal: bool = True) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU3d(channels, channels, (3, 1, 1), causal=causal)
        self.conv2 = ConvBNReLU3d(channels, channels, (1, 3, 3), causal=causal, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(self.conv1(x)))

    def incremental_visit(self, g: ProgramBuilder, r: int) -> int:
        """``forward`` as nodes of an incremental program reading register ``r``; returns the output register."""
        return g.add(g.visit(self.conv2, g.visit(self.conv1, r)), r, post=[nn.ReLU()])


def _grouped_lateral(c_in: int, c_out: int, causal: bool) -> nn.Module:
    groups = math.gcd(math.gcd(c_in, c_out), LATERAL_GROUPS)
    return nn.Sequential(STConv3d(c_in, c_out, (1, 1, 1), causal=causal, groups=groups, bias=False),
                         nn.BatchNorm3d(c_out), nn.ReLU(inplace=True))


def _sep_down(channels: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=channels, bias=False),
                         ConvBNReLU(channels, channels, 1))


# slot kind -> op name -> factory(c_in, c_out, causal) -> module on (B, C, T, h, w); the first op is arch2's
OpBuilder = Callable[[int, int, bool], nn.Module]
SLOT_OPS: dict[str, dict[str, OpBuilder]] = {
    "lateral": {
        "conv1x1": lambda ci, co, causal: ConvBNReLU3d(ci, co, (1, 1, 1), causal=causal),
        "gconv1x1": _grouped_lateral,
        "temporal_k3": lambda ci, co, causal: ConvBNReLU3d(ci, co, (3, 1, 1), causal=causal),
    },
    "block": {
        "block": lambda ci, co, causal: PerFrame(StaticBlock(co)),
        "sep_block": lambda ci, co, causal: PerFrame(SepBlock(co)),
        "skip": lambda ci, co, causal: IdentityOp(),
        "temporal_block": lambda ci, co, causal: TemporalBlock(co, causal=causal),
    },
    "down": {
        "conv3x3_s2": lambda ci, co, causal: PerFrame(ConvBNReLU(co, co, 3, stride=2)),
        "sep3x3_s2": lambda ci, co, causal: PerFrame(_sep_down(co)),
    },
}
TEMPORAL_OPS: tuple[str, ...] = ("temporal_k3", "temporal_block")  # the candidates that read the past
_PER_FRAME = {kind: tuple(n for n in ops if n not in TEMPORAL_OPS) for kind, ops in SLOT_OPS.items()}
_ALL = {kind: tuple(ops) for kind, ops in SLOT_OPS.items()}

# (slot name, kind, stride of its map, its candidates), in ``decoder_ops`` order
SLOTS: tuple[tuple[str, str, int, tuple[str, ...]], ...] = (
    ("laterals.0.0", "lateral", 32, _ALL["lateral"]),
    ("laterals.1.0", "lateral", 16, _ALL["lateral"]),
    ("laterals.2.0", "lateral", 8, _PER_FRAME["lateral"]),
    ("laterals.3.0", "lateral", 4, _PER_FRAME["lateral"]),
    ("blocks.0.0", "block", 16, _ALL["block"]),
    ("blocks.1.0", "block", 8, _PER_FRAME["block"]),
    ("blocks.2.0", "block", 8, _PER_FRAME["block"]),
    ("down.0", "down", 4, _ALL["down"]),
)
ARCH2_OPS: tuple[str, ...] = tuple(cands[0] for _, _, _, cands in SLOTS)  # the hand-made arch2
CHEAPEST_OPS: tuple[str, ...] = ("gconv1x1",) * 4 + ("skip",) * 3 + ("sep3x3_s2",)


def space_ops_error(ops: Sequence[str]) -> str | None:
    """Why ``ops`` is not an encoding of the space (one op per slot of ``SLOTS``, each among its candidates), or
    None."""
    if len(ops) != len(SLOTS):
        return f"expected {len(SLOTS)} op names (one per arch2_space slot), got {len(ops)}"
    for i, (op, (name, _, stride, cands)) in enumerate(zip(ops, SLOTS, strict=True)):
        if op not in cands:
            return f"entry {i} (slot {name}, stride {stride}): unknown op {op!r}; valid ops: {', '.join(cands)}"
    return None


class Arch2SpaceDecoder(Slotted, nn.Module):
    """arch2's decoder with one searchable op per slot (module docstring), on windows.

    Args:
        in_channels: encoder channels at strides 32, 16, 8, 4 (that order).
        num_classes: K.
        ops: one op name per slot of ``SLOTS``; None = ``ARCH2_OPS`` (arch2).
        channels: the aggregation width F (arch2: 64).
        causal: causal or centred temporal padding of the temporal candidates.
        aux: the two auxiliary heads (returned in training mode only).

    Shapes:
        ``[(B, C_32, T, h/32, w/32), (B, C_16, T, ..), (B, C_8, T, ..), (B, C_4, T, ..)]`` -> (B, K, T, h/8, w/8); in
        training mode with ``aux``: ``(logits, [(B, K, T, h/16, w/16), (B, K, T, h/8, w/8)])``.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, *, ops: Sequence[str] | None = None,
                 channels: int = ARCH2_CHANNELS, causal: bool = True, aux: bool = True) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"arch2_space reads four encoder maps (strides 32, 16, 8, 4), got {len(in_channels)}")
        ops = ARCH2_OPS if ops is None else tuple(ops)
        error = space_ops_error(ops)
        if error:
            raise ValueError(f"arch2_space ops: {error}")
        self.in_channels = tuple(int(c) for c in in_channels)
        self.num_classes = num_classes
        self.channels = channels
        self.causal = causal
        self.ops = ops
        f = channels
        self.laterals = nn.ModuleList(nn.Sequential(self.slot_op(k, ops[k])) for k in range(4))
        self.gap = PerFrame(_GapAdd(f))
        self.blocks = nn.ModuleList(nn.Sequential(self.slot_op(4 + k, ops[4 + k])) for k in range(3))
        self.down = nn.Sequential(self.slot_op(7, ops[7]))
        self.classifier = nn.Conv3d(f, num_classes, kernel_size=1)
        self.aux_heads = nn.ModuleList(nn.Conv3d(f, num_classes, kernel_size=1) for _ in range(2)) if aux \
            else nn.ModuleList()

    def slot_op(self, slot: int, name: str) -> nn.Module:
        """A fresh candidate ``name`` of slot ``slot`` (an index into ``SLOTS``)."""
        _, kind, _, cands = SLOTS[slot]
        if name not in cands:
            raise ValueError(f"slot {SLOTS[slot][0]}: unknown op {name!r}; valid ops: {', '.join(cands)}")
        c_in = self.in_channels[slot] if kind == "lateral" else self.channels
        return SLOT_OPS[kind][name](c_in, self.channels, self.causal)

    def slot_candidates(self) -> list[tuple[str, ...]]:
        """Every slot's candidate ops, in ``searchable_slots()`` order (arch2's first)."""
        return [cands for _, _, _, cands in SLOTS]

    def searchable_slots(self) -> list[tuple[str, int, int]]:
        """The eight slots, in ``decoder_ops`` order: ``(name, output channels, dilation 1)``; their candidates differ
        per slot (``slot_candidates``, built by ``slot_op``)."""
        return [(name, self.channels, 1) for name, _, _, _ in SLOTS]

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Strides 32, 16, 8, 4 -> logits (B, K, T, h/8, w/8); ``(logits, aux)`` in training mode with aux heads."""
        if len(feats) != 4:
            raise ValueError(f"expected 4 feature maps (strides 32, 16, 8, 4), got {len(feats)}")
        a32, a16, a8, a4 = (lat(f) for lat, f in zip(self.laterals, feats, strict=True))
        top = self.gap(a32)  # (B, F, T, h32, w32)
        return arch2_top_down(self, top, a16, a8, a4)

    def incremental_program(self, g: ProgramBuilder) -> int:
        """``forward`` (eval mode) as a dataflow for ``vidnas.models.incremental.compile_decoder``."""
        r32, r16, r8, r4 = (g.visit(lat, r) for lat, r in zip(self.laterals, g.inputs(4), strict=True))
        b1 = g.visit(self.blocks[0], g.resize_add(g.visit(self.gap, r32), r16))
        b2 = g.visit(self.blocks[1], g.resize_add(b1, r8))
        dec = g.visit(self.blocks[2], g.resize_add(g.visit(self.down, r4), b2))
        return g.visit(self.classifier, dec)

    @property
    def temporal_extent(self) -> int:
        """Past (or, centred, surrounding) frames the output depends on, along the longest path (0: per frame)."""
        e32, e16, e8, e4 = (temporal_extent(m) for m in self.laterals)
        b1 = max(e32, e16) + temporal_extent(self.blocks[0])
        b2 = max(b1, e8) + temporal_extent(self.blocks[1])
        return max(b2, e4 + temporal_extent(self.down)) + temporal_extent(self.blocks[2])

    def temporal_receptive_field(self) -> int:
        """Frames of context of one output frame: ``1 + temporal_extent``."""
        return 1 + int(self.temporal_extent)

    def arch2_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A ``StaticDecoder`` state dict (keys without the ``decoder.`` prefix) in this decoder's names.

        The mapping (2-D weights gain a time axis of 1 where this decoder's layer is 3-D)::

            adapt.{0,1,2,3}.*  (strides 4, 8, 16, 32)  -> laterals.{3,2,1,0}.0.*   conv1x1: .0.weight -> .0.conv.weight
            gap.1.*                                    -> gap.module.conv.*
            down.*                                     -> down.0.module.*          conv3x3_s2
            block{1,2,3}.*                             -> blocks.{0,1,2}.0.module.*  block
            classifier.*, aux_heads.*                  -> the same names

        Only slots holding arch2's own op receive their tensors (a cheaper op has other tensors); the others are left
        out, so a caller's completeness check sees them.
        """
        out: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            part = key.split(".")
            if part[0] == "adapt":
                slot = 3 - int(part[1])
                rest = ["0", "conv", *part[3:]] if part[2] == "0" else part[2:]
                name = ".".join([f"laterals.{slot}.0", *rest])
            elif part[0] == "gap":
                slot, name = None, ".".join(["gap.module.conv", *part[2:]])
            elif part[0] == "down":
                slot, name = 7, ".".join(["down.0.module", *part[1:]])
            elif part[0].startswith("block"):
                slot = 3 + int(part[0][5:])
                name = ".".join([f"blocks.{slot - 4}.0.module", *part[1:]])
            else:  # classifier, aux_heads
                slot, name = None, key
            if slot is not None and self.ops[slot] != ARCH2_OPS[slot]:
                continue
            out[name] = value
        return out

    def extra_repr(self) -> str:
        return f"channels={self.channels}, causal={self.causal}, ops={list(self.ops)}"


class Arch2SpaceFrameDecoder(nn.Module):
    """A per-frame ``Arch2SpaceDecoder`` with ``StaticDecoder``'s contract, so a point of the space without a temporal
    op is a static network of the cell search (``StaticSegmenter(encoder, K, decoder=Arch2SpaceFrameDecoder(d))``).

    It holds the modules of ``decoder`` (shared, not copied) under the same names, so a ``MultiScaleSegmenter``'s
    ``decoder.*`` tensors load onto it unchanged. Every frame is a window of one (a per-frame op reads frame t only,
    so the logits equal the window decoder's at every frame)::

        feats (strides 4, 8, 16, 32: fine first, (N, C_s, H/s, W/s))  -> (N, C_s, 1, H/s, W/s), coarse first
        b1, b2, dec = arch2_top_down_maps(...)                          (module docstring's topology)
        {"dec": dec (N, F, H/8, W/8), "pred": Conv1x1(dec) (N, K, H/8, W/8), "aux": [(N, K, H/16, W/16), (N, K, H/8,
        W/8)] (empty without aux heads)}

    ``dec`` is the last block's output before the classifier, arch2's ``dec`` (F = ``channels``, 64 for arch2).

    Raises:
        ValueError: ``decoder`` has a temporal op (its output reads past frames: not a per-frame network).
    """

    def __init__(self, decoder: Arch2SpaceDecoder) -> None:
        super().__init__()
        temporal = [op for op in decoder.ops if op in TEMPORAL_OPS]
        if temporal:
            raise ValueError(f"arch2_space ops {list(decoder.ops)} read past frames ({', '.join(temporal)}): not a "
                             "per-frame decoder")
        self.ops = decoder.ops
        self.channels = decoder.channels
        self.num_classes = decoder.num_classes
        self.laterals, self.gap, self.blocks, self.down = decoder.laterals, decoder.gap, decoder.blocks, decoder.down
        self.classifier, self.aux_heads = decoder.classifier, decoder.aux_heads

    def forward(self, feats: Sequence[torch.Tensor]) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Four maps (strides 4, 8, 16, 32) -> ``{"dec", "pred", "aux"}`` (shapes in the class docstring)."""
        if len(feats) != 4:
            raise ValueError(f"expected 4 feature maps (strides 4, 8, 16, 32), got {len(feats)}")
        x4, x8, x16, x32 = (f.unsqueeze(2) for f in feats)  # (N, C, 1, h, w)
        a32, a16, a8, a4 = (lat(f) for lat, f in zip(self.laterals, (x32, x16, x8, x4), strict=True))
        b1, b2, dec = arch2_top_down_maps(self, self.gap(a32), a16, a8, a4)  # (N, F, 1, h, w)
        aux = [head(b).squeeze(2) for head, b in zip(self.aux_heads, (b1, b2), strict=False)]
        return {"dec": dec.squeeze(2), "pred": self.classifier(dec).squeeze(2), "aux": aux}

    def extra_repr(self) -> str:
        return f"channels={self.channels}, ops={list(self.ops)}"


class Arch2SpaceFamily(DecoderFamily):
    """``decoder: arch2_space``: an ``Arch2SpaceDecoder`` with ``arch.decoder_ops`` (None: arch2's) at width
    ``arch.fuse_channels``, on a ``MultiScaleSegmenter`` reading strides 32, 16, 8, 4; the encoder at
    ``arch.depths``."""

    model = "multiscale"

    def scales(self, arch: Arch) -> tuple[int, ...]:
        """Strides 32, 16, 8, 4 (coarse first)."""
        return SPACE_SCALES

    def build(self, arch: Arch, in_channels: Sequence[int], num_classes: int) -> nn.Module:
        """Four maps -> (B, K, T, h/8, w/8) (``Arch2SpaceDecoder``)."""
        return Arch2SpaceDecoder(in_channels, num_classes, ops=arch.decoder_ops, channels=arch.fuse_channels,
                                 causal=arch.causal)
