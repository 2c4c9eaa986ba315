"""The runners ``vidnas predict`` drives and the onnxruntime session options of deployment.

``load_runner`` gives a ``Streamer`` (``vidnas.models.streaming``, numpy in and out, batch 1) that also describes its
model (``input_size``, ``num_classes``, ``class_names``, ``palette``): ``TorchRunner`` (``model.stream()`` of any
model kind, eager PyTorch) or one of the streamers of ``vidnas.export.ort_streamers`` (``OrtStreamer``,
``OrtStepStreamer`` for causal exports with the incremental graphs, ``FrameOrtStreamer`` for arch2 / cell exports)
running the export in onnxruntime or OpenVINO, exporting the checkpoint first when asked. ``export_models`` exports
the benchmark's models once and ``open_streamers`` opens streamers of either runtime on those exports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidnas.export.exporter import DEFAULT_OPSET, DeployError, export_onnx, read_export_meta
from vidnas.export.frame_models import export_frame_onnx, is_frame_export, is_frame_model
from vidnas.export.ort_streamers import GRAPH_RUNTIMES, FrameOrtStreamer, OrtStepStreamer, OrtStreamer, require_openvino
from vidnas.export.stepgraph import export_step_graphs, has_step_graphs
from vidnas.models import LoadedModel, Streamer, incremental_support, load_model
from vidnas.models.fastpath import use_channels_last
from vidnas.models.streaming import key_interval_refusal
from vidnas.precision import autocast

__all__ = [
    "RUNTIMES",
    "TorchRunner",
    "load_runner",
    "export_models",
    "open_streamers",
    "quiet_session_options",
    "default_session_options",
    "ORT_OPTIONS_NOTE",
]

logger = logging.getLogger(__name__)

RUNTIMES = ("torch", *GRAPH_RUNTIMES)  # torch, onnxruntime, openvino


class TorchRunner:
    """``model.stream()`` of any model kind as a numpy ``Streamer`` (batch 1; eager PyTorch on the model's device),
    describing its model (``input_size``, ``num_classes``, ``class_names``, ``palette``) as the onnxruntime
    streamers do.

    Args:
        loaded: a model from ``vidnas.models.load_model``.
        key_interval: dynamic-cell models: re-run the static network every ``key_interval`` frames (None: only on
            a video's first frame); refused (ValueError) for other models.
        amp: inference precision (``vidnas.precision.AMP_MODES``); the model runs on the device it was loaded on.
        incremental: ``model.stream``'s option: None = one decoder step per frame for causal window models, False =
            the window decode (the paper's protocol), True = incremental or an error.
        channels_last: run a CNN encoder in the channels-last memory format (``vidnas.models.fastpath``; the
            default, measured faster on this CPU); a Swin encoder is left alone.
    """

    runtime = "torch"

    def __init__(self, loaded: LoadedModel, *, key_interval: int | None = None, amp: str = "none",
                 incremental: bool | None = None, channels_last: bool = True) -> None:
        self.loaded = loaded
        model = loaded.model
        self.channels_last = use_channels_last(model, channels_last) if channels_last else False
        self._streamer = model.stream(batch_size=1, key_interval=key_interval, incremental=incremental)
        self.protocol = self._streamer.protocol
        param = next(iter(model.parameters()), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self._autocast = autocast(self.device, amp)  # reentrant: one context object serves every push
        self.amp = amp
        self.input_size = loaded.img_size
        self.window = int(self._streamer.window)
        self.causal = bool(model.causal)
        self.lag = self._streamer.lag
        self.num_classes = int(model.num_classes)
        self.class_names = loaded.class_names
        self.palette: np.ndarray | None = loaded.palette

    @property
    def pending(self) -> int:
        """Frames pushed whose logits have not been returned yet."""
        return self._streamer.pending

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        """Add one frame (1, 3, H, W) float32; returns the (1, K, H, W) float32 logits of the frame now complete, or
        None."""
        with self._autocast:
            out = self._streamer.push(torch.from_numpy(frame).to(self.device, non_blocking=True))
        return None if out is None else out.float().cpu().numpy()

    def flush(self) -> list[np.ndarray]:
        """End of a video: the pending frames' logits in frame order, then ``reset()``."""
        with self._autocast:
            return [t.float().cpu().numpy() for t in self._streamer.flush()]

    def reset(self) -> None:
        """Forget every frame (start of a new video)."""
        self._streamer.reset()


def load_runner(
    checkpoint: str | Path | None,
    *,
    runtime: str = "torch",
    causal: bool | None = None,
    export_dir: str | Path | None = None,
    intra_op_threads: int | None = None,
    opset: int | None = None,
    key_interval: int | None = None,
    device: str = "cpu",
    amp: str = "none",
    incremental: bool | None = None,
    channels_last: bool = True,
) -> Streamer:
    """A streamer for ``predict_video`` (a ``TorchRunner``, or a streamer of an export in onnxruntime or OpenVINO,
    describing its model).

    Args:
        checkpoint: a model checkpoint (``load_model``); may be None for ``onnxruntime`` / ``openvino`` with an
            existing ``export_dir``.
        runtime: ``torch`` (eager), ``onnxruntime`` or ``openvino`` (the same ONNX export; ``RUNTIMES``).
        causal: temporal mode override (None = as trained / as exported).
        export_dir: onnxruntime / openvino: with a checkpoint, the model is exported there first; without one, an
            existing export (fp32 or INT8) is loaded from there.
        intra_op_threads: onnxruntime / openvino threads per graph run (None = the runtime's default).
        opset: ONNX opset for the export (None = ``DEFAULT_OPSET``).
        key_interval: dynamic-cell models (any runtime): re-run the static network every ``key_interval`` frames.
        device: torch runtime: where the model runs (frames and masks stay on the host).
        amp: torch runtime: inference precision (none, bf16, fp16); openvino: none (fp32) or bf16 (OpenVINO's
            ``INFERENCE_PRECISION_HINT``, on CPUs with native bf16); onnxruntime: none only.
        incremental: None = one decoder step per frame where the model has an incremental decode (causal window
            models; onnxruntime: an export with ``decoder_step.onnx``, which exporting a causal checkpoint writes),
            else the window decode; False = always the window decode; True = incremental or an error.
        channels_last: torch runtime: a CNN encoder runs channels-last (``vidnas.models.fastpath``).

    onnxruntime sessions get ``quiet_session_options(intra_op_threads)`` when a thread count is given (threads that
    sleep between runs: the pipeline's reader and writer threads need the other cores).

    Raises:
        DeployError: unknown runtime, openvino not installed, an amp mode the runtime does not run, missing export,
            temporal mode differing from an existing export.
        CheckpointError: a missing or unreadable checkpoint.
    """
    if runtime not in RUNTIMES:
        raise DeployError(f"unknown runtime {runtime!r}; valid runtimes: {', '.join(RUNTIMES)}")
    if runtime != "torch":
        precision = {"none": "fp32", "bf16": "bf16"}.get(amp) if runtime == "openvino" else "fp32"
        if precision is None or (runtime == "onnxruntime" and amp != "none"):
            raise DeployError(f"--amp {amp}: the {runtime} runtime runs "
                              f"{'fp32 or bf16 (--amp bf16)' if runtime == 'openvino' else 'the graphs as exported'}")
        if runtime == "openvino":
            require_openvino()  # the missing extra fails here, before any export
    if runtime == "torch":
        if checkpoint is None:
            raise DeployError("the torch runtime needs a checkpoint")
        loaded = load_model(checkpoint, causal=causal, device=device)
        try:
            return TorchRunner(loaded, key_interval=key_interval, amp=amp, incremental=incremental,
                               channels_last=channels_last)
        except ValueError as e:
            what = "--key-interval" if key_interval is not None else "incremental decoding"
            raise DeployError(f"{what}: {checkpoint}: {e}") from e
    if export_dir is None:
        raise DeployError(f"the {runtime} runtime needs an export directory")
    if checkpoint is not None:
        loaded = load_model(checkpoint, causal=causal)
        extra = {"checkpoint": str(checkpoint), "palette_source": loaded.palette_source}
        if is_frame_model(loaded.model):  # arch2 / dynamic cell: key (+ cell step) graphs
            export_frame_onnx(loaded.model, export_dir, img_size=loaded.img_size, opset=opset,
                              class_names=loaded.class_names, palette=loaded.palette, extra=extra)
        else:
            export_onnx(loaded.model, export_dir, img_size=loaded.img_size, opset=opset or DEFAULT_OPSET,
                        class_names=loaded.class_names, palette=loaded.palette, extra=extra)
            reason = incremental_support(loaded.model)
            if incremental and reason is not None:
                raise DeployError(f"incremental decoding: {checkpoint}: {reason}")
            if incremental is not False and reason is None:
                export_step_graphs(loaded.model, export_dir, opset=opset or DEFAULT_OPSET)
    options = quiet_session_options(intra_op_threads) if intra_op_threads and runtime == "onnxruntime" else None
    graph_options = {"intra_op_threads": intra_op_threads, "session_options": options, "runtime": runtime,
                     "inference_precision": precision}
    if is_frame_export(export_dir):
        if incremental:
            raise DeployError(f"{export_dir} holds a per-frame or dynamic-cell model (key / cell graphs): it has no "
                              "decoder window to decode incrementally")
        return FrameOrtStreamer(export_dir, key_interval=key_interval, **graph_options)
    if key_interval is not None:
        raise DeployError(key_interval_refusal(f"the window-model export {export_dir}"))
    meta = read_export_meta(export_dir)
    exported_causal = bool(meta["causal"])
    if causal is not None and causal != exported_causal:
        raise DeployError(f"{export_dir} was exported {'causal' if exported_causal else 'centred'}; re-export it "
                          f"with the other mode (vidnas export --{'causal' if causal else 'centred'})")
    if incremental and not has_step_graphs(meta):
        raise DeployError(f"{export_dir} has no incremental graphs (decoder_step.onnx): a centred model, or an "
                          "export made without them; re-export the checkpoint, or use the window decode")
    if incremental is not False and has_step_graphs(meta):
        return OrtStepStreamer(export_dir, **graph_options)
    return OrtStreamer(export_dir, **graph_options)


ORT_OPTIONS_NOTE = "onnxruntime: {threads} intra-op thread(s), spinning off, graph optimisation ORT_ENABLE_ALL"


def quiet_session_options(threads: int) -> Any:
    """onnxruntime session options for inference beside other work: ``threads`` intra-op threads whose pool sleeps
    between runs, every graph optimisation (``ORT_ENABLE_ALL``), sequential execution.

    onnxruntime's pool spin-waits after each run by default, stealing the cores from whatever runs next to it: the
    PyTorch candidates of an interleaved benchmark (measured: a tiny Swin pushed 30x slower), the reader and writer
    threads of ``vidnas predict``. Measured on EfficientNet-Lite0 + SP-TCN at 360x480 (``vidnas bench --compare
    ort_options``, docs/RESULTS.md §16).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def default_session_options(threads: int) -> Any:
    """onnxruntime's own defaults with ``threads`` intra-op threads: the baseline of ``--compare ort_options``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    return options


def export_models(models: Sequence[Any], out_dir: Path, *, incremental: bool = False,
                  prepare: Callable[[Any, Path], None] | None = None) -> dict[str, Path]:
    """Export every model (objects with ``name``, ``model``, ``size`` and ``stream_options``) into ``out_dir``:
    frame models as key (+ cell) graphs, window models as the window pair, with the incremental graphs when
    ``incremental`` and the model has an incremental decode. ``prepare(model, export_dir)`` runs on each finished
    export (``vidnas bench --precision int8`` quantises there).

    Returns:
        name -> its export directory (``out_dir / model<i>``).

    Raises:
        DeployError: a model that cannot be exported (the message names it).
    """
    out: dict[str, Path] = {}
    for i, bm in enumerate(models):
        path = Path(out_dir) / f"model{i}"
        try:
            if is_frame_model(bm.model):  # arch2 / dynamic cell: key (+ cell step) graphs, the same stream options
                export_frame_onnx(bm.model, path, img_size=bm.size)
            else:
                export_onnx(bm.model, path, img_size=bm.size, window=bm.stream_options.get("window"))
                if incremental and incremental_support(bm.model) is None:
                    export_step_graphs(bm.model, path)
            if prepare is not None:
                prepare(bm, path)
        except (DeployError, RuntimeError, ValueError) as e:
            raise DeployError(f"{bm.name}: ONNX export failed: {e}") from e
        out[bm.name] = path
    return out


def open_streamers(models: Sequence[Any], exports: dict[str, Path], threads: int, *, incremental: bool = False,
                   runtime: str = "onnxruntime", session_options: Any = None, inference_precision: str = "fp32",
                   ) -> tuple[dict[str, OrtStreamer | FrameOrtStreamer], dict[str, OrtStepStreamer]]:
    """Open ``runtime`` streamers on each model's export (``exports``, from ``export_models``), ``threads`` threads
    per graph run. onnxruntime: ``session_options``, default ``quiet_session_options(threads)``; openvino:
    ``inference_precision`` (fp32, bf16).

    Returns:
        (name -> ``OrtStreamer`` over the window pair or ``FrameOrtStreamer``, name -> ``OrtStepStreamer`` over the
        incremental graphs); the second is filled only with ``incremental``, for the exports that have them.

    Raises:
        DeployError: a graph the runtime cannot load or compile (the message names the model and the file).
    """
    if runtime == "onnxruntime":
        opts = {"session_options": session_options if session_options is not None else quiet_session_options(threads)}
    else:
        opts = {"intra_op_threads": threads, "inference_precision": inference_precision}
    out: dict[str, OrtStreamer | FrameOrtStreamer] = {}
    steps: dict[str, OrtStepStreamer] = {}
    for bm in models:
        path = exports[bm.name]
        try:
            if is_frame_export(path):
                out[bm.name] = FrameOrtStreamer(path, key_interval=bm.stream_options.get("key_interval"),
                                                runtime=runtime, **opts)
                continue
            out[bm.name] = OrtStreamer(path, runtime=runtime, **opts)
            if incremental and has_step_graphs(read_export_meta(path)):
                steps[bm.name] = OrtStepStreamer(path, runtime=runtime, **opts)
        except (DeployError, RuntimeError, ValueError) as e:  # a DeployError names the runtime and the file
            raise DeployError(f"{bm.name}: {e}" if isinstance(e, DeployError) else f"{bm.name}: {runtime}: {e}") from e
    return out, steps
