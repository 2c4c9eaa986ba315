"""Models: encoders, decoders and their ops, the model families, architecture files, building and loading.

Layout (what lives where; each file imports only from the ones above it in this list):

* ``layers`` (shared 2D layers), ``ops`` (the ST-NAS decoder ops, ``OPS``), ``encoders/`` (``ENCODERS``);
* ``decoders/`` (``DECODERS``: one family per module, SP-TCN, head, the static arch2 decoder, multi-scale; they
  name ``Arch`` and ``incremental.ProgramBuilder`` in type annotations only), ``architecture`` (``Arch``: an ST-NAS
  architecture file, the paper's Table 1 rows);
* ``incremental`` (exact one-step decoding of causal decoders: ``compile_decoder``, ``IncrementalDecoder``),
  ``streaming`` (the ``Streamer`` protocol, ``WindowStreamer``, ``IncrementalStreamer``, ``FrameStreamer``, the
  dispatch of window models, the check of ``stream()``'s options, the key-frame rule);
* ``segmenter`` (``VideoSegmenter``: encoder + window decoder), ``multiscale`` (``MultiScaleSegmenter``),
  ``static_segmenter`` (``StaticSegmenter``: arch2, per frame), ``cells/`` (dynamic cells: ops, aggregations,
  genotype, model);
* ``build`` (``build_model`` from a config and an ``Arch``), ``loading`` (``load_model`` of any checkpoint).

Shapes: clips ``(B, T, 3, H, W)`` in, logits ``(B, T, K, H, W)`` out; inside window decoders ``(B, C, T, h, w)``.
Models never import ``vidnas.search`` (tested).
"""

from vidnas.models.architecture import PAPER_ROWS, SCHEMA_VERSION, Arch, ArchError, PaperRow
from vidnas.models.build import arch_from_config, build_decoder, build_model, check_model_config
from vidnas.models.cells import CellGenotype, DynamicCellModel, build_cell_model
from vidnas.models.decoders import DECODERS, DecoderFamily, HeadDecoder, Slotted, SPTCNDecoder
from vidnas.models.encoders import ENCODERS, Encoder, EncoderStage, build_encoder
from vidnas.models.incremental import IncrementalDecoder, IncrementalError, compile_decoder, incremental_support
from vidnas.models.loading import MODEL_KINDS, LoadedModel, load_model
from vidnas.models.ops import OPS, SEARCH_CANDIDATES, get_op, make_op, register_op
from vidnas.models.segmenter import VideoSegmenter
from vidnas.models.static_segmenter import StaticSegmenter, build_static_segmenter
from vidnas.models.streaming import FrameStreamer, IncrementalStreamer, Streamer, WindowStreamer
from vidnas.models.weights import load_imagenet_efficientnet_lite0, load_weights_into

__all__ = [
    "Arch",
    "ArchError",
    "PaperRow",
    "PAPER_ROWS",
    "SCHEMA_VERSION",
    "build_model",
    "build_decoder",
    "arch_from_config",
    "check_model_config",
    "build_encoder",
    "ENCODERS",
    "Encoder",
    "EncoderStage",
    "load_imagenet_efficientnet_lite0",
    "load_weights_into",
    "DECODERS",
    "DecoderFamily",
    "Slotted",
    "SPTCNDecoder",
    "HeadDecoder",
    "OPS",
    "SEARCH_CANDIDATES",
    "get_op",
    "make_op",
    "register_op",
    "VideoSegmenter",
    "StaticSegmenter",
    "build_static_segmenter",
    "CellGenotype",
    "DynamicCellModel",
    "build_cell_model",
    "Streamer",
    "WindowStreamer",
    "FrameStreamer",
    "IncrementalDecoder",
    "IncrementalError",
    "IncrementalStreamer",
    "compile_decoder",
    "incremental_support",
    "MODEL_KINDS",
    "LoadedModel",
    "load_model",
]
