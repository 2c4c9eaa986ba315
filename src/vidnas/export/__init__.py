"""Deployment: ONNX export as a streaming encoder/decoder pair, onnxruntime streaming, prediction on real videos.

* ``export_onnx(model, out_dir, img_size=..., opset=...) -> ExportPaths``: ``encoder.onnx`` (one frame -> one
  feature map), ``decoder.onnx`` (a window of features -> the target frame's logits) and ``export.json``.
* ``OrtStreamer(out_dir)``: the ``Streamer`` interface (``push`` / ``flush`` / ``reset``) on onnxruntime, numpy in and
  out, with a fixed-size ring buffer of encoder features.
* ``parity_check(model, out_dir, frames=...) -> float``: max |PyTorch - onnxruntime| logits over a stream.
* ``predict_video(source, out_dir, runner)``: masks, overlay video and summary for a video file or frame folder,
  streaming in constant memory; ``load_runner(checkpoint, runtime=...)`` builds the runner.

See ``docs/DEPLOY.md``.
"""

from vidnas.export.exporter import (
    DEFAULT_OPSET,
    EXPORT_SCHEMA_VERSION,
    ExportPaths,
    export_onnx,
    export_paths,
    read_export_meta,
)
from vidnas.export.loading import DeployError, LoadedCheckpoint, load_for_inference, resolve_palette
from vidnas.export.predict import (
    RUNTIMES,
    FrameRunner,
    PredictResult,
    StreamingStats,
    TorchRunner,
    load_runner,
    predict_video,
    preprocess,
)
from vidnas.export.runtime import DEFAULT_PROVIDERS, OrtStreamer, parity_check
from vidnas.export.video import FrameReader, OverlayWriter, VideoError, open_frames, pick_codec

__all__ = [
    "DEFAULT_OPSET",
    "EXPORT_SCHEMA_VERSION",
    "ExportPaths",
    "export_onnx",
    "export_paths",
    "read_export_meta",
    "DeployError",
    "LoadedCheckpoint",
    "load_for_inference",
    "resolve_palette",
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
    "FrameReader",
    "OverlayWriter",
    "VideoError",
    "open_frames",
    "pick_codec",
]
