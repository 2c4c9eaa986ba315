"""The runners ``vidnas predict`` drives and the onnxruntime session options of deployment.

``load_runner`` gives a ``Streamer`` (``vidnas.models.streaming``, numpy in and out, batch 1) that also describes its
model (``input_size``, ``num_classes``, ``class_names``, ``palette``): ``TorchRunner`` (``model.stream()`` of any
model kind, eager PyTorch) or one of the onnxruntime streamers of ``vidnas.export.ort_streamers`` (``OrtStreamer``,
``OrtStepStreamer`` for causal exports with the incremental graphs, ``FrameOrtStreamer`` for arch2 / cell exports),
exporting the checkpoint first when asked. ``ort_streamers`` exports and opens the onnxruntime streamers of the
benchmark's models.
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
from vidnas.export.ort_streamers import FrameOrtStreamer, OrtStepStreamer, OrtStreamer
from vidnas.export.stepgraph import export_step_graphs, has_step_graphs
from vidnas.models import LoadedModel, Streamer, incremental_support, load_model
from vidnas.models.fastpath import use_channels_last
from vidnas.models.streaming import key_interval_refusal
from vidnas.precision import autocast

__all__ = [
    "RUNTIMES",
    "TorchRunner",
    "load_runner",
    "ort_streamers",
    "quiet_session_options",
    "default_session_options",
    "ORT_OPTIONS_NOTE",
]

logger = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnxruntime")


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
    """A streamer for ``predict_video`` (a ``TorchRunner`` or an onnxruntime streamer, describing its model).

    Args:
        checkpoint: a model checkpoint (``load_model``); may be None for ``onnxruntime`` with an existing
            ``export_dir``.
        runtime: ``torch`` (eager) or ``onnxruntime``.
        causal: temporal mode override (None = as trained / as exported).
        export_dir: onnxruntime only: with a checkpoint, the model is exported there first; without one, an existing
            export is loaded from there.
        intra_op_threads: onnxruntime threads per graph run (None = its default).
        opset: ONNX opset for the export (None = ``DEFAULT_OPSET``).
        key_interval: dynamic-cell models (either runtime): re-run the static network every ``key_interval`` frames.
        device: torch runtime: where the model runs (frames and masks stay on the host).
        amp: torch runtime: inference precision (none, bf16, fp16).
        incremental: None = one decoder step per frame where the model has an incremental decode (causal window
            models; onnxruntime: an export with ``decoder_step.onnx``, which exporting a causal checkpoint writes),
            else the window decode; False = always the window decode; True = incremental or an error.
        channels_last: torch runtime: a CNN encoder runs channels-last (``vidnas.models.fastpath``).

    onnxruntime sessions get ``quiet_session_options(intra_op_threads)`` when a thread count is given (threads that
    sleep between runs: the pipeline's reader and writer threads need the other cores).

    Raises:
        DeployError: unknown runtime, missing export, temporal mode differing from an existing export.
        CheckpointError: a missing or unreadable checkpoint.
    """
    if runtime not in RUNTIMES:
        raise DeployError(f"unknown runtime {runtime!r}; valid runtimes: {', '.join(RUNTIMES)}")
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
        raise DeployError("the onnxruntime runtime needs an export directory")
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
    options = quiet_session_options(intra_op_threads) if intra_op_threads else None
    if is_frame_export(export_dir):
        if incremental:
            raise DeployError(f"{export_dir} holds a per-frame or dynamic-cell model (key / cell graphs): it has no "
                              "decoder window to decode incrementally")
        return FrameOrtStreamer(export_dir, key_interval=key_interval, intra_op_threads=intra_op_threads,
                                session_options=options)
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
        return OrtStepStreamer(export_dir, intra_op_threads=intra_op_threads, session_options=options)
    return OrtStreamer(export_dir, intra_op_threads=intra_op_threads, session_options=options)


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


def ort_streamers(models: Sequence[Any], out_dir: Path, threads: int, *, incremental: bool = False,
                  session_options: Any = None, prepare: Callable[[Any, Path], None] | None = None,
                  ) -> tuple[dict[str, OrtStreamer | FrameOrtStreamer], dict[str, OrtStepStreamer]]:
    """Export every model (objects with ``name``, ``model``, ``size`` and ``stream_options``) into ``out_dir`` and
    open onnxruntime streamers on each (``session_options``, default ``quiet_session_options(threads)``).
    ``prepare(model, export_dir)`` runs on each finished export before its streamers open (``vidnas bench
    --precision int8`` quantises there).

    Returns:
        (name -> ``OrtStreamer`` over the window pair, name -> ``OrtStepStreamer`` over the incremental graphs);
        the second is filled only with ``incremental``, for the models that have an incremental decode.

    Raises:
        DeployError: a model that cannot be exported or loaded (the message names it).
    """
    options = session_options if session_options is not None else quiet_session_options(threads)
    out: dict[str, OrtStreamer | FrameOrtStreamer] = {}
    steps: dict[str, OrtStepStreamer] = {}
    for i, bm in enumerate(models):
        path = Path(out_dir) / f"model{i}"
        try:
            frame = is_frame_model(bm.model)
            step = not frame and incremental and incremental_support(bm.model) is None
            if frame:  # arch2 / dynamic cell: key (+ cell step) graphs, the same stream options
                export_frame_onnx(bm.model, path, img_size=bm.size)
            else:
                export_onnx(bm.model, path, img_size=bm.size, window=bm.stream_options.get("window"))
                if step:
                    export_step_graphs(bm.model, path)
            if prepare is not None:
                prepare(bm, path)
            if frame:
                out[bm.name] = FrameOrtStreamer(path, session_options=options,
                                                key_interval=bm.stream_options.get("key_interval"))
                continue
            out[bm.name] = OrtStreamer(path, session_options=options)
            if step:
                steps[bm.name] = OrtStepStreamer(path, session_options=options)
        except (DeployError, RuntimeError, ValueError) as e:
            raise DeployError(f"{bm.name}: ONNX export / onnxruntime failed: {e}") from e
    return out, steps
