"""INT8 and bf16 exports: onnxruntime static post-training quantisation of the graphs that take images, and the
accuracy check of a quantised or bf16 deployment.

``vidnas export --precision int8`` writes the fp32 export first (``export_onnx`` / ``export_frame_onnx``, checked
against PyTorch as always), then replaces the graphs that read the frame with QDQ INT8 graphs (``quantize_export``):

* frame models (arch2, dynamic cell): ``key.onnx``; a dynamic-cell model's ``cell.onnx`` stays fp32;
* window models: ``encoder.onnx``; ``decoder.onnx`` and the incremental ``decoder_init.onnx`` /
  ``decoder_step.onnx`` stay fp32.

Graphs that take features stay fp32 in this version: ``export.json`` lists them under ``quantization.fp32_graphs``.

``vidnas export --precision bf16`` rewrites no graph: the fp32 export is marked ``precision: bf16`` (``mark_bf16``)
and deployed by OpenVINO with its bf16 inference-precision hint (CPUs with AVX-512 BF16 or AMX); its accuracy check
runs that deployment.

Quantisation: ``onnxruntime.quantization.quantize_static``, QDQ format (QuantizeLinear / DequantizeLinear pairs
around each quantised op, so any onnxruntime build runs the graph), signed INT8 activations and weights, per-channel
weight scales, MinMax calibration over ``calib_frames`` frames drawn (seeded, without replacement) from the model's
own training split (``cfg.data.train_split``), or from the user's own video or frame folder (``calib``: frames spread
evenly over it), preprocessed as in evaluation (``calibration_frames``). Nodes kept in float (``float_nodes``, chosen
by ``keep_float``, `vidnas export --keep-float`): by default the stem (the first Conv, which reads the raw frame) and
the classifier head (the last Conv before ``logits``); ``()`` quantises every Conv (docs/RESULTS.md §21 measures the
two on a trained CamVid arch2).

Accuracy check (``accuracy_check``): the first ``frames`` frames of the validation split (``cfg.data.val_split``),
video by video, streamed through the fp32 PyTorch model (``TorchRunner``) and the export (INT8: the onnxruntime
streamer ``vidnas predict`` uses; bf16: the OpenVINO one at bf16), both in the same protocol. It reports

* ``miou_fp32`` and ``miou_int8`` (``miou_bf16``): each against the labels (annotated frames only), and
  ``miou_drop_points`` = 100 * (miou_fp32 - miou_int8);
* ``agreement_miou``: the export's argmax scored against the fp32 argmax as if it were the label (every frame), and
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
from vidnas.export.video import VideoError, open_frames
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
    "FLOAT_PARTS",
    "DEFAULT_KEEP_FLOAT",
    "parse_keep_float",
    "float_nodes",
    "quantize_graph",
    "quantize_export",
    "mark_bf16",
    "accuracy_check",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8", "bf16")  # bf16: the fp32 graphs, run by OpenVINO with its bf16 precision hint
DEFAULT_CALIB_FRAMES = 32
DEFAULT_ACCURACY_FRAMES = 64
DEFAULT_MAX_MIOU_DROP = 1.0  # mIoU points (0-100 scale)
_IMAGE_GRAPHS = {FRAME_EXPORT_KIND: ("key",), "vidnas-stream": ("encoder",)}  # graphs whose input is the frame
FLOAT_PARTS = ("stem", "head")  # what --keep-float may name: the first Conv, the classifier's last Conv
DEFAULT_KEEP_FLOAT = FLOAT_PARTS
_FLOAT_RULE = {"stem": "the stem (the first Conv, reading the frame)",
               "head": "the classifier head (the last Conv before logits)"}


def parse_keep_float(text: str) -> tuple[str, ...]:
    """``--keep-float``: a comma-separated subset of ``FLOAT_PARTS`` (``stem,head``), or ``none``.

    Raises:
        DeployError: an unknown part, named with the valid ones.
    """
    if text.strip().lower() == "none":
        return ()
    parts = tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    bad = [p for p in parts if p not in FLOAT_PARTS]
    if bad or not parts:
        raise DeployError(f"--keep-float {text!r}: give 'none' or a comma-separated list of {', '.join(FLOAT_PARTS)}")
    return parts


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


def calibration_frames(cfg: Config, n: int, *, seed: int = 0, calib: str | Path | None = None) -> list[np.ndarray]:
    """``n`` frames (1, 3, H, W) float32, ImageNet-normalised at the model's size: drawn without replacement (seeded)
    from ``cfg.data.train_split`` (``check_int8_data``'s errors), or, with ``calib`` (a video file or a folder of
    frames, as `vidnas predict` reads), ``n`` frames spread evenly over it.

    Raises:
        DeployError: ``calib`` unreadable or holding fewer than ``n`` frames (the message names it).
    """
    h, w = int(cfg.data.height), int(cfg.data.width)
    if calib is None:
        source, refs = check_int8_data(cfg, n)
        pick = np.random.default_rng(seed).choice(len(refs), size=n, replace=False)
        return [normalize(resize_image(source.read_image(refs[i]), h, w))[None].numpy() for i in sorted(pick)]
    if n < 1:
        raise DeployError(f"--calib-frames must be >= 1, got {n}")
    kept: list[torch.Tensor] = []  # (3, H, W) uint8, every stride-th frame; the stride doubles at 4n kept
    stride, seen = 1, 0
    try:
        with open_frames(calib) as reader:
            for i, frame in enumerate(reader):  # uint8 (H, W, 3)
                seen += 1
                if i % stride == 0:
                    kept.append(resize_image(frame, h, w))
                    if len(kept) > 4 * n:
                        kept, stride = kept[::2], stride * 2
    except VideoError as e:
        raise DeployError(f"--calib: {e}") from e
    if seen < n:
        raise DeployError(f"--calib {calib}: {seen} frame(s), {n} calibration frames asked: lower --calib-frames")
    pick = np.linspace(0, len(kept) - 1, n).round().astype(int)
    return [normalize(kept[i])[None].numpy() for i in pick]


def float_nodes(graph_model: Any, keep_float: Sequence[str] = DEFAULT_KEEP_FLOAT) -> list[str]:
    """Names of the nodes kept in float (module docstring): with ``stem`` in ``keep_float`` the first Conv, with
    ``head`` the last Conv that ``logits`` depends on (graphs with a ``logits`` output)."""
    nodes = list(graph_model.graph.node)  # the exporter writes them in topological order
    convs = [nd for nd in nodes if nd.op_type == "Conv"]
    keep = [convs[0].name] if convs and "stem" in keep_float else []
    if "head" in keep_float and any(o.name == "logits" for o in graph_model.graph.output):
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


def quantize_graph(src: Path, dst: Path, frames: Sequence[np.ndarray | Mapping[str, np.ndarray]],
                   keep_float: Sequence[str] = DEFAULT_KEEP_FLOAT, *, keep: Sequence[str] | None = None) -> list[str]:
    """Write ``dst``: ``src`` quantised to QDQ INT8 with ``frames`` as calibration data (arrays fed to the input
    ``frame``, or input name -> array), the ``keep_float`` parts (``float_nodes``) in float, or exactly the nodes
    named by ``keep``; returns the nodes kept in float. ``dst`` is written atomically; ``src`` is read only."""
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

    keep = float_nodes(onnx.load(str(src)), keep_float) if keep is None else list(keep)
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
                    seed: int = 0, calib: str | Path | None = None,
                    keep_float: Sequence[str] = DEFAULT_KEEP_FLOAT) -> dict[str, Any]:
    """Replace the image graphs of the fp32 export in ``out_dir`` by QDQ INT8 graphs (module docstring) and record
    ``precision`` and ``quantization`` in its ``export.json``; returns the ``quantization`` record.

    ``export.json`` is removed first and written last, so an interrupted quantisation never leaves an export that
    vouches for graphs it does not describe.

    Args:
        out_dir: an fp32 export (``export_onnx`` / ``export_frame_onnx``).
        cfg: the model's config (``cfg.data``: the calibration frames' source, split and size).
        calib_frames: frames drawn from ``cfg.data.train_split`` (or from ``calib``).
        seed: the draw's seed.
        calib: a video file or frame folder to calibrate on instead (``calibration_frames``).
        keep_float: the parts kept in float (``float_nodes``).

    Raises:
        DeployError: an export that is already INT8, too few training frames.
    """
    d = Path(out_dir)
    meta = json.loads((d / META_FILE).read_text())
    if meta.get("precision", "fp32") != "fp32":
        raise DeployError(f"{d / META_FILE}: the export is already {meta['precision']}")
    graphs, fp32_graphs = quantized_graphs(meta)
    frames = calibration_frames(cfg, calib_frames, seed=seed, calib=calib)
    (d / META_FILE).unlink()
    kept = {file: quantize_graph(d / file, d / file, frames, keep_float) for file in graphs.values()}
    where = ({"split": cfg.data.train_split, "format": cfg.data.format, "root": cfg.data.root, "seed": seed}
             if calib is None else {"path": str(calib), "spread": "evenly"})
    record = {
        "method": "onnxruntime.quantization.quantize_static", "format": "QDQ", "activations": "int8",
        "weights": "int8, per channel", "calibration": {"method": "MinMax", "frames": calib_frames, **where},
        "int8_graphs": list(graphs.values()), "fp32_graphs": fp32_graphs, "float_nodes": kept,
        "keep_float": list(keep_float),
        "float_nodes_rule": "; ".join(_FLOAT_RULE[p] for p in keep_float) or "every Conv quantised",
    }
    meta.update(precision="int8", quantization=record)
    write_export_meta(d, meta)
    logger.info("quantised %s to INT8 (%d calibration frames)", ", ".join(graphs.values()), calib_frames)
    return record


def mark_bf16(out_dir: str | Path) -> dict[str, Any]:
    """Record in the fp32 export of ``out_dir`` that it is deployed in bf16: the graphs stay as exported (fp32
    weights; no graph is rewritten), and OpenVINO runs them with ``INFERENCE_PRECISION_HINT`` bf16 (a CPU with
    AVX-512 BF16 or AMX; `vidnas predict --runtime openvino --amp bf16`). Returns the ``bf16`` record.

    Raises:
        DeployError: an export that is not fp32.
    """
    d = Path(out_dir)
    meta = json.loads((d / META_FILE).read_text())
    if meta.get("precision", "fp32") != "fp32":
        raise DeployError(f"{d / META_FILE}: the export is already {meta['precision']}")
    record = {"runtime": "openvino", "hint": "INFERENCE_PRECISION_HINT=bf16",
              "graphs": "the fp32 graphs as exported (onnxruntime runs them in fp32)"}
    meta.update(precision="bf16", bf16=record)
    write_export_meta(d, meta)
    return record


def _stream(runner: Any, frame: np.ndarray) -> list[np.ndarray]:
    out = runner.push(frame)
    return [] if out is None else [out]


def accuracy_check(loaded: LoadedModel, out_dir: str | Path, *, frames: int = DEFAULT_ACCURACY_FRAMES,
                   precision: str = "int8") -> dict[str, Any]:
    """Score the ``precision`` export in ``out_dir`` (``int8``: the QDQ graphs in onnxruntime; ``bf16``: the graphs
    in OpenVINO with its bf16 hint) against the fp32 PyTorch model and the labels on the first ``frames`` frames of
    the validation split (module docstring); writes the result as ``accuracy`` into its ``export.json`` and returns
    it (``miou_<precision>``, ``miou_drop_points``, ``agreement_miou``, ``pixel_agreement``).

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
    cm = {"fp32": ConfusionMatrix(k, ignore), "export": ConfusionMatrix(k, ignore), "agree": ConfusionMatrix(k, None)}
    fp32 = TorchRunner(loaded, channels_last=False)
    if precision == "bf16":
        exported = load_runner(None, runtime="openvino", export_dir=out_dir, amp="bf16")
    else:
        exported = load_runner(None, runtime="onnxruntime", export_dir=out_dir)
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
                outs_b += _stream(exported, x)
                masks.append(None if mask is None else mask.numpy())
                seen += 1
            outs_a += fp32.flush()
            outs_b += exported.flush()
            for a, b, m in zip(outs_a, outs_b, masks, strict=True):
                pa, pb = a[0].argmax(0), b[0].argmax(0)  # (H, W)
                cm["agree"].update(pb, pa)
                equal += int((pa == pb).sum())
                total += pa.size
                if m is not None:
                    cm["fp32"].update(pa, m)
                    cm["export"].update(pb, m)
    scores = {n: cm[n].compute() for n in cm}
    labelled = scores["fp32"]["num_pixels"] > 0
    miou = {n: float(scores[n]["miou"]) if labelled else None for n in ("fp32", "export")}
    result = {
        "split": cfg.data.val_split, "frames": seen, "reference": "fp32 PyTorch model", "precision": precision,
        "miou_fp32": miou["fp32"], f"miou_{precision}": miou["export"],
        "miou_drop_points": 100.0 * (miou["fp32"] - miou["export"]) if labelled else None,  # type: ignore[operator]
        "agreement_miou": float(scores["agree"]["miou"]), "pixel_agreement": equal / max(total, 1),
    }
    d = Path(out_dir)
    meta = json.loads((d / META_FILE).read_text())
    meta["accuracy"] = result
    write_export_meta(d, meta)
    return result
