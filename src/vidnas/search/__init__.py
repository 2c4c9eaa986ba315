"""Architecture search: ST-NAS differentiable search (``dnas``), latency tables, architecture files with their
search record. Search code imports ``vidnas.models``; models never import search."""

from vidnas.search.arch import SearchRecord, read_search_record, write_search_arch
from vidnas.search.dnas import (
    DecoderSupernet,
    DepthSearchStage,
    DepthSupernet,
    MixedOp,
    arch_parameters,
    arch_warmup,
    build_decoder_supernet,
    derive_arch,
    search_step,
    set_arch_trainable,
    shrink_depth,
    weight_parameters,
)
from vidnas.search.latency import LatencyTable, MissingLatencyError, measure_encoder_blocks

__all__ = [
    "SearchRecord",
    "read_search_record",
    "write_search_arch",
    "LatencyTable",
    "MissingLatencyError",
    "measure_encoder_blocks",
    "DepthSearchStage",
    "DepthSupernet",
    "shrink_depth",
    "MixedOp",
    "DecoderSupernet",
    "build_decoder_supernet",
    "arch_parameters",
    "weight_parameters",
    "set_arch_trainable",
    "arch_warmup",
    "search_step",
    "derive_arch",
]
