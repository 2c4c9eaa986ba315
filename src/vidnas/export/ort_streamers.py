"""onnxruntime and OpenVINO streaming of every export, behind the ``Streamer`` protocol (``vidnas.models.streaming``),
and the parity checks against PyTorch's ``model.stream()``.

Three streamers, numpy in and out, batch 1, one per kind of export directory. Each runs its ONNX graphs in one of the
``GRAPH_RUNTIMES`` (``runtime=``): ``onnxruntime`` (an ``InferenceSession`` per graph, the default) or ``openvino``
(the optional extra ``vidnas[openvino]``: ``openvino.Core().read_model`` of the same ``.onnx`` file, compiled for
its CPU plugin, with ``inference_precision`` fp32 or bf16, OpenVINO's ``INFERENCE_PRECISION_HINT``). Only the
"run a graph" call differs between the two (``_OrtGraph``, ``_OvGraph``); the streamers are the same classes:

* ``OrtStreamer`` (a window model's ``encoder.onnx`` + ``decoder.onnx``, ``vidnas.export.exporter``): the window
  decode. It keeps the ring buffer of the last ``w`` encoder features as one preallocated (1, C, w, h, w') float32
  array per feature map, oldest first, shifted in place on every push: memory is fixed however long the video. Edge
  rule (the data layer's): the first frame's feature fills the whole window; ``flush`` (centred windows) appends
  copies of the last feature until every pushed frame has its logits. A multi-scale export (one encoder output per
  scale, ``export.json`` schema 2) gets one ring buffer per scale; ``encode`` then returns a list of feature maps
  (coarse first) and ``decode`` takes a list of windows.
* ``OrtStepStreamer`` (a causal export's ``decoder_init.onnx`` + ``decoder_step.onnx``, ``vidnas.export.stepgraph``):
  one encoder run and one decoder step per push, the state carried in ``OrtValue``s.
* ``FrameOrtStreamer`` (an arch2 or dynamic-cell export's ``key.onnx`` [+ ``cell.onnx``],
  ``vidnas.export.frame_models``): the key graph on key frames (``vidnas.models.streaming.is_key_frame``, the rule
  of ``DynamicCellModel``), the cell graph on the others, fed the previous frame's ``dec`` and ``layer4``.

Each also describes its export (``input_size``, ``num_classes``, ``class_names``, ``palette``), which is what
``vidnas predict`` needs from a streamer. For benchmarks, ``OrtStreamer`` and ``OrtStepStreamer`` expose
``encode(frame)`` and ``decode(...)``: one graph run each.

Example:
    >>> streamer = OrtStreamer("export_dir")
    >>> for frame in frames:                      # (1, 3, H, W) float32, ImageNet-normalised
    ...     logits = streamer.push(frame)         # (1, K, H, W) or None (centred, before the target exists)
    >>> tail = streamer.flush()                   # the last frames of a centred stream; [] when causal

An INT8 export (``vidnas export --precision int8``: onnxruntime QDQ graphs) runs in both: OpenVINO compiles the
QuantizeLinear / DequantizeLinear pairs into its own INT8 kernels.

Parity: ``parity_check`` (the window pair; any export, dispatching on its kind), ``step_parity_check`` (the
incremental graphs) and ``frame_parity_check`` (frame models) push the same random frames through both runtimes and
return the largest logit difference.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidnas.export.exporter import (
    DeployError,
    export_paths,
    feature_specs,
    ort_session,
    parity_mode,
    read_export_meta,
    window_specs,
)
from vidnas.export.frame_models import is_frame_export, read_frame_meta
from vidnas.export.stepgraph import has_step_graphs
from vidnas.models.streaming import check_key_interval, is_key_frame, key_interval_refusal

__all__ = [
    "DEFAULT_PROVIDERS",
    "GRAPH_RUNTIMES",
    "INFERENCE_PRECISIONS",
    "OPENVINO_INSTALL",
    "openvino_available",
    "require_openvino",
    "openvino_bf16",
    "OrtStreamer",
    "OrtStepStreamer",
    "FrameOrtStreamer",
    "parity_check",
    "step_parity_check",
    "frame_parity_check",
    "logit_difference",
]

logger = logging.getLogger(__name__)

DEFAULT_PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)
STATE = ("dec", "layer4")  # a cell export's carried state; fed to cell.onnx as prev_dec, prev_layer4


def _session_options(ort: Any, intra_op_threads: int | None, session_options: Any, meta: dict[str, Any]) -> Any:
    """``session_options`` when given, else onnxruntime's defaults with ``intra_op_threads`` (None: its own count).

    An INT8 export (``meta``: its ``export.json``) logs errors only: onnxruntime's graph optimiser drops the constants
    of the activations it fuses into the QDQ pairs and warns about each one (60-odd lines for a tiny MobileNetV2)."""
    if session_options is None:
        session_options = ort.SessionOptions()
        if intra_op_threads is not None:
            session_options.intra_op_num_threads = int(intra_op_threads)
    if meta.get("precision") == "int8":
        session_options.log_severity_level = 3
    return session_options


def _parity_session_options() -> Any:
    """onnxruntime's defaults (its own thread count) with the thread pool sleeping between runs: a parity check
    alternates PyTorch and onnxruntime on every frame, and the default pool spin-waits after each run, taking the
    cores from the PyTorch step that follows (measured: a 60-frame ``step_parity_check`` of a tiny Swin + SP-TCN on
    2 busy cores: 3.9 s with spinning, 1.3 to 1.7 s without). Spinning changes no result."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


GRAPH_RUNTIMES: tuple[str, ...] = ("onnxruntime", "openvino")
INFERENCE_PRECISIONS: tuple[str, ...] = ("fp32", "bf16")  # OpenVINO's INFERENCE_PRECISION_HINT (f32, bf16)
OPENVINO_INSTALL = "pip install 'vidnas[openvino]'"


def require_openvino() -> Any:
    """The ``openvino`` module; ``DeployError`` naming the extra to install where it is missing."""
    try:
        import openvino
    except ImportError as e:
        raise DeployError(f"the openvino runtime needs the openvino package: {OPENVINO_INSTALL}") from e
    return openvino


def openvino_available() -> bool:
    """Whether the optional ``openvino`` package is importable."""
    try:
        require_openvino()
    except DeployError:
        return False
    return True


_OV_CORE: list[Any] = []  # one openvino.Core per process, made on first use


def _ov_core() -> Any:
    if not _OV_CORE:
        _OV_CORE.append(require_openvino().Core())
    return _OV_CORE[0]


def openvino_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 here (``BF16`` among its ``OPTIMIZATION_CAPABILITIES``: a CPU
    with AVX-512 BF16 or AMX). ``DeployError`` without openvino."""
    return "BF16" in _ov_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class _OrtGraph:
    """One onnxruntime ``InferenceSession``: ``run(names, feeds)`` numpy in and out; ``run_values`` keeps the outputs
    as ``OrtValue``s (a causal streamer's state, fed back to the next step without copies through numpy)."""

    def __init__(self, ort: Any, session: Any) -> None:
        self._ort = ort
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.providers = list(session.get_providers())

    def run(self, names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs ``names`` (None: all, in graph order) as numpy arrays."""
        return self.session.run(None if names is None else list(names), feeds)

    def run_values(self, names: Sequence[str], feeds: dict[str, Any]) -> list[Any]:
        """The outputs ``names`` as ``OrtValue``s; ``feeds`` are numpy arrays or earlier outputs of ``run_values``."""
        value = self._ort.OrtValue
        values = {k: v if isinstance(v, value) else value.ortvalue_from_numpy(v) for k, v in feeds.items()}
        return self.session.run_with_ort_values(list(names), values)

    @staticmethod
    def numpy(value: Any) -> np.ndarray:
        """An output of ``run_values`` as a numpy array."""
        return value.numpy()


class _OvGraph:
    """One OpenVINO compiled model and its infer request, with ``_OrtGraph``'s calls (numpy in and out: OpenVINO
    copies the outputs out of its buffers, so a returned state stays valid across runs)."""

    def __init__(self, compiled: Any, precision: str) -> None:
        self._request = compiled.create_infer_request()
        self.input_names = [p.get_any_name() for p in compiled.inputs]
        self.output_names = [p.get_any_name() for p in compiled.outputs]
        self.providers = [f"openvino CPU ({precision})"]

    def run(self, names: Sequence[str] | None, feeds: dict[str, Any]) -> list[np.ndarray]:
        """The outputs ``names`` (None: all, in graph order) as numpy arrays."""
        out = self._request.infer(feeds)
        return [out[n] for n in (self.output_names if names is None else names)]

    run_values = run

    @staticmethod
    def numpy(value: Any) -> np.ndarray:
        """An output of ``run_values`` (already a numpy array)."""
        return value


# compiles one graph in a child process: argv = path, INFERENCE_PRECISION_HINT
_COMPILE_PROBE = ("import sys, openvino as ov; c = ov.Core(); "
                  "c.compile_model(c.read_model(sys.argv[1]), 'CPU', {'INFERENCE_PRECISION_HINT': sys.argv[2]})")


def _probe_compile(path: Path, hint: str) -> None:
    """Compile ``path`` with OpenVINO in a child process first; ``DeployError`` naming the file when that fails.

    OpenVINO (2026.4) does not always raise on a QDQ graph it cannot take: on onnxruntime's INT8 Swin encoder (a
    dequantised bias on the attention's qkv Add) its CPU plugin dies with a segmentation fault, which would take
    ``vidnas predict`` or a whole ``vidnas bench`` down. INT8 graphs are therefore compiled once in a child first
    (about a second on a tiny model)."""
    res = subprocess.run([sys.executable, "-c", _COMPILE_PROBE, str(path), hint], capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        why = f"its compiler crashed (signal {-res.returncode})" if res.returncode < 0 else \
            (lines[-1].strip()[:300] if lines else f"exit status {res.returncode}")
        raise DeployError(f"openvino cannot compile {path}: {why}")


def _open_graphs(export_dir: Path, files: dict[str, str], meta: dict[str, Any], *, runtime: str,
                 providers: Sequence[str] | None, intra_op_threads: int | None, session_options: Any,
                 inference_precision: str) -> dict[str, Any]:
    """name -> ``_OrtGraph`` / ``_OvGraph`` of each ``export_dir / file``.

    onnxruntime: ``session_options`` when given, else its defaults with ``intra_op_threads`` (``_session_options``),
    on ``providers``. OpenVINO: the CPU plugin (an INT8 graph is compiled in a child process first:
    ``_probe_compile``), ``INFERENCE_NUM_THREADS`` = ``intra_op_threads`` (None: its own
    count), ``INFERENCE_PRECISION_HINT`` f32 or bf16 (set always: OpenVINO's own default is bf16 on CPUs that have
    it), ``PERFORMANCE_HINT`` LATENCY (one stream: batch-1 streaming), and no thread pinning
    (``ENABLE_CPU_PINNING`` off: pinning would also pin the calling thread, which PyTorch and the pipeline's reader
    share in an interleaved run).

    Raises:
        DeployError: an unknown runtime or precision, openvino missing, bf16 where the CPU has none, onnxruntime
            options given to OpenVINO, a graph the runtime cannot load (the message names the file).
    """
    if runtime not in GRAPH_RUNTIMES:
        raise DeployError(f"unknown graph runtime {runtime!r}; valid: {', '.join(GRAPH_RUNTIMES)}")
    if inference_precision not in INFERENCE_PRECISIONS:
        raise DeployError(f"unknown inference precision {inference_precision!r}; valid: "
                          f"{', '.join(INFERENCE_PRECISIONS)}")
    if runtime == "onnxruntime":
        if inference_precision != "fp32":
            raise DeployError("onnxruntime runs the graphs in their own precision: bf16 inference is OpenVINO's "
                              "(runtime openvino)")
        import onnxruntime as ort

        options = _session_options(ort, intra_op_threads, session_options, meta)
        provs = list(providers or DEFAULT_PROVIDERS)
        return {name: _OrtGraph(ort, ort_session(ort, export_dir / file, options, provs))
                for name, file in files.items()}
    if session_options is not None or providers:
        raise DeployError("session options and providers are onnxruntime's: the openvino runtime takes neither")
    core = _ov_core()
    if inference_precision == "bf16" and not openvino_bf16():
        raise DeployError("bf16 inference needs a CPU with AVX-512 BF16 or AMX; OpenVINO reports no BF16 here: use "
                          "fp32")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "bf16" if inference_precision == "bf16" else "f32",
                              "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
    if intra_op_threads is not None:
        config["INFERENCE_NUM_THREADS"] = int(intra_op_threads)
    int8 = set((meta.get("quantization") or {}).get("int8_graphs") or [])
    graphs = {}
    for name, file in files.items():
        path = export_dir / file
        if file in int8:
            _probe_compile(path, config["INFERENCE_PRECISION_HINT"])
        try:
            graphs[name] = _OvGraph(core.compile_model(core.read_model(str(path)), "CPU", config),
                                    inference_precision)
        except Exception as e:  # OpenVINO raises RuntimeError (and its own types) with multi-line messages
            raise DeployError(f"openvino cannot compile {path}: {' '.join(str(e).split())[:400]}") from e
    return graphs


class _OrtExportStreamer:
    """What the three streamers share: the runtime and its graphs, the export's description (from its
    ``export.json``), the check of a pushed frame and, for the causal ones, the end of a video.

    Attributes:
        runtime: ``onnxruntime`` or ``openvino``. inference_precision: ``fp32`` or ``bf16`` (OpenVINO's hint).
        input_size: (H, W) of frames. num_classes: K. class_names: K names ([] when the export names none). palette:
            (K, 3) uint8, None when the export records none.
    """

    runtime = "onnxruntime"
    inference_precision = "fp32"
    input_size: tuple[int, int]
    export_dir: Path
    meta: dict[str, Any]
    _graphs: dict[str, Any]

    def _open(self, files: dict[str, str], *, runtime: str, providers: Sequence[str] | None,
              intra_op_threads: int | None, session_options: Any, inference_precision: str) -> dict[str, Any]:
        """Open ``files`` (name -> file in ``export_dir``) in ``runtime`` (``_open_graphs``) and keep them."""
        self._graphs = _open_graphs(self.export_dir, files, self.meta, runtime=runtime, providers=providers,
                                    intra_op_threads=intra_op_threads, session_options=session_options,
                                    inference_precision=inference_precision)
        self.runtime = runtime
        self.inference_precision = inference_precision
        return self._graphs

    @property
    def providers(self) -> list[str]:
        """What runs the graphs: onnxruntime's execution providers, or OpenVINO's CPU plugin and its precision."""
        return list(next(iter(self._graphs.values())).providers)

    def _describe(self, meta: dict[str, Any]) -> None:
        self.input_size = (int(meta["input_size"][0]), int(meta["input_size"][1]))
        self.num_classes = int(meta["num_classes"])
        self.class_names: list[str] = list(meta.get("class_names") or [])
        pal = meta.get("palette")
        self.palette: np.ndarray | None = None if pal is None else np.asarray(pal, dtype=np.uint8)

    def _check_frame(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` as a contiguous float32 array; ValueError unless it is (1, 3, *input_size)."""
        frame = np.ascontiguousarray(frame, dtype=np.float32)
        want = (1, 3, *self.input_size)
        if frame.shape != want:
            raise ValueError(f"expected a frame of shape {want} (batch 1, ImageNet-normalised RGB), got {frame.shape}")
        return frame

    def reset(self) -> None:
        raise NotImplementedError

    def flush(self) -> list[np.ndarray]:
        """End of a video: nothing is pending (causal streamers; the window streamer overrides it); resets and
        returns []."""
        self.reset()
        return []


class OrtStreamer(_OrtExportStreamer):
    """Frame-by-frame inference with onnxruntime: one encoder run per push, one decoder run per window.

    Args:
        export_dir: a directory written by ``export_onnx`` (``encoder.onnx``, ``decoder.onnx``, ``export.json``).
        providers: onnxruntime execution providers, in preference order (default CPU).
        intra_op_threads: threads per graph run; None = the runtime's default (one per physical core).
        session_options: a prepared ``onnxruntime.SessionOptions`` (overrides ``intra_op_threads``).
        runtime: ``onnxruntime`` or ``openvino`` (``GRAPH_RUNTIMES``; module docstring).
        inference_precision: openvino: ``fp32`` or ``bf16``.

    Attributes:
        runtime: ``"onnxruntime"`` or ``"openvino"``.
        meta: the parsed ``export.json``.
        window: w. causal: the mode. target_index: index of the emitted frame in a window. lag: pushes between a
        frame and its logits (0 causal). input_size, num_classes, class_names, palette: from the export.
        feature_shape: (1, C, h, w) of one encoder output (the first scale's of a multi-scale export);
        feature_shapes: all of them. multi: a multi-scale export.

    Raises:
        DeployError: not an export directory, or a graph the runtime cannot load (the message names the file).
    """

    protocol = "window"

    def __init__(
        self,
        export_dir: str | Path,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        session_options: Any = None,
        runtime: str = "onnxruntime",
        inference_precision: str = "fp32",
    ) -> None:
        self.export_dir = Path(export_dir)
        self.meta = read_export_meta(self.export_dir)
        paths = export_paths(self.export_dir)
        graphs = self._open({"encoder": self.meta.get("encoder", paths.encoder.name),
                             "decoder": self.meta.get("decoder", paths.decoder.name)}, runtime=runtime,
                            providers=providers, intra_op_threads=intra_op_threads, session_options=session_options,
                            inference_precision=inference_precision)
        self._encoder, self._decoder = graphs["encoder"], graphs["decoder"]
        io = self.meta["io"]
        self._in_name = io["encoder"]["input"]["name"]
        feats, windows = feature_specs(self.meta), window_specs(self.meta)
        self._feat_names = [str(f["name"]) for f in feats]
        self._dec_names = [str(f["name"]) for f in windows]
        self.multi = len(feats) > 1
        self.window = int(self.meta["window"])
        self.causal = bool(self.meta["causal"])
        self.target_index = int(self.meta["target_index"])
        self.lag = self.window - 1 - self.target_index
        self._describe(self.meta)
        self.feature_shapes = [tuple(int(s) for s in f["shape"]) for f in feats]  # (1, C_i, h_i, w_i) each
        self.feature_shape = self.feature_shapes[0]
        # one (1, C, T, h, w) ring buffer per feature map, oldest first
        self._buffers = [np.zeros((1, c, self.window, fh, fw), dtype=np.float32)
                         for _, c, fh, fw in self.feature_shapes]
        self._pushed = 0
        self._appended = 0  # pushes plus the edge copies appended by flush()
        self._emitted = 0

    @property
    def pending(self) -> int:
        """Frames pushed whose logits have not been returned yet."""
        return self._pushed - self._emitted

    @property
    def buffer_nbytes(self) -> int:
        """Bytes held by the ring buffer(s) (constant: window x one feature map, per scale)."""
        return int(sum(b.nbytes for b in self._buffers))

    def reset(self) -> None:
        """Forget all frames (start of a new video)."""
        self._pushed = 0
        self._appended = 0
        self._emitted = 0

    def encode(self, frame: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Run ``encoder.onnx``: (1, 3, H, W) float32 -> (1, C, h, w) (a multi-scale export: a list, one per scale).
        Does not touch the buffer."""
        outs = self._encoder.run(self._feat_names, {self._in_name: self._check_frame(frame)})
        return outs if self.multi else outs[0]

    def decode(self, window: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Run ``decoder.onnx``: (1, C, w, h, w') float32, oldest first (a multi-scale export: a list, one per
        scale) -> (1, K, H, W) target-frame logits."""
        windows = list(window) if self.multi else [window]
        if len(windows) != len(self._dec_names):
            raise ValueError(f"expected {len(self._dec_names)} windows (one per scale), got {len(windows)}")
        feeds = {n: np.ascontiguousarray(w, dtype=np.float32) for n, w in zip(self._dec_names, windows, strict=True)}
        return self._decoder.run(None, feeds)[0]

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        """Add one frame.

        Args:
            frame: (1, 3, H, W) float32, ImageNet-normalised RGB at ``input_size``.

        Returns:
            (1, K, H, W) logits of the frame now complete (the one just pushed when causal; ``lag`` pushes earlier
            when centred), or None while a centred window's target frame has not arrived.
        """
        feature = self.encode(frame)  # (1, C, h, w)
        self._pushed += 1
        return self._advance(feature)

    def flush(self) -> list[np.ndarray]:
        """End of the video: emit every pending frame (repeating the last feature), then ``reset()``.

        Returns:
            The pending frames' logits in frame order, each (1, K, H, W); [] for causal streams.
        """
        out: list[np.ndarray] = []
        while self.pending > 0:
            last = [b[:, :, -1].copy() for b in self._buffers]
            logits = self._advance(last if self.multi else last[0])
            if logits is not None:
                out.append(logits)
        self.reset()
        return out

    def _advance(self, feature: np.ndarray | Sequence[np.ndarray]) -> np.ndarray | None:
        for buf, feat in zip(self._buffers, list(feature) if self.multi else [feature], strict=True):
            if self._appended == 0:
                buf[...] = feat[:, :, None]  # edge repetition at the video start
            else:
                buf[:, :, :-1] = buf[:, :, 1:]  # drop the oldest (numpy handles the overlap)
                buf[:, :, -1] = feat
        self._appended += 1
        # the newest entry is append number _appended - 1, so the window's target frame is `lag` appends earlier
        if self._appended - 1 - self.lag < 0:
            return None
        self._emitted += 1
        return self.decode(self._buffers if self.multi else self._buffers[0])

    def __repr__(self) -> str:
        return (f"OrtStreamer({str(self.export_dir)!r}, input={self.input_size}, window={self.window}, "
                f"{'causal' if self.causal else 'centred'}, {self.runtime}, providers={self.providers})")


class OrtStepStreamer(_OrtExportStreamer):
    """Frame-by-frame inference with onnxruntime and the incremental graphs: one encoder run and one decoder step
    per push (numpy in and out, batch 1, causal). A multi-scale export's ``encode`` returns one array per scale and
    ``decode`` takes that list.

    With onnxruntime the state lives in ``OrtValue``s passed from one step to the next without copies through
    numpy; OpenVINO returns it as numpy arrays.

    Args:
        export_dir: an export directory with the incremental graphs (``export_step_graphs``).
        providers: onnxruntime execution providers (default CPU).
        intra_op_threads: threads per graph run; None = the runtime's default.
        session_options: a prepared ``onnxruntime.SessionOptions`` (overrides ``intra_op_threads``).
        runtime: ``onnxruntime`` or ``openvino``.
        inference_precision: openvino: ``fp32`` or ``bf16``.

    Raises:
        DeployError: not an export directory, no incremental graphs, or a graph the runtime cannot load.
    """

    protocol = "incremental"
    causal = True
    lag = 0
    target_index: int

    def __init__(self, export_dir: str | Path, *, providers: Sequence[str] | None = None,
                 intra_op_threads: int | None = None, session_options: Any = None, runtime: str = "onnxruntime",
                 inference_precision: str = "fp32") -> None:
        self.export_dir = Path(export_dir)
        self.meta = read_export_meta(self.export_dir)
        if not has_step_graphs(self.meta):
            raise DeployError(f"{self.export_dir} has no incremental graphs (a centred model, or an export made "
                              "before they existed): use OrtStreamer, or re-export the checkpoint")
        inc = self.meta["incremental"]
        graphs = self._open({"encoder": self.meta["encoder"], "init": inc["init"], "step": inc["step"]},
                            runtime=runtime, providers=providers, intra_op_threads=intra_op_threads,
                            session_options=session_options, inference_precision=inference_precision)
        self._encoder, self._init, self._step = graphs["encoder"], graphs["init"], graphs["step"]
        self._in_name = self.meta["io"]["encoder"]["input"]["name"]
        self._state_in = [s["input"] for s in inc["states"]]
        self._state_out = [s["output"] for s in inc["states"]]
        self._init_out = ["logits", *self._state_in]
        self._step_out = ["logits", *self._state_out]
        self.window = int(self.meta["window"])
        self.target_index = self.window - 1
        self._describe(self.meta)
        specs = [inc["feature"]] if "feature" in inc else list(inc["features"])
        self.feature_names = [str(f["name"]) for f in specs]
        self.feature_shapes = [tuple(int(s) for s in f["shape"]) for f in specs]  # (1, C_i, h_i, w_i) each
        self.feature_shape = self.feature_shapes[0]
        self.multi = len(specs) > 1
        self.state_nbytes = int(inc["state_bytes"])
        self._state: list[Any] = []

    @property
    def pending(self) -> int:
        """Frames pushed whose logits have not been returned: always 0 (causal)."""
        return 0

    def reset(self) -> None:
        """Forget the state (start of a new video)."""
        self._state = []

    def encode(self, frame: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Run ``encoder.onnx``: (1, 3, H, W) float32 -> (1, C, h, w) (a multi-scale export: a list, one per
        scale)."""
        outs = self._encoder.run(self.feature_names, {self._in_name: self._check_frame(frame)})
        return outs if self.multi else outs[0]

    def decode(self, feature: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """One decoder step on a (1, C, h, w) feature, or a multi-scale export's list of them (``decoder_init`` at a
        video start), updating the state; returns the (1, K, H, W) logits of that frame."""
        arrays = list(feature) if self.multi else [feature]
        if len(arrays) != len(self.feature_names):
            raise ValueError(f"expected {len(self.feature_names)} feature maps, got {len(arrays)}")
        feats = {n: np.ascontiguousarray(a, dtype=np.float32) for n, a in zip(self.feature_names, arrays, strict=True)}
        if not self._state:
            outs = self._init.run_values(self._init_out, feats)
        else:
            feeds = {**feats, **dict(zip(self._state_in, self._state, strict=True))}
            outs = self._step.run_values(self._step_out, feeds)
        self._state = list(outs[1:])
        return self._step.numpy(outs[0])

    def push(self, frame: np.ndarray) -> np.ndarray:
        """Add one frame (1, 3, H, W) float32, ImageNet-normalised; returns its (1, K, H, W) logits."""
        return self.decode(self.encode(frame))

    def __repr__(self) -> str:
        return (f"OrtStepStreamer({str(self.export_dir)!r}, input={self.input_size}, window={self.window}, "
                f"{self.runtime}, providers={self.providers})")


class FrameOrtStreamer(_OrtExportStreamer):
    """onnxruntime streaming of a frame-model export (arch2, dynamic cell; numpy in and out, batch 1).

    Args:
        export_dir: a directory written by ``export_frame_onnx``.
        key_interval: dynamic-cell exports: also run ``key.onnx`` on every ``key_interval``-th frame (None: only on a
            video's first frame); an arch2 export refuses it.
        providers: onnxruntime execution providers (default CPU).
        intra_op_threads: threads per graph run (None: the runtime's default).
        session_options: a prepared ``onnxruntime.SessionOptions`` (overrides ``intra_op_threads``).
        runtime: ``onnxruntime`` or ``openvino``.
        inference_precision: openvino: ``fp32`` or ``bf16``.

    Raises:
        DeployError: not a frame export, a graph the runtime cannot load, or a key interval it cannot take.
    """

    protocol = "frame"
    window = 1
    causal = True
    lag = 0

    def __init__(self, export_dir: str | Path, *, key_interval: int | None = None,
                 providers: Sequence[str] | None = None, intra_op_threads: int | None = None,
                 session_options: Any = None, runtime: str = "onnxruntime", inference_precision: str = "fp32") -> None:
        self.export_dir = Path(export_dir)
        self.meta = read_frame_meta(self.export_dir)
        graphs = self.meta["graphs"]
        try:
            self.key_interval = check_key_interval(key_interval)
        except ValueError as e:
            raise DeployError(str(e)) from e
        if key_interval is not None and "cell" not in graphs:
            raise DeployError(key_interval_refusal("this arch2 export"))
        self.sessions = self._open(dict(graphs), runtime=runtime, providers=providers,
                                   intra_op_threads=intra_op_threads, session_options=session_options,
                                   inference_precision=inference_precision)
        self._inputs = {name: set(g.input_names) for name, g in self.sessions.items()}
        self._outputs = {name: list(g.output_names) for name, g in self.sessions.items()}
        self._describe(self.meta)
        self._state: dict[str, np.ndarray] | None = None
        self._t = 0

    @property
    def pending(self) -> int:
        """Frames pushed whose logits have not been returned: always 0."""
        return 0

    def reset(self) -> None:
        """Forget the carried state (start of a new video)."""
        self._state = None
        self._t = 0

    def push(self, frame: np.ndarray) -> np.ndarray:
        """Add one frame (1, 3, H, W) float32, ImageNet-normalised; returns its logits (1, K, H_out, W_out)."""
        frame = self._check_frame(frame)
        name = "key" if "cell" not in self.sessions or is_key_frame(self._t, self.key_interval) else "cell"
        feeds = {"frame": frame}
        if name == "cell":
            assert self._state is not None
            feeds.update(prev_dec=self._state["dec"], prev_layer4=self._state.get("layer4"))
        outs = dict(zip(self._outputs[name], self.sessions[name].run(
            None, {k: v for k, v in feeds.items() if k in self._inputs[name]}), strict=True))
        if "cell" in self.sessions:
            self._state = {k: outs[k] for k in STATE if k in outs}  # a truncated cell graph has no layer4
        self._t += 1
        return outs["logits"]

    def __repr__(self) -> str:
        return (f"FrameOrtStreamer({str(self.export_dir)!r}, {self.meta.get('model_kind')}, input={self.input_size}, "
                f"key_interval={self.key_interval}, {self.runtime}, providers={self.providers})")


# ------------------------------------------------------------------------------------------- parity with PyTorch


def logit_difference(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a - b|`` of one frame's PyTorch and onnxruntime logits.

    Raises:
        DeployError: a logit of either side is NaN or infinite (NaN against NaN would otherwise compare as no
            difference: a diverged model must fail its parity check).
    """
    bad = [side for side, x in (("PyTorch", a), ("onnxruntime", b)) if not np.isfinite(x).all()]
    if bad:
        raise DeployError(f"{' and '.join(bad)} logits are not finite (NaN or inf): the model's weights diverged "
                          "or overflow; a model must give finite logits")
    return float(np.abs(a - b).max())


def parity_check(
    model: torch.nn.Module,
    export_dir: str | Path,
    *,
    frames: int = 8,
    seed: int = 0,
    providers: Sequence[str] | None = None,
) -> float:
    """Stream the same random frames through ``model.stream()`` and an ``OrtStreamer``; max |logit difference|.

    ``frames`` should exceed the window so the ring buffer wraps and (centred) ``flush`` runs; every emitted frame of
    both streams is compared, the edge repetition at both ends included. A frame-model export is checked by
    ``frame_parity_check``.

    Args:
        model: the exported ``VideoSegmenter`` (put in eval mode for the check, then restored).
        export_dir: its export directory.
        frames: number of frames pushed.
        seed: seed of the random (standard normal, i.e. normalised-space) frames.
        providers: onnxruntime execution providers.

    Returns:
        The largest absolute difference between PyTorch and onnxruntime logits.

    Raises:
        DeployError: the two streams emit a different number of frames or different shapes.
    """
    if is_frame_export(export_dir):  # arch2 / dynamic-cell export: vidnas.export.frame_models
        return frame_parity_check(model, export_dir, frames=frames, seed=seed, providers=providers)
    ort_stream = OrtStreamer(export_dir, providers=providers, session_options=_parity_session_options())
    h, w = ort_stream.input_size
    gen = torch.Generator().manual_seed(seed)
    outs_t: list[np.ndarray] = []
    outs_o: list[np.ndarray] = []
    with parity_mode(model) as device, torch.no_grad():
        # the window decode against the window graphs (decoder_step.onnx has its own check: step_parity_check)
        torch_stream = model.stream(batch_size=1, window=ort_stream.window, incremental=False)
        for _ in range(frames):
            x = torch.randn(1, 3, h, w, generator=gen)
            a = torch_stream.push(x.to(device))
            b = ort_stream.push(x.numpy())
            if (a is None) != (b is None):
                raise DeployError("PyTorch and onnxruntime streams emitted frames at different pushes")
            if a is not None and b is not None:
                outs_t.append(a.cpu().numpy())
                outs_o.append(b)
        outs_t.extend(t.cpu().numpy() for t in torch_stream.flush())
        outs_o.extend(ort_stream.flush())
    if len(outs_t) != len(outs_o) or len(outs_t) != frames:
        raise DeployError(f"PyTorch emitted {len(outs_t)} frames and onnxruntime {len(outs_o)} for {frames} pushed")
    diff = 0.0
    for a, b in zip(outs_t, outs_o, strict=True):
        if a.shape != b.shape:
            raise DeployError(f"logit shapes differ: PyTorch {a.shape}, onnxruntime {b.shape}")
        diff = max(diff, logit_difference(a, b))
    logger.info("parity over %d frames: max |torch - onnxruntime| = %.3g", frames, diff)
    return diff


def step_parity_check(model: nn.Module, export_dir: str | Path, *, frames: int = 60, seed: int = 0,
                      providers: Sequence[str] | None = None) -> float:
    """Stream random frames through PyTorch's incremental streamer and ``OrtStepStreamer``; max |logit difference|.

    Args:
        model: the exported causal ``VideoSegmenter`` (eval mode for the check, then restored).
        export_dir: its export directory, with the incremental graphs.
        frames: frames pushed from a video start (more than the window and the receptive field exercise the
            state's wrap-around).
        seed: seed of the standard-normal frames.
        providers: onnxruntime execution providers.

    Raises:
        DeployError: no incremental graphs, or the two streams disagree in shape.
    """
    ort_stream = OrtStepStreamer(export_dir, providers=providers, session_options=_parity_session_options())
    h, w = ort_stream.input_size
    gen = torch.Generator().manual_seed(seed)
    diff = 0.0
    with parity_mode(model) as device, torch.no_grad():
        torch_stream = model.stream(batch_size=1, window=ort_stream.window, incremental=True)
        for _ in range(frames):
            x = torch.randn(1, 3, h, w, generator=gen)
            a = torch_stream.push(x.to(device)).cpu().numpy()
            b = ort_stream.push(x.numpy())
            if a.shape != b.shape:
                raise DeployError(f"logit shapes differ: PyTorch {a.shape}, onnxruntime {b.shape}")
            diff = max(diff, logit_difference(a, b))
    logger.info("incremental parity over %d frames: max |torch - onnxruntime| = %.3g", frames, diff)
    return diff


def frame_parity_check(model: nn.Module, export_dir: str | Path, *, frames: int = 30, seed: int = 0,
                       key_interval: int | None = None, providers: Sequence[str] | None = None) -> float:
    """Stream the same random frames through ``model.stream()`` and a ``FrameOrtStreamer``; max |logit difference|.

    Args:
        model: the exported model (eval mode for the check, then restored).
        export_dir: its export directory.
        frames: frames pushed (every one compared: key frames and cell steps).
        seed: seed of the standard-normal (normalised-space) frames.
        key_interval: passed to both streamers.
        providers: onnxruntime execution providers.
    """
    ort_stream = FrameOrtStreamer(export_dir, key_interval=key_interval, providers=providers,
                                  session_options=_parity_session_options())
    h, w = ort_stream.input_size
    gen = torch.Generator().manual_seed(seed)
    diff = 0.0
    with parity_mode(model) as device, torch.no_grad():
        torch_stream = model.stream(batch_size=1, key_interval=key_interval)
        for _ in range(frames):
            x = torch.randn(1, 3, h, w, generator=gen)
            a, b = torch_stream.push(x.to(device)).cpu().numpy(), ort_stream.push(x.numpy())
            if a.shape != b.shape:
                raise DeployError(f"logit shapes differ: PyTorch {a.shape}, onnxruntime {b.shape}")
            diff = max(diff, logit_difference(a, b))
    logger.info("frame-model parity over %d frames (key interval %s): max |torch - onnxruntime| = %.3g", frames,
                key_interval, diff)
    return diff
