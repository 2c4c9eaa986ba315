"""Latency tables: measured per-block latency (ms) of an encoder, keyed by block signature, for Eq. 2 [ST-NAS].

Three modules: ``signatures`` (the table keys of blocks, encoder parts and decoder parts), ``table``
(``LatencyTable``: lookups, the latency of a whole architecture, the decoder pricing the search uses, the JSON file)
and ``measure`` (the one measuring policy, ``complete_model_parts``).

One measuring policy serves `vidnas latency` and the search (``measure_latency_table``): every block is timed at its
real input shape (batch 1) for ``iters`` calls after warm-up, in ``repeats`` whole-encoder passes, and the table keeps
each block's median over the passes of its per-pass median. One pass times a block's calls back to back, a few ms for
a small block: a single descheduling of the process on a busy machine covers all of them and inflates that block
100-fold (seen on the 2-core development machine); over several passes such a stall hits one pass, and the median
over passes ignores it.

A table holds, for one device, the median time of every encoder block, keyed by
``Encoder.block_signature(stage, block, img_size)`` (e.g. ``"swin_tiny/s2/b1/w7x7_shift3x3_h12/1x20x36x384"``): the
signature names the encoder, the stage, the block index,
the block's kind (Swin: window, shift, heads, so shifted and unshifted blocks differ) and its input shape. A table
measured on the full encoder therefore serves every shortened one. The downsample (patch merging, stride-changing
block) of each stage is timed too, for reports; it is not searched and not part of the penalty.

Besides the searched blocks a table holds the other **parts** of a model's per-frame cost (``parts``), so that
the latency of any architecture of the ST-NAS space can be read from the table (``LatencyTable.model_latency``)::

    T(arch) = stem + sum_s [downsample_s + sum_{i <= d_s} s_{s,i} + output_s] + decoder(arch) + upsample

with ``decoder(arch)`` the full-window decode of the SP-TCN baseline (one entry) or, for a searched decoder, the
decoder with every slot an identity (``sptcn_fixed``: reduction, adapters, skips, final conv, head) plus the latency
of each slot's op at the slot's dilation. A multi-scale (``mstcn``) decoder is read the same way
(``multiscale_signatures``): the decoder with every searched slot an identity (``mstcn_fixed``: reduction or 3x3x3
trunk, projections, upsampling and sums of the fusion, head) plus each trunk slot's op on the coarse map and each
finer scale's path and fusion ops on that scale's map. Stem and output conversions are timed with the blocks
(``measure_encoder_blocks``); the decoder parts by ``measure_decoder_parts`` (the search measures the missing ones
when a budget needs them). This is the ST-NAS protocol's unit (encode one frame + decode the window), minus the
feature stacking and Python overhead of a push.

**Runtime and precision** (``meta.runtime``, ``meta.precision``; ``LatencyTable.pricing``): by default every
module is timed in eager PyTorch, fp32. ``measure_*(..., timer=GraphTimer("onnxruntime" | "openvino", "fp32" |
"int8"))`` (``vidnas.export.graph_timing``) times each module (block, downsample, stem, output, decoder part, slot
candidate, upsampling) as its own ONNX graph in that runtime, INT8 quantised at int8, with the same warm-up, passes and
medians; so the search's penalty is the latency of the model as deployed. A table without these keys reads as
torch / fp32. The sum of separately timed graphs is not the latency of the one fused graph of a whole model (fusions
and quantise / dequantise pairs across module boundaries differ): the table ranks candidates, it does not predict a
deployment to the millisecond.

JSON layout (schema version 1; ``parts`` is optional, older tables have none)::

    {"schema_version": 1, "device": {...vidnas.bench.device_signature()..., "torch_device": "cpu"},
     "meta": {"encoder": "swin_tiny", "img_size": [320, 576], "warmup": 10, "iters": 50, "statistic": "median",
              "batch": 1, "runtime": "torch", "precision": "fp32", "runtime_version": {"torch": "2..."},
              "created": "2025-...Z"},
     "blocks": {signature: ms, ...}, "downsample": {signature: ms, ...}, "parts": {signature: ms, ...},
     "stats": {signature: {"median_ms", "mean_ms", "std_ms", "p90_ms", "n"}, ...}}
"""

from vidnas.search.latency.measure import (
    LATENCY_ITERS,
    LATENCY_REPEATS,
    LATENCY_WARMUP,
    complete_model_parts,
    measure_decoder_parts,
    measure_encoder_blocks,
    measure_latency_table,
)
from vidnas.search.latency.signatures import (
    decoder_inputs,
    decoder_signatures,
    downsample_signature,
    model_part_keys,
    multiscale_signatures,
    output_signature,
    space_signatures,
    stem_signature,
)
from vidnas.search.latency.table import (
    DEVICE_KEYS,
    LATENCY_SCHEMA_VERSION,
    LatencyTable,
    LatencyTableError,
    MissingLatencyError,
)

__all__ = [
    "LATENCY_SCHEMA_VERSION",
    "DEVICE_KEYS",
    "LatencyTable",
    "LatencyTableError",
    "MissingLatencyError",
    "downsample_signature",
    "stem_signature",
    "output_signature",
    "decoder_signatures",
    "multiscale_signatures",
    "space_signatures",
    "decoder_inputs",
    "model_part_keys",
    "measure_encoder_blocks",
    "measure_decoder_parts",
    "complete_model_parts",
    "measure_latency_table",
    "LATENCY_WARMUP",
    "LATENCY_ITERS",
    "LATENCY_REPEATS",
]
