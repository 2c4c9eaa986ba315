"""INT8 exports: onnxruntime static post-training quantisation of the graphs that take images, and its accuracy check.

``vidnas export --precision int8`` writes the fp32 export first (``export_onnx`` / ``export_frame_onnx``, checked
against PyTorch as always), then replaces the graphs that read the frame with QDQ INT8 graphs (``quantize_export``):

* frame models (arch2, dynamic cell): ``key.onnx``; a dynamic-cell model's ``cell.onnx`` stays fp32;
* window models: ``encoder.onnx``; ``decoder.onnx`` and the incremental ``decoder_init.onnx`` /
  ``decoder_step.onnx`` stay fp32.

Graphs that take features stay fp32 in this version: ``export.json`` lists them under ``quantization.fp32_graphs``.

Quantisation: ``onnxruntime.quantization.quantize_static``, QDQ format (QuantizeLinear / DequantizeLinear pairs
around each quantised op, so any onnxruntime build runs the graph), signed INT8 activations and weights, per-channel
weight scales, MinMax calibration over ``calib_frames`` frames drawn (seeded, without replacement) from the model's
own training split (``cfg.data.train_split``) and preprocessed as in evaluation (``calibration_frames``). Nodes kept
in float (``float_nodes``): the stem (the first Conv, which reads the raw frame) and the classifier head (the last
Conv before ``logits``). That list is a default taken from common practice, not a measurement on a full-size vidnas
model (on a tiny arch2, docs/DEPLOY.md, keeping them in float changed pixel agreement with fp32 by 0.0003).

Accuracy check (``accuracy_check``): the first ``frames`` frames of the validation split (``cfg.data.val_split``),
video by video, streamed through the fp32 PyTorch model (``TorchRunner``) and the INT8 export (the onnxruntime
streamer ``vidnas predict`` uses), both in the same protocol. It reports

* ``miou_fp32`` and ``miou_int8``: each against the labels (annotated frames only), and ``miou_drop_points`` =
  100 * (miou_fp32 - miou_int8);
* ``agreement_miou``: the INT8 argmax scored against the fp32 argmax as if it were the label (every frame), and
  ``pixel_agreement``, the share of pixels where the two argmaxes are equal.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidnas.config import Config
from vidnas.data import FrameRef, VideoFrames, VideoSource, normalize, open_source, resize_image
from vidnas.export.exporter import META_FILE, DeployError, write_export_meta
from vidnas.export.frame_models import FRAME_EXPORT_KIND
from vidnas.export.runtime import TorchRunner, load_runner
from vidnas.metrics import ConfusionMatrix
from vidnas.models.loading import LoadedModel
from vidnas.utils import atomic_write

__all__ = [
    "PRECISIONS",
    "DEFAULT_CALIB_FRAMES",
    "DEFAULT_ACCURACY_FRAMES",
    "DEFAULT_MAX_MIOU_DROP",
    "quantized_graphs",
    "check_int8_data",
    "calibration_frames",
    "float_nodes",
    "quantize_graph",
    "quantize_export",
    "accuracy_check",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")
DEFAULT_CALIB_FRAMES = 32
DEFAULT_ACCURACY_FRAMES = 64
DEFAULT_MAX_MIOU_DROP = 1.0  # mIoU points (0-100 scale)
_IMAGE_GRAPHS = {FRAME_EXPORT_KIND: ("key",), "vidnas-stream": ("encoder",)}  # graphs whose input is the frame
_FLOAT_RULE = ("the stem (the first Conv, reading the frame) and the classifier head (the last Conv before logits); "
               "a default: no measurable effect on a tiny arch2, not measured on a full-size model (docs/DEPLOY.md)")


def quantized_graphs(meta: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """(graph name -> file quantised, files kept fp32) of an export's ``export.json``."""
    if meta["kind"] == FRAME_EXPORT_KIND:
        files = dict(meta["graphs"])
    else:
        files = {"encoder": meta["encoder"], "decoder": meta["decoder"],
                 **{k: v for k, v in (meta.get("incremental") or {}).items() if k in ("init", "step")}}
    wanted = _IMAGE_GRAPHS[meta["kind"]]
    return {k: v for k, v in files.items() if k in wanted}, [v for k, v in files.items() if k not in wanted]


def check_int8_data(cfg: Config, calib_frames: int) -> tuple[VideoSource, list[FrameRef]]:
    """The model's data set and its training frames, once checked for an INT8 export (before any work): at least
    ``calib_frames`` frames in ``cfg.data.train_split`` and a video in ``cfg.data.val_split`` (the accuracy check).

    Raises:
        DeployError: ``calib_frames`` < 1, too few training frames, no validation video. DataError: a missing data set
            (the message names its root).
    """
    if calib_frames < 1:
        raise DeployError(f"--calib-frames must be >= 1, got {calib_frames}")
    source = open_source(cfg.data)
    refs = list(source.frames(cfg.data.train_split))
    if len(refs) < calib_frames:
        raise DeployError(f"{calib_frames} calibration frames asked, the {cfg.data.train_split!r} split of "
                          f"{source.name} has {len(refs)}: lower --calib-frames")
    if not source.videos(cfg.data.val_split):
        raise DeployError(f"the {cfg.data.val_split!r} split of {source.name} has no videos to check accuracy on")
    return source, refs


def calibration_frames(cfg: Config, n: int, *, seed: int = 0) -> list[np.ndarray]:
    """``n`` frames (1, 3, H, W) float32, ImageNet-normalised at the model's size, drawn without replacement (seeded)
    from ``cfg.data.train_split`` (``check_int8_data``'s errors)."""
    source, refs = check_int8_data(cfg, n)
    pick = np.random.default_rng(seed).choice(len(refs), size=n, replace=False)
    h, w = int(cfg.data.height), int(cfg.data.width)
    return [normalize(resize_image(source.read_image(refs[i]), h, w))[None].numpy() for i in sorted(pick)]


def float_nodes(graph_model: Any) -> list[str]:
    """Names of the nodes kept in float (module docstring): the first Conv, and the last Conv that ``logits``
    depends on (graphs with a ``logits`` output)."""
    nodes = list(graph_model.graph.node)  # the exporter writes them in topological order
    convs = [nd for nd in nodes if nd.op_type == "Conv"]
    keep = [convs[0].name] if convs else []
    if any(o.name == "logits" for o in graph_model.graph.output):
        producer = {out: nd for nd in nodes for out in nd.output}
        seen, todo = set(), ["logits"]
        while todo:  # every node logits depends on
            nd = producer.get(todo.pop())
            if nd is not None and nd.name not in seen:
                seen.add(nd.name)
                todo.extend(nd.input)
        head = [nd.name for nd in convs if nd.name in seen]
        if head and head[-1] not in keep:
            keep.append(head[-1])
    return keep


def quantize_graph(src: Path, dst: Path, frames: Sequence[np.ndarray | Mapping[str, np.ndarray]], *,
                   keep: Sequence[str] | None = None) -> list[str]:
    """Write ``dst``: ``src`` quantised to QDQ INT8 with ``frames`` as calibration data (arrays fed to the input
    ``frame``, or input name -> array); returns the nodes kept in float, ``keep`` (default ``float_nodes``).
    ``dst`` is written atomically; ``src`` is read only."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(frames)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else dict(x) if isinstance(x, Mapping) else {"frame": x}

    keep = float_nodes(onnx.load(str(src))) if keep is None else list(keep)
    ort.set_default_logger_severity(3)  # the calibrator's sessions list every constant they drop, as warnings
    with tempfile.TemporaryDirectory() as tmp:  # the calibrator writes an augmented copy of the graph there
        def write(out: str) -> None:
            quantize_static(str(src), out, _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep,
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"CalibTensorRangeSymmetric": False},
                            calibration_cache_path=os.path.join(tmp, "calibration.cache"))

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its advice to pre-process, and per-tensor fallbacks for 1-D (LayerNorm) weights
        try:
            atomic_write(dst, write)
        finally:
            ort.set_default_logger_severity(2)  # onnxruntime's default
            root.setLevel(level)
    return keep


def quantize_export(out_dir: str | Path, cfg: Config, *, calib_frames: int = DEFAULT_CALIB_FRAMES,
                    seed: int = 0) -> dict[str, Any]:
    """Replace the image graphs of the fp32 export in ``out_dir`` by QDQ INT8 graphs (module docstring) and record
    ``precision`` and ``quantization`` in its ``export.json``; returns the ``quantization`` record.

    ``export.json`` is removed first and written last, so an interrupted quantisation never leaves an export that
    vouches for graphs it does not describe.

    Args:
        out_dir: an fp32 export (``export_onnx`` / ``export_frame_onnx``).
        cfg: the model's config (``cfg.data``: the calibration frames' source, split and size).
        calib_frames: frames drawn from ``cfg.data.train_split``.
        seed: the draw's seed.

    Raises:
        DeployError: an export that is already INT8, too few training frames.
    """
    d = Path(out_dir)
    meta = json.loads((d / META_FILE).read_text())
    if meta.get("precision", "fp32") != "fp32":
        raise DeployError(f"{d / META_FILE}: the export is already {meta['precision']}")
    graphs, fp32_graphs = quantized_graphs(meta)
    frames = calibration_frames(cfg, calib_frames, seed=seed)
    (d / META_FILE).unlink()
    kept = {file: quantize_graph(d / file, d / file, frames) for file in graphs.values()}
    record = {
        "method": "onnxruntime.quantization.quantize_static", "format": "QDQ", "activations": "int8",
        "weights": "int8, per channel", "calibration": {"method": "MinMax", "frames": calib_frames, "seed": seed,
                                                        "split": cfg.data.train_split, "format": cfg.data.format,
                                                        "root": cfg.data.root},
        "int8_graphs": list(graphs.values()), "fp32_graphs": fp32_graphs, "float_nodes": kept,
        "float_nodes_rule": _FLOAT_RULE,
    }
    meta.update(precision="int8", quantization=record)
    write_export_meta(d, meta)
    logger.info("quantised %s to INT8 (%d calibration frames)", ", ".join(graphs.values()), calib_frames)
    return record


def _stream(runner: Any, frame: np.ndarray) -> list[np.ndarray]:
    out = runner.push(frame)
    return [] if out is None else [out]


def accuracy_check(loaded: LoadedModel, out_dir: str | Path, *, frames: int = DEFAULT_ACCURACY_FRAMES
                   ) -> dict[str, Any]:
    """Score the INT8 export in ``out_dir`` against the fp32 PyTorch model and the labels on the first ``frames``
    frames of the validation split (module docstring); writes the result as ``accuracy`` into its ``export.json``
    and returns it.

    Raises:
        DeployError: ``frames`` < 1, an empty validation split.
    """
    if frames < 1:
        raise DeployError(f"--accuracy-frames must be >= 1, got {frames}")
    cfg = loaded.cfg
    source = open_source(cfg.data)
    videos = source.videos(cfg.data.val_split)
    if not videos:  # check_int8_data refuses it before the export
        raise DeployError(f"the {cfg.data.val_split!r} split of {source.name} has no videos to check accuracy on")
    k = int(loaded.num_classes)
    ignore = source.ignore_index
    cm = {"fp32": ConfusionMatrix(k, ignore), "int8": ConfusionMatrix(k, ignore), "agree": ConfusionMatrix(k, None)}
    fp32 = TorchRunner(loaded, channels_last=False)
    int8 = load_runner(None, runtime="onnxruntime", export_dir=out_dir)
    equal = total = seen = 0
    with torch.no_grad():
        for video in videos:
            if seen >= frames:
                break
            masks: list[np.ndarray | None] = []
            outs_a: list[np.ndarray] = []
            outs_b: list[np.ndarray] = []
            for img, mask, _ in VideoFrames(source, video, cfg.data):
                if seen >= frames:
                    break
                x = img[None].numpy()
                outs_a += _stream(fp32, x)
                outs_b += _stream(int8, x)
                masks.append(None if mask is None else mask.numpy())
                seen += 1
            outs_a += fp32.flush()
            outs_b += int8.flush()
            for a, b, m in zip(outs_a, outs_b, masks, strict=True):
                pa, pb = a[0].argmax(0), b[0].argmax(0)  # (H, W)
                cm["agree"].update(pb, pa)
                equal += int((pa == pb).sum())
                total += pa.size
                if m is not None:
                    cm["fp32"].update(pa, m)
                    cm["int8"].update(pb, m)
    scores = {n: cm[n].compute() for n in cm}
    labelled = scores["fp32"]["num_pixels"] > 0
    miou = {n: float(scores[n]["miou"]) if labelled else None for n in ("fp32", "int8")}
    result = {
        "split": cfg.data.val_split, "frames": seen, "reference": "fp32 PyTorch model",
        "miou_fp32": miou["fp32"], "miou_int8": miou["int8"],
        "miou_drop_points": 100.0 * (miou["fp32"] - miou["int8"]) if labelled else None,  # type: ignore[operator]
        "agreement_miou": float(scores["agree"]["miou"]), "pixel_agreement": equal / max(total, 1),
    }
    d = Path(out_dir)
    meta = json.loads((d / META_FILE).read_text())
    meta["accuracy"] = result
    write_export_meta(d, meta)
    return result
