"""ONNX export of a ``VideoSegmenter`` as a streaming pair: ``encoder.onnx`` + ``decoder.onnx`` + ``export.json``.

The pair mirrors ``VideoSegmenter.stream()``: the encoder runs once per new frame, the decoder once per window of
the last ``w`` encoder features (the ST-NAS FPS protocol), and the caller keeps the ring buffer (``OrtStreamer``,
``vidnas.export.ort_streamers``).

Graphs (batch 1, every shape fixed at export):

* ``encoder.onnx``: ``frame`` (1, 3, H, W) float32, ImageNet-normalised RGB -> ``feature`` (1, C, h, w).
* ``decoder.onnx``: ``features`` (1, C, T=w, h, w) in time order (oldest first) -> ``logits`` (1, K, H, W), the
  **target frame only** (index ``w - 1`` causal, ``w // 2`` centred), bilinearly upsampled to the model input size.
  Emitting one frame instead of all T saves the upsampling of T - 1 maps nobody reads; the temporal convolutions still
  compute every time step, as in PyTorch.

Multi-scale models (``MultiScaleSegmenter``, ``decoder: mstcn``) read one encoder map per scale (``scales``, coarse
first): ``encoder.onnx`` has one output per scale, ``feature0 .. feature{n-1}``, and ``decoder.onnx`` one window
input per scale, ``features0 .. features{n-1}`` (each (1, C_i, T=w, h_i, w_i), oldest first). Their ``export.json``
has ``schema_version`` 2 (``MULTI_SCHEMA_VERSION``): the ``io`` sections list ``outputs`` / ``inputs`` instead of
one ``output`` / ``input``, and ``scales`` names the strides, so a reader that knows only one feature map refuses the
file by its version instead of misreading it. ``feature_specs`` and ``window_specs`` read either layout.

``export.json``, of this module's exports and of the frame models' (``vidnas.export.frame_models``), has one writer
and one reader, here: ``export_meta`` builds it (the fields both kinds share, in one order), ``write_export_meta``
writes it, ``read_meta`` reads and checks it (``read_export_meta``; ``frame_models.read_frame_meta``).

Exporter: torch's TorchScript-based exporter (``dynamo=False``). The ``torch.export``-based one (the default since
torch 2.9) needs ``onnxscript``, which is not a vidnas dependency; the TorchScript one traces timm's Swin cleanly
(its shifted-window masks are constant buffers for a fixed input size, ``torch.roll`` becomes Slice + Concat, the
window padding becomes Pad) and needs opset >= 17 for ``LayerNormalization``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import vidnas
from vidnas.data import IMAGENET_MEAN, IMAGENET_STD
from vidnas.models import DynamicCellModel, StaticSegmenter
from vidnas.utils import atomic_write as atomic_save
from vidnas.utils import atomic_write_json as atomic_save_json

__all__ = [
    "DeployError",
    "ort_session",
    "parity_mode",
    "label_meta",
    "DEFAULT_OPSET",
    "EXPORT_SCHEMA_VERSION",
    "MULTI_SCHEMA_VERSION",
    "ENCODER_FILE",
    "DECODER_FILE",
    "META_FILE",
    "STREAM_EXPORT_KIND",
    "ExportPaths",
    "export_onnx",
    "export_meta",
    "write_export_meta",
    "export_kind",
    "read_meta",
    "read_export_meta",
    "export_paths",
    "feature_specs",
    "window_specs",
]

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17  # the lowest opset with LayerNormalization (Swin); onnxruntime >= 1.16 runs it
MIN_OPSET = 17
EXPORT_SCHEMA_VERSION = 1
MULTI_SCHEMA_VERSION = 2  # the same layout with one feature map per scale (multi-scale models)
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
META_FILE = "export.json"  # every export directory's metadata: export_meta, write_export_meta, read_meta
STREAM_EXPORT_KIND = "vidnas-stream"


class DeployError(ValueError):
    """An export directory, a graph or an option cannot be used for deployment; the message names the file."""


def label_meta(k: int, class_names: Sequence[str] | None, palette: Any) -> tuple[list[str], list[list[int]] | None]:
    """An export's class names (``class0..`` when None) and palette as a (k, 3) list clipped to 0..255 (or None);
    ``DeployError`` when either does not match the model's ``k`` classes."""
    names = [str(n) for n in class_names] if class_names is not None else [f"class{i}" for i in range(k)]
    if len(names) != k:
        raise DeployError(f"{len(names)} class names for a model with {k} classes")
    if palette is None:
        return names, None
    arr = np.asarray(palette, dtype=np.int64)
    if arr.shape != (k, 3):
        raise DeployError(f"palette must have shape ({k}, 3), got {arr.shape}")
    return names, arr.clip(0, 255).tolist()


@contextlib.contextmanager
def parity_mode(model: nn.Module) -> Iterator[torch.device]:
    """For a parity check: ``model`` in eval mode and full float32 (TF32 off: on a GPU TF32 convolutions alone differ
    from onnxruntime's CPU by ~1e-3); yields the model's device; restores the training flag and TF32 afterwards."""
    param = next(iter(model.parameters()), None)
    was_training = model.training
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    model.eval()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield param.device if param is not None else torch.device("cpu")
    finally:
        model.train(was_training)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def ort_session(ort: Any, path: Path, options: Any, providers: list[str]) -> Any:
    """An onnxruntime ``InferenceSession`` of ``path``; ``DeployError`` naming the file when it cannot be loaded."""
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable / invalid graphs
        raise DeployError(f"onnxruntime cannot load {path}: {e}") from e


@dataclass(frozen=True)
class ExportPaths:
    """Files of one export directory.

    Attributes:
        out_dir: the directory.
        encoder: ``encoder.onnx``.
        decoder: ``decoder.onnx``.
        meta: ``export.json`` (written last: its presence marks a complete export).
    """

    out_dir: Path
    encoder: Path
    decoder: Path
    meta: Path


def export_paths(out_dir: str | Path) -> ExportPaths:
    """The file names of an export directory (nothing is checked)."""
    d = Path(out_dir)
    return ExportPaths(d, d / ENCODER_FILE, d / DECODER_FILE, d / META_FILE)


class _EncoderGraph(nn.Module):
    """frame (1, 3, H, W) -> feature (1, C, h, w): ``VideoSegmenter.encode`` (a multi-scale model: one output per
    scale)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        return self.model.encode(frame)


class _DecoderGraph(nn.Module):
    """features (1, C, T, h, w) -> logits (1, K, H, W) of the target frame, as ``WindowStreamer._advance`` computes
    (``multi``: one window per scale, passed to the decoder as a list)."""

    def __init__(self, model: nn.Module, out_hw: tuple[int, int], target_index: int, multi: bool = False) -> None:
        super().__init__()
        self.model = model
        self.out_hw = out_hw
        self.target_index = target_index
        self.multi = multi

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        window = list(features) if self.multi else features[0]
        logits = self.model.decoder(window)[:, :, self.target_index]  # (1, K, h, w)
        return self.model.upsample(logits, self.out_hw)  # (1, K, H, W)


def feature_specs(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The encoder outputs of an export (``name``, ``shape`` (1, C, h, w)): one, or one per scale (schema 2)."""
    enc = meta["io"]["encoder"]
    return list(enc["outputs"]) if "outputs" in enc else [enc["output"]]


def window_specs(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The window inputs of ``decoder.onnx`` (``name``, ``shape`` (1, C, w, h, w)), in the order of
    ``feature_specs``."""
    dec = meta["io"]["decoder"]
    return list(dec["inputs"]) if "inputs" in dec else [dec["input"]]


def export_onnx(
    model: nn.Module,
    out_dir: str | Path,
    *,
    img_size: Sequence[int] | None = None,
    opset: int = DEFAULT_OPSET,
    class_names: Sequence[str] | None = None,
    palette: np.ndarray | Sequence[Sequence[int]] | None = None,
    extra: dict[str, Any] | None = None,
    window: int | None = None,
) -> ExportPaths:
    """Export ``model`` as ``encoder.onnx`` + ``decoder.onnx`` + ``export.json`` in ``out_dir``.

    Each file is written to a temporary name and renamed, ``export.json`` last, so an interrupted export never
    leaves a directory that looks complete. The model's train/eval mode is restored afterwards.

    Args:
        model: a ``VideoSegmenter`` (exported in eval mode).
        out_dir: output directory (created).
        img_size: (H, W) of the frames; None = ``model.encoder.img_size``. Swin models must be exported at the size
            they were built for (rebuild with ``load_for_inference(img_size=...)`` for another one).
        opset: ONNX opset (>= 17).
        class_names: K names recorded in ``export.json`` (default ``class{i}``).
        palette: (K, 3) display colours recorded in ``export.json`` (default: none recorded).
        extra: more JSON-able metadata (e.g. the checkpoint path, the architecture).
        window: frames per decoded window; None = the model's own (the decoders are convolutional in time).

    Returns:
        The paths written.

    Raises:
        DeployError: opset too low, no input size known, or a frame-by-frame model (arch2, dynamic cell), which
            ``vidnas.export.frame_models`` exports instead.
    """
    import onnx

    if isinstance(model, StaticSegmenter | DynamicCellModel):  # frame-by-frame: their decoder is not a window decoder
        kind = "dynamic-cell" if hasattr(model, "cell") else "arch2 (per-frame)"
        raise DeployError(f"ONNX export of {kind} models is not supported yet (the export holds an encoder graph and "
                          "a window-decoder graph); run them with the PyTorch runtime: `vidnas predict` and "
                          "`vidnas bench` (--runtime torch) take their checkpoints")
    if opset < MIN_OPSET:
        raise DeployError(f"opset {opset} is too low: Swin needs LayerNormalization, i.e. opset >= {MIN_OPSET}")
    if img_size is None:
        img_size = getattr(getattr(model, "encoder", None), "img_size", None)
        if img_size is None:
            raise DeployError("img_size is required: the encoder does not record the input size it was built for")
    h, w = int(img_size[0]), int(img_size[1])
    out_hw = model.out_size or (h, w)
    w_frames = int(model.window if window is None else window)
    if w_frames < 1:
        raise DeployError(f"window must be >= 1, got {w_frames}")
    target = w_frames - 1 if model.causal else w_frames // 2
    paths = export_paths(out_dir)
    paths.out_dir.mkdir(parents=True, exist_ok=True)
    paths.meta.unlink(missing_ok=True)  # a stale export.json would vouch for half-written graphs

    was_training = model.training
    model.eval()
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")  # graphs trace on the model's device
    try:
        frame = torch.zeros(1, 3, h, w, device=device)
        with torch.no_grad():
            feature = model.encode(frame)  # (1, C, h', w'), or one such map per scale (multi-scale models)
        multi = not isinstance(feature, torch.Tensor)
        feats = list(feature) if multi else [feature]
        shapes = [(1, *(int(s) for s in f.shape[1:])) for f in feats]  # (1, C_i, h_i, w_i)
        examples = tuple(torch.zeros(1, c, w_frames, fh, fw, device=device) for _, c, fh, fw in shapes)  # (1,C,T,..)
        feat_names = [f"feature{i}" for i in range(len(feats))] if multi else ["feature"]
        win_names = [f"features{i}" for i in range(len(feats))] if multi else ["features"]
        _export_graphs(_EncoderGraph(model).eval(), (frame,), paths.encoder, ["frame"], feat_names, opset)
        _export_graphs(_DecoderGraph(model, out_hw, target, multi).eval(), examples, paths.decoder, win_names,
                       ["logits"], opset)
    finally:
        model.train(was_training)
    k = int(model.num_classes)
    for i, shape in enumerate(shapes):
        _set_output_shape(paths.encoder, shape, index=i)
    _set_output_shape(paths.decoder, (1, k, int(out_hw[0]), int(out_hw[1])))
    for p in (paths.encoder, paths.decoder):
        onnx.checker.check_model(str(p))

    meta = _build_meta(model, opset=opset, img_size=(h, w), out_hw=out_hw, feature_shape=shapes[0],
                       class_names=class_names, palette=palette, extra=extra, window=w_frames, target=target)
    if multi:  # schema 2: one feature map per scale
        meta["schema_version"] = MULTI_SCHEMA_VERSION
        meta["scales"] = [int(s) for s in model.scales]
        io = meta["io"]
        io["encoder"] = {"input": io["encoder"]["input"],
                         "outputs": [{"name": n, "shape": list(sh), "stride": int(st)}
                                     for n, sh, st in zip(feat_names, shapes, model.scales, strict=True)]}
        io["decoder"] = {"inputs": [{"name": n, "shape": [1, c, w_frames, fh, fw], "order": "oldest first"}
                                    for n, (_, c, fh, fw) in zip(win_names, shapes, strict=True)],
                         "output": io["decoder"]["output"]}
    write_export_meta(paths.out_dir, meta)
    logger.info("exported %s and %s (opset %d, input %dx%d, window %d %s)", paths.encoder, paths.decoder, opset, h,
                w, w_frames, "causal" if model.causal else "centred")
    return paths


def _export_graphs(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, input_names: Sequence[str],
                   output_names: Sequence[str], opset: int) -> None:
    """Trace ``module(*inputs)`` into ``path`` (static shapes), written atomically."""
    def write(tmp: str) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            # the exporter's notes (legacy exporter, traced Python booleans on fixed shapes, strided-slice folding)
            # describe fixed-shape tracing, which is what we want here; parity_check is the real test
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
            torch.onnx.export(module, inputs, tmp, dynamo=False, opset_version=opset,
                              input_names=list(input_names), output_names=list(output_names),
                              do_constant_folding=True)

    atomic_save(path, write)


def _set_output_shape(path: Path, shape: Sequence[int], index: int = 0) -> None:
    """Record output ``index``'s static shape in the graph: the tracer leaves the decoder's upsampled output symbolic
    (its size is computed from the input), and consumers (onnxruntime's memory planner, users reading the graph)
    benefit from the known dims."""
    import onnx

    graph_model = onnx.load(str(path))
    dims = graph_model.graph.output[index].type.tensor_type.shape.dim
    if [d.dim_value for d in dims] == list(shape):
        return
    del dims[:]
    for size in shape:
        dims.add().dim_value = int(size)
    atomic_save(path, lambda tmp: onnx.save(graph_model, tmp))


def _build_meta(model: nn.Module, *, opset: int, img_size: tuple[int, int], out_hw: Sequence[int],
                feature_shape: tuple[int, int, int, int], class_names: Sequence[str] | None,
                palette: np.ndarray | Sequence[Sequence[int]] | None, extra: dict[str, Any] | None, window: int,
                target: int) -> dict[str, Any]:
    k = int(model.num_classes)
    _, c, fh, fw = feature_shape
    io = {
        "encoder": {"input": {"name": "frame", "shape": [1, 3, *img_size]},
                    "output": {"name": "feature", "shape": [1, c, fh, fw]}},
        "decoder": {"input": {"name": "features", "shape": [1, c, window, fh, fw], "order": "oldest first"},
                    "output": {"name": "logits", "shape": [1, k, int(out_hw[0]), int(out_hw[1])], "frame": "target"}},
    }
    rule = ("edge_rule", "the first frame's feature fills the window at a video start; centred windows repeat the "
                         "last frame's feature at the end (flush)")
    return export_meta(schema_version=EXPORT_SCHEMA_VERSION, kind=STREAM_EXPORT_KIND,
                       files={"encoder": ENCODER_FILE, "decoder": DECODER_FILE}, opset=opset, img_size=img_size,
                       out_hw=out_hw, window=window, causal=bool(model.causal), target_index=target,
                       labels=label_meta(k, class_names, palette), io=io, rule=rule, extra=extra)


# ---------------------------------------------------------------------------------- export.json: writer and reader


def export_meta(*, schema_version: int, kind: str, files: dict[str, Any], opset: int, img_size: Sequence[int],
                out_hw: Sequence[int], window: int, causal: bool, target_index: int | None,
                labels: tuple[list[str], list[list[int]] | None], io: dict[str, Any], rule: tuple[str, str],
                extra: dict[str, Any] | None) -> dict[str, Any]:
    """The ``export.json`` of any export directory (``vidnas-stream``: a window model's graphs, this module;
    ``vidnas-frame``: an arch2 or dynamic-cell model's, ``vidnas.export.frame_models``), fields in file order.

    Args:
        schema_version: the layout's version. kind: ``vidnas-stream`` or ``vidnas-frame``.
        files: the fields naming the graphs (``encoder`` and ``decoder``; ``model_kind`` and ``graphs``).
        opset: the graphs' ONNX opset.
        img_size: (H, W) of the frames. out_hw: (H_out, W_out) of the logits.
        window: frames per decoded window (1 for frame models). causal: the mode.
        target_index: the emitted frame's index in a window (None: not recorded; frame models, whose lag is 0).
        labels: (class names, palette) from ``label_meta``.
        io: the graphs' inputs and outputs.
        rule: (field, text) of the streaming rule (``edge_rule``, ``stream_rule``).
        extra: more JSON-able fields, last (e.g. the checkpoint path).
    """
    import onnx
    import onnxruntime

    names, pal = labels
    target = window - 1 if target_index is None else target_index
    return {
        "schema_version": schema_version,
        "kind": kind,
        **files,
        "opset": opset,
        "exporter": "torch.onnx.export(dynamo=False)",
        "versions": {"vidnas": vidnas.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "input_size": [int(img_size[0]), int(img_size[1])],
        "output_size": [int(out_hw[0]), int(out_hw[1])],
        "window": window,
        "causal": causal,
        **({} if target_index is None else {"target_index": target_index}),
        "lag": window - 1 - target,
        "num_classes": len(names),
        "class_names": names,
        "palette": pal,
        "normalization": {
            "layout": "NCHW", "color": "RGB", "dtype": "float32", "scale": 1.0 / 255.0,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "formula": "(rgb_uint8 / 255 - mean) / std",
            "resize": "bilinear, antialias, align_corners=False (torch.nn.functional.interpolate) to input_size",
        },
        "io": io,
        rule[0]: rule[1],
        **(extra or {}),
    }


def write_export_meta(out_dir: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``out_dir/export.json`` atomically (last, after the graphs it vouches for); returns its path."""
    path = Path(out_dir) / META_FILE
    atomic_save_json(path, meta)
    return path


def export_kind(out_dir: str | Path) -> str | None:
    """The ``kind`` of ``out_dir/export.json`` (``vidnas-stream``, ``vidnas-frame``); None when absent or
    unreadable."""
    try:
        return json.loads((Path(out_dir) / META_FILE).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def read_meta(out_dir: str | Path, *, versions: Sequence[int], required: Sequence[str],
              graphs: Callable[[dict[str, Any]], Iterable[str]], kind: str | None = None,
              kind_name: str = "") -> dict[str, Any]:
    """Read and check ``out_dir/export.json``: its kind (when ``kind`` is given; ``kind_name`` names it in the
    message), schema version, ``required`` fields and the graph files ``graphs(meta)`` lists.

    Raises:
        DeployError: missing or invalid file, another kind, an unknown schema version, a missing field or graph (the
            message names the file).
    """
    d = Path(out_dir)
    path = d / META_FILE
    if not path.is_file():
        raise DeployError(f"not a vidnas ONNX export (no {META_FILE}): {d}")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DeployError(f"cannot read {path}: {e}") from e
    got = meta.get("kind") if isinstance(meta, dict) else None
    if kind is not None and got != kind:
        raise DeployError(f"{path}: not a {kind_name} export (kind {got!r})")
    version = meta.get("schema_version") if isinstance(meta, dict) else None
    if version not in versions:
        raise DeployError(f"{path}: unsupported schema_version {version!r} (this reader understands "
                          f"{' and '.join(str(v) for v in versions)})")
    for key in required:
        if key not in meta:
            raise DeployError(f"{path}: field {key!r} is missing")
    for name in graphs(meta):
        if not (d / name).is_file():
            raise DeployError(f"{d / name} is missing (listed in {path})")
    return meta


def read_export_meta(out_dir: str | Path) -> dict[str, Any]:
    """Read and check ``export.json`` of a window model's export directory (``read_meta``).

    Raises:
        DeployError: missing or invalid file, unknown schema version, missing graph file (the message names it).
    """
    return read_meta(out_dir, versions=(EXPORT_SCHEMA_VERSION, MULTI_SCHEMA_VERSION),
                     required=("window", "causal", "target_index", "num_classes", "input_size", "io"),
                     graphs=lambda meta: (meta.get("encoder", ENCODER_FILE), meta.get("decoder", DECODER_FILE)))
