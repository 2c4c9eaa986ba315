"""Deployment: ONNX export as a streaming encoder/decoder pair, onnxruntime / OpenVINO streaming, prediction on videos.

* ``export_onnx(model, out_dir, img_size=..., opset=...) -> ExportPaths`` (``exporter``): ``encoder.onnx`` (one frame
  -> one feature map), ``decoder.onnx`` (a window of features -> the target frame's logits) and ``export.json``
  (every export's metadata has its one writer and reader there: ``export_meta``, ``read_meta``).
* ``frame_models``: arch2 and dynamic-cell models: ``export_frame_onnx`` writes ``key.onnx`` (the static network) and
  ``cell.onnx`` (encoder + cell carrying ``dec`` and ``layer4``).
* ``stepgraph``: the incremental decoder of a causal model as ``decoder_init.onnx`` + ``decoder_step.onnx`` with the
  state as explicit inputs and outputs (``export_step_graphs``).
* ``ort_streamers``: the streamers, one per kind of export, with the ``Streamer`` protocol
  (``vidnas.models.streaming``; numpy in and out), running the graphs in onnxruntime or OpenVINO (``runtime=``):
  ``OrtStreamer`` (the window pair, fixed-size ring buffers), ``OrtStepStreamer`` (the incremental graphs),
  ``FrameOrtStreamer`` (key / cell graphs, with a key interval); and
  their checks against PyTorch, ``parity_check(model, out_dir, frames=...)``, ``step_parity_check``,
  ``frame_parity_check``.
* ``quantize``: ``vidnas export --precision int8``: ``quantize_export(out_dir, cfg)`` replaces the graphs that take
  images (``key.onnx``, ``encoder.onnx``) by onnxruntime QDQ INT8 graphs calibrated on the model's training frames;
  ``accuracy_check(loaded, out_dir)`` scores them against the fp32 model and the labels of the validation split.
* ``runtime``: what ``vidnas predict`` runs: ``load_runner(checkpoint, runtime=...)`` gives a ``TorchRunner``
  (``model.stream()`` of any model kind) or a streamer of the export in onnxruntime or OpenVINO; the onnxruntime
  session options; ``export_models`` / ``open_streamers`` for the benchmark.
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
from vidnas.export.frame_models import FrameExportPaths, export_frame_onnx, is_frame_export, is_frame_model
from vidnas.export.ort_streamers import (
    DEFAULT_PROVIDERS,
    FrameOrtStreamer,
    OrtStepStreamer,
    OrtStreamer,
    frame_parity_check,
    parity_check,
    step_parity_check,
)
from vidnas.export.predict import PredictResult, StreamingStats, predict_video, preprocess
from vidnas.export.quantize import PRECISIONS, accuracy_check, mark_bf16, quantize_export
from vidnas.export.runtime import RUNTIMES, TorchRunner, load_runner
from vidnas.export.stepgraph import export_step_graphs
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
    "PRECISIONS",
    "accuracy_check",
    "mark_bf16",
    "quantize_export",
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
