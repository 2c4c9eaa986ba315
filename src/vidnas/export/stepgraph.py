"""The incremental decoder as ONNX graphs with explicit state (their onnxruntime streamer: ``OrtStepStreamer``,
``vidnas.export.ort_streamers``).

A causal model's export directory (``vidnas.export.export_onnx``) gets two more graphs next to ``encoder.onnx`` and
the window decoder ``decoder.onnx``; ``export.json`` lists them under ``"incremental"``:

* ``decoder_init.onnx``: ``feature`` (1, C, h, w) of a video's **first** frame -> ``logits`` (1, K, H, W) and the
  initial state ``state0 .. state{n-1}``. It runs the window decode of ``w`` copies of the frame once (the edge rule
  of the window decode) and keeps what the later steps need (``vidnas.models.incremental``).
* ``decoder_step.onnx``: ``feature`` (1, C, h, w) of every **later** frame plus ``state0 .. state{n-1}`` ->
  ``logits`` (1, K, H, W) and ``next_state0 .. next_state{n-1}``, fed back as ``state0 ..`` on the next frame.

Every shape is static (batch 1, the export's input size and window); the state is a handful of float32 tensors of
fixed size, so a C++ or any other runtime needs no knowledge of the decoder to stream it: run ``encoder`` then
``decoder_init`` on frame 0, ``encoder`` then ``decoder_step`` on frame t > 0, and carry the ``next_state*`` outputs.
The logits equal the window decode of ``decoder.onnx`` (tested over streams of 3w + 3 frames against PyTorch:
``vidnas.export.ort_streamers.step_parity_check``).

A multi-scale model's graphs take one feature per scale, named as ``encoder.onnx``'s outputs (``feature0 ..
feature{n-1}``, coarse first) and listed under ``"features"`` in the ``"incremental"`` section (a single-input
model's section has ``"feature"``); the states follow them in ``decoder_step.onnx``'s inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidnas.export.exporter import (
    DeployError,
    _export_graphs,
    _set_output_shape,
    export_paths,
    feature_specs,
    read_export_meta,
    write_export_meta,
)
from vidnas.models import IncrementalDecoder, IncrementalError, incremental_support

__all__ = [
    "INIT_FILE",
    "STEP_FILE",
    "export_step_graphs",
    "has_step_graphs",
]

logger = logging.getLogger(__name__)

INIT_FILE = "decoder_init.onnx"
STEP_FILE = "decoder_step.onnx"


def _decoder_features(feats: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """The decoder's per-frame input: the tensor itself for one feature map, the list for several."""
    return feats[0] if len(feats) == 1 else list(feats)


class _InitGraph(nn.Module):
    """feature(s) (1, C, h, w) -> logits (1, K, H, W), state tensors: the first frame of a video."""

    def __init__(self, model: nn.Module, step: IncrementalDecoder, out_hw: tuple[int, int]) -> None:
        super().__init__()
        self.model, self.step, self.out_hw = model, step, out_hw

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, state = self.step.init(_decoder_features(features))
        return (self.model.upsample(logits, self.out_hw), *state)


class _StepGraph(nn.Module):
    """feature(s) (1, C, h, w), state tensors -> logits (1, K, H, W), next state tensors: every later frame."""

    def __init__(self, model: nn.Module, step: IncrementalDecoder, out_hw: tuple[int, int]) -> None:
        super().__init__()
        self.model, self.step, self.out_hw = model, step, out_hw

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = self.step.num_inputs
        logits, new_state = self.step.step(_decoder_features(inputs[:n]), inputs[n:])
        return (self.model.upsample(logits, self.out_hw), *new_state)


def has_step_graphs(meta: dict[str, Any]) -> bool:
    """Whether an ``export.json`` lists the incremental graphs."""
    return isinstance(meta.get("incremental"), dict)


def export_step_graphs(model: nn.Module, export_dir: str | Path, *, opset: int | None = None) -> dict[str, Any]:
    """Add ``decoder_init.onnx`` and ``decoder_step.onnx`` to an export directory of ``model`` and list them in its
    ``export.json`` (rewritten atomically, last).

    Args:
        model: the causal ``VideoSegmenter`` the directory was exported from (same input size and window).
        export_dir: a directory written by ``export_onnx``.
        opset: ONNX opset; None = the export's own.

    Returns:
        The ``"incremental"`` section written to ``export.json``.

    Raises:
        DeployError: not an export directory, or a model without an incremental decode (centred; the message says
            why).
    """
    import onnx

    paths = export_paths(export_dir)
    meta = read_export_meta(paths.out_dir)
    reason = incremental_support(model)
    if reason is not None:
        raise DeployError(f"no incremental graphs for {paths.out_dir}: {reason}")
    window = int(meta["window"])
    opset = int(opset or meta["opset"])
    out_hw = (int(meta["output_size"][0]), int(meta["output_size"][1]))
    specs = feature_specs(meta)  # one encoder output, or one per scale
    feat_names = [str(f["name"]) for f in specs]
    was_training = model.training
    model.eval()
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        step = IncrementalDecoder(model.decoder, window)
        if step.num_inputs != len(specs):
            raise DeployError(f"{paths.meta} lists {len(specs)} encoder output(s) but the decoder reads "
                              f"{step.num_inputs} feature map(s) per frame: not an export of this model")
        features = tuple(torch.zeros(*(int(s) for s in f["shape"]), device=device) for f in specs)  # (1, C, h, w)
        with torch.no_grad():
            _, state = step.init(_decoder_features(features))
        n = len(state)
        state_names = [f"state{i}" for i in range(n)]
        next_names = [f"next_state{i}" for i in range(n)]
        _export_graphs(_InitGraph(model, step, out_hw).eval(), features, paths.out_dir / INIT_FILE, feat_names,
                       ["logits", *state_names], opset)
        _export_graphs(_StepGraph(model, step, out_hw).eval(), (*features, *state), paths.out_dir / STEP_FILE,
                       [*feat_names, *state_names], ["logits", *next_names], opset)
    except IncrementalError as e:
        raise DeployError(f"no incremental graphs for {paths.out_dir}: {e}") from e
    finally:
        model.train(was_training)
    for name in (INIT_FILE, STEP_FILE):
        _set_output_shape(paths.out_dir / name, (1, int(model.num_classes), *out_hw))  # logits; states are static
        onnx.checker.check_model(str(paths.out_dir / name))
    k = int(model.num_classes)
    n_in = len(specs)
    feats: dict[str, Any] = ({"feature": {"name": feat_names[0], "shape": list(specs[0]["shape"])}} if n_in == 1
                             else {"features": [{"name": f["name"], "shape": list(f["shape"])} for f in specs]})
    section = {
        "init": INIT_FILE,
        "step": STEP_FILE,
        "receptive_field": step.receptive_field,
        "window_free": step.exact_window_free,
        **feats,
        "logits": {"name": "logits", "shape": [1, k, *out_hw], "frame": "the frame just pushed"},
        "states": [{"input": s, "output": o, "shape": list(t.shape), "dtype": "float32"}
                   for s, o, t in zip(state_names, next_names, state, strict=True)],
        "state_bytes": int(sum(t.numel() * 4 for t in state)),
        "usage": f"frame 0: encoder -> decoder_init (logits, state*); frame t > 0: encoder -> "
                 f"decoder_step({'feature' if n_in == 1 else 'feature0..'}, state*) -> (logits, next_state*); "
                 "next_state_i becomes state_i. Causal: logits of the frame just pushed; a new video starts with "
                 "decoder_init again.",
    }
    write_export_meta(paths.out_dir, {**meta, "incremental": section})
    logger.info("exported %s and %s (%d state tensors, %.2f MB)", INIT_FILE, STEP_FILE, n,
                section["state_bytes"] / 1e6)
    return section
