"""ST-NAS differentiable search [ST-NAS Sec. 3.1-3.3]: depth-search stages (Eq. 1, Eq. 2, shrink rule), mixed ops,
the decoder supernet, warm-up and search steps, deriving an ``Arch``."""

from vidnas.search.dnas.base import (
    SearchModule,
    arch_parameters,
    search_modules,
    set_arch_trainable,
    weight_parameters,
)
from vidnas.search.dnas.depth import DepthSearchStage, DepthSupernet, shrink_depth
from vidnas.search.dnas.mixed import MixedOp
from vidnas.search.dnas.supernet import (
    SEARCH_MODES,
    DecoderSupernet,
    arch_warmup,
    build_decoder_supernet,
    derive_arch,
    search_step,
)

__all__ = [
    "SearchModule",
    "arch_parameters",
    "weight_parameters",
    "set_arch_trainable",
    "search_modules",
    "DepthSearchStage",
    "DepthSupernet",
    "shrink_depth",
    "MixedOp",
    "DecoderSupernet",
    "build_decoder_supernet",
    "arch_warmup",
    "search_step",
    "derive_arch",
    "SEARCH_MODES",
]
