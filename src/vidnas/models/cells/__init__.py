"""Dynamic cells [CELLS Sec. 3], in the DARTS split: ``ops`` and ``aggregations`` (the search space's tables),
``genotype`` (a cell as data), ``model`` (the cell and the video model built from a genotype).

A dynamic cell predicts the current frame's labelling from five inputs (SPEC "Cell inputs")::

    pool[0] prev_layer4   encoder output of the previous frame, stride 32
    pool[1] prev_dec      decoder output (or the previous cell's output) of the previous frame, 64 ch, stride 8
    pool[2] layer2        encoder output of the current frame, stride 8
    pool[3] layer3        encoder output of the current frame, stride 16
    pool[4] layer4        encoder output of the current frame, stride 32

each adapted by Conv1x1-BN-ReLU to 64 channels and resized (bilinear) to stride 8. A streamed non-key frame runs the
encoder only up to the deepest map the cell reads (``CellGenotype.encoder_stages``: 2, 3 or 4; 4 whenever
``prev_layer4`` is read, since this frame's layer4 is the next one's; 0 for a cell on ``prev_dec`` alone).

The controller emits five tokens per layer, ``[input 1, input 2, op 1, op 2, aggregation]``; layer ``l`` (0-based)
computes ``agg(op1(pool[input 1]), op2(pool[input 2]))`` and appends it to the pool as ``pool[5 + l]``, so layer ``l``
chooses its inputs among ``5 + l`` entries (with replacement). The cell output is the concatenation of the layer
outputs that no later layer uses, then Conv1x1-BN-ReLU to 64 channels: that is the next frame's ``dec``, and a Conv1x1
classifier on it gives ``pred`` (K channels, stride 8).

RECONSTRUCTION. The paper's Table 1 (operations) and Table 2 (aggregations) were lost. ``CELL_OPS`` and
``AGGREGATIONS`` implement the lists SPEC records; their order is this project's choice and is what the tokens index.
Where an aggregation is asymmetric the first argument drives and the second is transformed:

============== =========================================================================================
aggregation    ``agg(x1, x2)``
============== =========================================================================================
sum            ``w1 * x1 + w2 * x2`` with learned scalars (init 1)
concat         ``Conv1x1-BN-ReLU(cat(x1, x2))``
attention      dense non-local attention, queries from x1, keys and values from x2:
               ``x1 + BN(Conv1x1(softmax(q k^T / sqrt(d)) v))`` (BN weight init 0, so it starts as x1)
predictive     per-pixel 3x3 filters predicted from x1 (Conv3x3 -> 9 ch, softmax over the 9 taps) applied to x2
affine         spatial transformer: a 2x3 matrix predicted from x1 (GAP -> Linear, init identity) warps x2 by
               bilinear sampling
conv3d         ``Conv3d`` kernel (2, 3, 3) over ``stack(x1, x2)`` along time -> BN -> ReLU
============== =========================================================================================

Architectures are data: a ``CellGenotype`` (frozen, JSON with a schema version) is all that is needed to rebuild a
cell; this package never imports ``vidnas.search`` (tested).
"""

from vidnas.models.cells.aggregations import (
    AGGREGATIONS,
    AffineSampling,
    ConcatConv,
    Conv3dAggregation,
    DenseAttention,
    PredictiveFilter,
    WeightedSum,
)
from vidnas.models.cells.genotype import (
    CELL_INPUTS,
    CELL_SCHEMA_VERSION,
    NUM_CELL_INPUTS,
    TOKENS_PER_LAYER,
    CellError,
    CellGenotype,
    CellLayer,
    resolve_names,
)
from vidnas.models.cells.model import (
    STATIC_DECODERS,
    Cell,
    CellOutput,
    DynamicCellModel,
    as_static_network,
    build_cell_model,
    build_static_network,
    cell_in_channels,
    static_network_error,
)
from vidnas.models.cells.ops import CELL_OPS, DeformConv3x3, GlobalPoolOp, SepConv
from vidnas.models.static_segmenter import build_static_segmenter

__all__ = [
    "CELL_SCHEMA_VERSION",
    "CELL_INPUTS",
    "NUM_CELL_INPUTS",
    "TOKENS_PER_LAYER",
    "CELL_OPS",
    "AGGREGATIONS",
    "CellError",
    "SepConv",
    "GlobalPoolOp",
    "DeformConv3x3",
    "WeightedSum",
    "ConcatConv",
    "DenseAttention",
    "PredictiveFilter",
    "AffineSampling",
    "Conv3dAggregation",
    "CellLayer",
    "CellGenotype",
    "Cell",
    "CellOutput",
    "DynamicCellModel",
    "build_cell_model",
    "STATIC_DECODERS",
    "static_network_error",
    "as_static_network",
    "build_static_network",
    "build_static_segmenter",
    "resolve_names",
    "cell_in_channels",
]
