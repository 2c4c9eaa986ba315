"""Models: encoders, decoders and their ops, the VideoSegmenter, architecture files and ``build_model``.

Shapes: clips ``(B, T, 3, H, W)`` in, logits ``(B, T, K, H, W)`` out; inside decoders ``(B, C, T, h, w)``.
"""

from vidnas.models.arch import PAPER_ROWS, SCHEMA_VERSION, Arch, ArchError, PaperRow
from vidnas.models.build import arch_from_config, build_decoder, build_model
from vidnas.models.decoders import HeadDecoder, SPTCNDecoder
from vidnas.models.encoders import ENCODERS, Encoder, EncoderStage, build_encoder
from vidnas.models.ops import OPS, SEARCH_CANDIDATES, get_op, make_op
from vidnas.models.segmenter import Streamer, VideoSegmenter
from vidnas.models.weights import load_checkpoint, load_imagenet_efficientnet_lite0

__all__ = [
    "Arch",
    "ArchError",
    "PaperRow",
    "PAPER_ROWS",
    "SCHEMA_VERSION",
    "build_model",
    "build_decoder",
    "arch_from_config",
    "build_encoder",
    "ENCODERS",
    "Encoder",
    "EncoderStage",
    "load_checkpoint",
    "load_imagenet_efficientnet_lite0",
    "SPTCNDecoder",
    "HeadDecoder",
    "OPS",
    "SEARCH_CANDIDATES",
    "get_op",
    "make_op",
    "VideoSegmenter",
    "Streamer",
]
