"""ONNX export of the frame-by-frame models: arch2 and dynamic-cell models [CELLS Sec. 3.1].

A dynamic-cell model runs the static network on a key frame and, on every other frame, the static encoder plus the
cell, which reads the previous frame's ``dec`` and ``layer4``. Its export is two graphs (batch 1, every shape fixed):

* ``key.onnx`` (the static network): ``frame`` (1, 3, H, W) -> ``logits`` (1, K, H, W), ``dec`` (1, 64, h8, w8),
  ``layer4`` (1, C4, h32, w32);
* ``cell.onnx`` (encoder + cell): ``frame``, ``prev_dec`` (1, 64, h8, w8), ``prev_layer4`` (1, C4, h32, w32) ->
  ``logits``, ``dec``, ``layer4``. The encoder runs only up to the deepest map the cell reads
  (``Cell.encoder_stages``: a cell that reads layers 2-3 of its frame skips the stride-32 stage, one that reads
  ``prev_dec`` only runs no encoder); ``layer4`` is an output only when that stage runs. A cell that does not read
  an input has no such graph input (the exporter drops unused inputs: ``prev_layer4`` without stage 4, ``frame``
  without any stage); the streamer feeds only the inputs a graph has and carries only the outputs it has.

An arch2 model exports ``key.onnx`` alone, with ``logits`` as its only output. The caller carries the state
(``FrameOrtStreamer``, ``vidnas.export.ort_streamers``): key frames (frame 0 after a reset, and every
``key_interval``-th frame when one is given: ``vidnas.models.streaming.is_key_frame``) run ``key.onnx``; the others run
``cell.onnx`` on the previous frame's ``dec`` and ``layer4``, as ``DynamicCellModel.step`` does, so both runtimes
stream the same logits (``frame_parity_check``; tested over 30 frames with and without a key interval). Logits are
bilinearly upsampled to the model's output size inside the graphs. ``export.json`` (kind ``vidnas-frame``, written
and read by ``vidnas.export.exporter``'s ``export_meta`` / ``read_meta``) records the graphs, their inputs and
outputs, the preprocessing and the classes.

Opset: 17 at least (the window exporter's floor); ``affine`` aggregations need 20 (``affine_grid``), ``deform3x3``
19 (ONNX ``DeformConv``, mapped from ``torchvision::deform_conv2d`` here); the default is the lowest that fits the
model. Exporter: torch's TorchScript-based one (``dynamo=False``), as for window models.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.onnx import register_custom_op_symbolic
from torch.onnx import symbolic_helper as sym_help

from vidnas.export.exporter import (
    META_FILE,
    MIN_OPSET,
    DeployError,
    _export_graphs,
    export_kind,
    export_meta,
    label_meta,
    read_meta,
    write_export_meta,
)
from vidnas.models import StaticSegmenter
from vidnas.models.cells import AffineSampling, DeformConv3x3, DynamicCellModel
from vidnas.models.layers import resize_to

__all__ = [
    "FRAME_EXPORT_KIND",
    "FRAME_SCHEMA_VERSION",
    "FrameExportPaths",
    "is_frame_model",
    "is_frame_export",
    "required_opset",
    "export_frame_onnx",
    "read_frame_meta",
]

logger = logging.getLogger(__name__)

FRAME_EXPORT_KIND = "vidnas-frame"
FRAME_SCHEMA_VERSION = 1
KEY_FILE = "key.onnx"
CELL_FILE = "cell.onnx"


@dataclass(frozen=True)
class FrameExportPaths:
    """Files of a frame-model export: ``key`` graph, ``cell`` graph (None for arch2), ``meta`` (written last)."""

    out_dir: Path
    key: Path
    cell: Path | None
    meta: Path


def is_frame_model(model: Any) -> bool:
    """Whether ``model`` is exported by this module (an arch2 static network or a dynamic-cell model)."""
    return isinstance(model, StaticSegmenter | DynamicCellModel)


def is_frame_export(out_dir: str | Path) -> bool:
    """Whether ``out_dir/export.json`` is a frame-model export (False when absent or of another kind)."""
    return export_kind(out_dir) == FRAME_EXPORT_KIND


def required_opset(model: nn.Module) -> int:
    """The lowest opset the model's graphs need (module docstring)."""
    mods = list(model.modules())
    if any(isinstance(m, AffineSampling) for m in mods):
        return 20
    if any(isinstance(m, DeformConv3x3) for m in mods):
        return 19
    return MIN_OPSET


def _deform_conv_symbolic(g: Any, input: Any, weight: Any, offset: Any, mask: Any, bias: Any, stride_h: Any,
                          stride_w: Any, pad_h: Any, pad_w: Any, dil_h: Any, dil_w: Any, n_weight_grps: Any,
                          n_offset_grps: Any, use_mask: Any) -> Any:
    """``torchvision::deform_conv2d`` (no mask) as ONNX ``DeformConv`` (opset 19)."""
    def i(v: Any) -> int:
        return int(sym_help._get_const(v, "i", "value"))

    if i(use_mask):
        raise DeployError("ONNX export of a modulated (masked) deformable convolution is not supported")
    return g.op("DeformConv", input, weight, offset, bias, strides_i=[i(stride_h), i(stride_w)],
                pads_i=[i(pad_h), i(pad_w), i(pad_h), i(pad_w)], dilations_i=[i(dil_h), i(dil_w)],
                group_i=i(n_weight_grps), offset_group_i=i(n_offset_grps))


class _KeyGraph(nn.Module):
    """frame (1, 3, H, W) -> logits (1, K, H_out, W_out)[, dec, layer4]: the static network on a key frame."""

    def __init__(self, static: nn.Module, out_hw: tuple[int, int], state: bool) -> None:
        super().__init__()
        self.static, self.out_hw, self.state = static, out_hw, state

    def forward(self, frame: torch.Tensor) -> Any:
        feats = self.static.encode(frame)
        out = self.static.decode(feats)
        logits = resize_to(out["pred"], self.out_hw)
        return (logits, out["dec"], feats[3]) if self.state else logits


class _CellGraph(nn.Module):
    """frame, prev_dec, prev_layer4 -> logits, dec[, layer4]: the truncated encoder and the cell on a non-key frame.

    The encoder runs up to the deepest map the cell reads (``DynamicCellModel.encode_non_key``); ``layer4`` is an
    output only when it is computed (``Cell.encoder_stages == 4``).
    """

    def __init__(self, model: DynamicCellModel, out_hw: tuple[int, int]) -> None:
        super().__init__()
        self.model, self.out_hw = model, out_hw

    def forward(self, frame: torch.Tensor, prev_dec: torch.Tensor, prev_layer4: torch.Tensor) -> Any:
        feats = self.model.encode_non_key(frame)
        o = self.model.cell((prev_layer4, prev_dec, feats[1], feats[2], feats[3]))
        logits = resize_to(o.pred, self.out_hw)
        return (logits, o.dec) if feats[3] is None else (logits, o.dec, feats[3])


def _shape(t: torch.Tensor) -> list[int]:
    return [int(s) for s in t.shape]


def export_frame_onnx(model: nn.Module, out_dir: str | Path, *, img_size: Sequence[int], opset: int | None = None,
                      class_names: Sequence[str] | None = None,
                      palette: np.ndarray | Sequence[Sequence[int]] | None = None,
                      extra: dict[str, Any] | None = None) -> FrameExportPaths:
    """Export an arch2 or dynamic-cell model as ``key.onnx`` [+ ``cell.onnx``] + ``export.json`` in ``out_dir``.

    Each file is written to a temporary name and renamed, ``export.json`` last (a stale one is removed first), so an
    interrupted export never looks complete. The model's train / eval mode is restored.

    Args:
        model: a ``StaticSegmenter`` or ``DynamicCellModel`` (exported in eval mode).
        out_dir: output directory (created).
        img_size: (H, W) of the frames.
        opset: ONNX opset; None = ``required_opset(model)``.
        class_names: K names (default ``class{i}``).
        palette: (K, 3) display colours (default: none recorded).
        extra: more JSON-able metadata (e.g. the checkpoint path).

    Raises:
        DeployError: not a frame model, an opset below what the model needs, bad class names or palette.
    """
    import onnx

    if not is_frame_model(model):
        raise DeployError(f"{type(model).__name__} is not a frame-by-frame model (arch2 or dynamic cell): export it "
                          "with vidnas.export.export_onnx")
    need = required_opset(model)
    opset = need if opset is None else int(opset)
    if opset < need:
        raise DeployError(f"opset {opset} is too low for this model: it needs >= {need} (affine aggregation: 20, "
                          f"deform3x3: 19, otherwise {MIN_OPSET})")
    h, w = int(img_size[0]), int(img_size[1])
    out_hw = tuple(int(s) for s in (model.out_size or (h, w)))
    k = int(model.num_classes)
    names, pal = label_meta(k, class_names, palette)
    is_cell = isinstance(model, DynamicCellModel)
    static = model.static if is_cell else model
    d = Path(out_dir)
    paths = FrameExportPaths(d, d / KEY_FILE, d / CELL_FILE if is_cell else None, d / META_FILE)
    d.mkdir(parents=True, exist_ok=True)
    paths.meta.unlink(missing_ok=True)  # a stale export.json would vouch for half-written graphs
    register_custom_op_symbolic("torchvision::deform_conv2d", _deform_conv_symbolic, 19)
    io: dict[str, Any] = {}
    was_training = model.training
    model.eval()
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")  # graphs trace on the model's device
    try:
        frame = torch.zeros(1, 3, h, w, device=device)
        with torch.no_grad():
            logits, dec, layer4 = _KeyGraph(static, out_hw, True)(frame)
        key_out = ["logits", "dec", "layer4"] if is_cell else ["logits"]
        _export_graphs(_KeyGraph(static, out_hw, is_cell).eval(), (frame,), paths.key, ["frame"], key_out, opset)
        shapes = {"logits": _shape(logits), "dec": _shape(dec), "layer4": _shape(layer4)}
        io["key"] = {"inputs": {"frame": [1, 3, h, w]}, "outputs": {n: shapes[n] for n in key_out}}
        if is_cell:
            assert paths.cell is not None
            cell_out = ["logits", "dec", "layer4"] if model.cell.encoder_stages == 4 else ["logits", "dec"]
            _export_graphs(_CellGraph(model, out_hw).eval(), (frame, dec, layer4), paths.cell,
                           ["frame", "prev_dec", "prev_layer4"], cell_out, opset)
            inputs = {"frame": [1, 3, h, w], "prev_dec": shapes["dec"], "prev_layer4": shapes["layer4"]}
            kept = {i.name for i in onnx.load(str(paths.cell)).graph.input}  # the exporter drops unread inputs
            io["cell"] = {"inputs": {n: s for n, s in inputs.items() if n in kept},
                          "outputs": {n: shapes[n] for n in cell_out}}
    finally:
        model.train(was_training)
    for p in (paths.key, paths.cell):
        if p is not None:
            onnx.checker.check_model(str(p))
    rule = ("key.onnx on a video's first frame and on every key_interval-th frame (when given); cell.onnx on the "
            "others, fed the previous frame's dec and layer4 as prev_dec and prev_layer4" if is_cell
            else "key.onnx on every frame")
    meta = export_meta(schema_version=FRAME_SCHEMA_VERSION, kind=FRAME_EXPORT_KIND,
                       files={"model_kind": "cell" if is_cell else "arch2",
                              "graphs": {"key": KEY_FILE, **({"cell": CELL_FILE} if is_cell else {})}},
                       opset=opset, img_size=(h, w), out_hw=out_hw, window=1, causal=True, target_index=None,
                       labels=(names, pal), io=io, rule=("stream_rule", rule), extra=extra)
    write_export_meta(d, meta)
    logger.info("exported %s%s (opset %d, input %dx%d)", paths.key, f" and {paths.cell}" if is_cell else "", opset,
                h, w)
    return paths


def read_frame_meta(out_dir: str | Path) -> dict[str, Any]:
    """Read and check the ``export.json`` of a frame-model export (``vidnas.export.exporter.read_meta``).

    Raises:
        DeployError: missing or invalid file, another kind or schema version, a missing graph (the message names it).
    """
    return read_meta(out_dir, kind=FRAME_EXPORT_KIND, kind_name="frame-model", versions=(FRAME_SCHEMA_VERSION,),
                     required=("graphs", "input_size", "num_classes", "io"),
                     graphs=lambda meta: meta["graphs"].values())
