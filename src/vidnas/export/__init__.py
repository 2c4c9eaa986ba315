"""Deployment: ONNX export as a streaming encoder/decoder pair, onnxruntime streaming, prediction on real videos.

* ``export_onnx(model, out_dir, img_size=..., opset=...) -> ExportPaths`` (``exporter``): ``encoder.onnx`` (one frame
  -> one feature map), ``decoder.onnx`` (a window of features -> the target frame's logits) and ``export.json``.
* ``frame_models``: arch2 and dynamic-cell models: ``export_frame_onnx`` writes ``key.onnx`` (the static network) and
  ``cell.onnx`` (encoder + cell carrying ``dec`` and ``layer4``), ``FrameOrtStreamer`` streams them (with a key
  interval), ``frame_parity_check`` compares them with PyTorch.
* ``runtime``: ``OrtStreamer(out_dir)`` (the ``Streamer`` protocol on onnxruntime, numpy in and out, with a
  fixed-size ring buffer), ``parity_check(model, out_dir, frames=...)``, and the runners of ``vidnas predict``:
  ``load_runner(checkpoint, runtime=...)`` gives a ``TorchRunner`` (``model.stream()`` of any model kind) or an
  ``OrtStreamer``.
* ``stepgraph``: the incremental decoder of a causal model as ``decoder_init.onnx`` + ``decoder_step.onnx`` with the
  state as explicit inputs and outputs (``export_step_graphs``), its streamer ``OrtStepStreamer`` and
  ``step_parity_check``.
* ``predict``: ``predict_video(source, out_dir, runner)``: masks, overlay video and summary for a video file or frame
  folder, streaming in constant memory. ``video``: frame readers and the overlay writer.

Models are loaded with ``vidnas.models.load_model``. See ``docs/DEPLOY.md``.
"""

from vidnas.export.exporter import (
    DEFAULT_OPSET,
    EXPORT_SCHEMA_VERSION,
    DeployError,
    ExportPaths,
    export_onnx,
    export_paths,
    read_export_meta,
)
from vidnas.export.frame_models import (
    FrameExportPaths,
    FrameOrtStreamer,
    export_frame_onnx,
    frame_parity_check,
    is_frame_export,
    is_frame_model,
)
from vidnas.export.predict import PredictResult, StreamingStats, predict_video, preprocess
from vidnas.export.runtime import (
    DEFAULT_PROVIDERS,
    RUNTIMES,
    FrameRunner,
    OrtStreamer,
    TorchRunner,
    load_runner,
    parity_check,
)
from vidnas.export.stepgraph import OrtStepStreamer, export_step_graphs, step_parity_check
from vidnas.export.video import FrameReader, OverlayWriter, VideoError, open_frames, pick_codec

__all__ = [
    "DEFAULT_OPSET",
    "EXPORT_SCHEMA_VERSION",
    "ExportPaths",
    "export_onnx",
    "export_paths",
    "read_export_meta",
    "FrameExportPaths",
    "FrameOrtStreamer",
    "export_frame_onnx",
    "frame_parity_check",
    "is_frame_export",
    "is_frame_model",
    "DeployError",
    "RUNTIMES",
    "FrameRunner",
    "PredictResult",
    "StreamingStats",
    "TorchRunner",
    "load_runner",
    "predict_video",
    "preprocess",
    "DEFAULT_PROVIDERS",
    "OrtStreamer",
    "parity_check",
    "OrtStepStreamer",
    "export_step_graphs",
    "step_parity_check",
    "FrameReader",
    "OverlayWriter",
    "VideoError",
    "open_frames",
    "pick_codec",
]
