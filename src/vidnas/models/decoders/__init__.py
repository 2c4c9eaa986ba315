"""Decoders, one family per module, each registered in ``DECODERS`` under its ``arch.json`` name.

* ``sptcn`` (module ``sptcn``): ``SPTCNDecoder`` (baseline, full channels, searched TCNNAS; its ``ResidualLayer``),
  in a ``VideoSegmenter``;
* ``head`` (``head``): ``HeadDecoder`` (per frame, window 1), in a ``VideoSegmenter``;
* ``arch2`` (``static``): ``StaticDecoder``, the cell search's per-frame static network, in a ``StaticSegmenter``;
* ``mstcn`` (``mstcn``): ``MultiScaleDecoder`` (``fusion: fpn``) or ``StaticFusionDecoder`` (``fusion: arch2``,
  ``arch2_res``), in a ``MultiScaleSegmenter``;
* ``arch2_space`` (``arch2_space``): ``Arch2SpaceDecoder``, arch2's decoder with candidate ops per slot (arch2 is
  one point of it), in a ``MultiScaleSegmenter``.

``base`` holds the contract (``DecoderFamily``: ``model``, ``scales``, ``depths``, ``build``) and ``Slotted`` (the op
slots a decoder supernet searches). The families are registered here, in the order above (the order error messages
list the names in); a family from outside registers the same way, ``DECODERS.register(name, family)``.
"""

from vidnas.models.decoders.arch2_space import (
    ARCH2_OPS,
    CHEAPEST_OPS,
    SLOTS,
    Arch2SpaceDecoder,
    Arch2SpaceFamily,
    Arch2SpaceFrameDecoder,
    space_ops_error,
)
from vidnas.models.decoders.base import DECODERS, DecoderFamily, Slotted
from vidnas.models.decoders.head import HeadDecoder, HeadFamily
from vidnas.models.decoders.mstcn import (
    DEFAULT_SCALES,
    OPS_PER_SCALE,
    MultiScaleDecoder,
    MultiScaleFamily,
    PerFrame,
    StaticFusionDecoder,
    default_scale_ops,
)
from vidnas.models.decoders.sptcn import CONVS_PER_LAYER, OPS_PER_CONV, ResidualLayer, SPTCNDecoder, SPTCNFamily
from vidnas.models.decoders.static import ARCH2_CHANNELS, StaticBlock, StaticDecoder, StaticFamily

DECODERS.register("sptcn", SPTCNFamily())
DECODERS.register("head", HeadFamily())
DECODERS.register("arch2", StaticFamily())
DECODERS.register("mstcn", MultiScaleFamily())
DECODERS.register("arch2_space", Arch2SpaceFamily())

__all__ = [
    "DECODERS",
    "DecoderFamily",
    "Slotted",
    "SPTCNDecoder",
    "SPTCNFamily",
    "ResidualLayer",
    "OPS_PER_CONV",
    "CONVS_PER_LAYER",
    "HeadDecoder",
    "HeadFamily",
    "ARCH2_CHANNELS",
    "StaticBlock",
    "StaticDecoder",
    "StaticFamily",
    "MultiScaleDecoder",
    "StaticFusionDecoder",
    "PerFrame",
    "MultiScaleFamily",
    "DEFAULT_SCALES",
    "OPS_PER_SCALE",
    "default_scale_ops",
    "Arch2SpaceDecoder",
    "Arch2SpaceFrameDecoder",
    "Arch2SpaceFamily",
    "SLOTS",
    "ARCH2_OPS",
    "CHEAPEST_OPS",
    "space_ops_error",
]
