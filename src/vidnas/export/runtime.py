"""The deployment runtimes: onnxruntime streaming over an export directory, the PyTorch-vs-ONNX parity check, and
the runners ``vidnas predict`` drives (``FrameRunner``: ``TorchRunner``, ``OrtStreamer`` or, for causal exports with
the incremental graphs, ``vidnas.export.stepgraph.OrtStepStreamer``; built by ``load_runner``).

``OrtStreamer`` has the interface of ``vidnas.models.Streamer`` (``push`` / ``flush`` / ``reset`` / ``pending``) with
numpy in and out, batch 1. It keeps the ring buffer of the last ``w`` encoder features as one preallocated
(1, C, w, h, w') float32 array, oldest first, shifted in place on every push: memory is fixed however long the video.
Edge rule (the data layer's): the first frame's feature fills the whole window; ``flush`` (centred windows) appends
copies of the last feature until every pushed frame has its logits.

Example:
    >>> streamer = OrtStreamer("export_dir")
    >>> for frame in frames:                      # (1, 3, H, W) float32, ImageNet-normalised
    ...     logits = streamer.push(frame)         # (1, K, H, W) or None (centred, before the target exists)
    >>> tail = streamer.flush()                   # the last frames of a centred stream; [] when causal

For benchmarks, ``encode(frame)`` and ``decode(window)`` run one graph each without touching the buffer.

A multi-scale export (one encoder output per scale, ``export.json`` schema 2) gets one ring buffer per scale;
``encode`` then returns a list of feature maps (coarse first) and ``decode`` takes a list of windows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from vidnas.export.exporter import (
    DEFAULT_OPSET,
    DeployError,
    export_onnx,
    export_paths,
    feature_specs,
    ort_session,
    parity_mode,
    read_export_meta,
    window_specs,
)
from vidnas.export.frame_models import (
    FrameOrtStreamer,
    export_frame_onnx,
    frame_parity_check,
    is_frame_export,
    is_frame_model,
)
from vidnas.export.stepgraph import OrtStepStreamer, export_step_graphs, has_step_graphs
from vidnas.models import LoadedModel, incremental_support, load_model
from vidnas.models.fastpath import use_channels_last
from vidnas.precision import autocast

__all__ = [
    "RUNTIMES",
    "FrameRunner",
    "TorchRunner",
    "load_runner",
    "OrtStreamer",
    "parity_check",
    "ort_streamers",
    "quiet_session_options",
    "default_session_options",
    "ORT_OPTIONS_NOTE",
    "DEFAULT_PROVIDERS",
]

logger = logging.getLogger(__name__)

DEFAULT_PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)
RUNTIMES = ("torch", "onnxruntime")


class OrtStreamer:
    """Frame-by-frame inference with onnxruntime: one encoder run per push, one decoder run per window.

    Args:
        export_dir: a directory written by ``export_onnx`` (``encoder.onnx``, ``decoder.onnx``, ``export.json``).
        providers: onnxruntime execution providers, in preference order (default CPU).
        intra_op_threads: threads per graph run; None = onnxruntime's default (one per physical core).
        session_options: a prepared ``onnxruntime.SessionOptions`` (overrides ``intra_op_threads``).

    Attributes:
        runtime: ``"onnxruntime"``.
        meta: the parsed ``export.json``.
        window: w. causal: the mode. target_index: index of the emitted frame in a window. lag: pushes between a
        frame and its logits (0 causal). input_size: (H, W) of frames. num_classes: K. class_names, palette: from
        the export (palette None when not recorded). feature_shape: (1, C, h, w) of one encoder output (the first
        scale's of a multi-scale export); feature_shapes: all of them. multi: a multi-scale export.

    Raises:
        DeployError: not an export directory, or a graph onnxruntime cannot load (the message names the file).
    """

    runtime = "onnxruntime"
    protocol = "window"

    def __init__(
        self,
        export_dir: str | Path,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        session_options: Any = None,
    ) -> None:
        import onnxruntime as ort

        self.export_dir = Path(export_dir)
        self.meta = read_export_meta(self.export_dir)
        paths = export_paths(self.export_dir)
        if session_options is None:
            session_options = ort.SessionOptions()
            if intra_op_threads is not None:
                session_options.intra_op_num_threads = int(intra_op_threads)
        providers = list(providers or DEFAULT_PROVIDERS)
        self.encoder_session = ort_session(ort, paths.out_dir / self.meta.get("encoder", paths.encoder.name),
                                        session_options, providers)
        self.decoder_session = ort_session(ort, paths.out_dir / self.meta.get("decoder", paths.decoder.name),
                                        session_options, providers)
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
        self.input_size = (int(self.meta["input_size"][0]), int(self.meta["input_size"][1]))
        self.num_classes = int(self.meta["num_classes"])
        self.class_names: list[str] = list(self.meta.get("class_names") or [])
        pal = self.meta.get("palette")
        self.palette: np.ndarray | None = None if pal is None else np.asarray(pal, dtype=np.uint8)
        self.feature_shapes = [tuple(int(s) for s in f["shape"]) for f in feats]  # (1, C_i, h_i, w_i) each
        self.feature_shape = self.feature_shapes[0]
        # one (1, C, T, h, w) ring buffer per feature map, oldest first
        self._buffers = [np.zeros((1, c, self.window, fh, fw), dtype=np.float32)
                         for _, c, fh, fw in self.feature_shapes]
        self._pushed = 0
        self._appended = 0  # pushes plus the edge copies appended by flush()
        self._emitted = 0

    @property
    def providers(self) -> list[str]:
        """The execution providers onnxruntime actually uses."""
        return list(self.encoder_session.get_providers())

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
        outs = self.encoder_session.run(self._feat_names, {self._in_name: self._check_frame(frame)})
        return outs if self.multi else outs[0]

    def decode(self, window: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Run ``decoder.onnx``: (1, C, w, h, w') float32, oldest first (a multi-scale export: a list, one per
        scale) -> (1, K, H, W) target-frame logits."""
        windows = list(window) if self.multi else [window]
        if len(windows) != len(self._dec_names):
            raise ValueError(f"expected {len(self._dec_names)} windows (one per scale), got {len(windows)}")
        feeds = {n: np.ascontiguousarray(w, dtype=np.float32) for n, w in zip(self._dec_names, windows, strict=True)}
        return self.decoder_session.run(None, feeds)[0]

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

    def _check_frame(self, frame: np.ndarray) -> np.ndarray:
        frame = np.ascontiguousarray(frame, dtype=np.float32)
        want = (1, 3, *self.input_size)
        if frame.shape != want:
            raise ValueError(f"expected a frame of shape {want} (batch 1, ImageNet-normalised RGB), got {frame.shape}")
        return frame

    def __repr__(self) -> str:
        return (f"OrtStreamer({str(self.export_dir)!r}, input={self.input_size}, window={self.window}, "
                f"{'causal' if self.causal else 'centred'}, providers={self.providers})")


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
    both streams is compared, the edge repetition at both ends included.

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
    ort_stream = OrtStreamer(export_dir, providers=providers)
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
        diff = max(diff, float(np.abs(a - b).max()))
    logger.info("parity over %d frames: max |torch - onnxruntime| = %.3g", frames, diff)
    return diff


class FrameRunner(Protocol):
    """What ``predict_video`` needs from a streamer (``TorchRunner`` and ``OrtStreamer`` both provide it).

    ``push(frame (1, 3, H, W) float32) -> (1, K, H, W) logits | None``; ``flush() -> list of logits``; ``reset()``;
    attributes ``runtime``, ``protocol`` (``window``, ``incremental`` or ``frame``: what one push decodes),
    ``input_size`` (H, W), ``window``, ``causal``, ``lag``, ``num_classes``, ``class_names``, ``palette`` ((K, 3)
    uint8 or None). ``OrtStepStreamer`` (``vidnas.export.stepgraph``) provides it too.
    """

    runtime: str
    protocol: str
    input_size: tuple[int, int]
    window: int
    causal: bool
    lag: int
    num_classes: int
    class_names: list[str]
    palette: np.ndarray | None

    def push(self, frame: np.ndarray) -> np.ndarray | None: ...

    def flush(self) -> list[np.ndarray]: ...

    def reset(self) -> None: ...


class TorchRunner:
    """``model.stream()`` behind the numpy ``FrameRunner`` interface (eager PyTorch, CPU); any model kind.

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
        self.protocol = str(getattr(self._streamer, "protocol", "window"))
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

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        with self._autocast:
            out = self._streamer.push(torch.from_numpy(frame).to(self.device, non_blocking=True))
        return None if out is None else out.float().cpu().numpy()

    def flush(self) -> list[np.ndarray]:
        with self._autocast:
            return [t.float().cpu().numpy() for t in self._streamer.flush()]

    def reset(self) -> None:
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
) -> FrameRunner:
    """A streamer for ``predict_video``.

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
        raise DeployError("--key-interval applies to dynamic-cell models only")
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
                  session_options: Any = None,
                  ) -> tuple[dict[str, OrtStreamer | FrameOrtStreamer], dict[str, OrtStepStreamer]]:
    """Export every model (objects with ``name``, ``model``, ``size`` and ``stream_options``) into ``out_dir`` and
    open onnxruntime streamers on each (``session_options``, default ``quiet_session_options(threads)``).

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
            if is_frame_model(bm.model):  # arch2 / dynamic cell: key (+ cell step) graphs, the same stream options
                export_frame_onnx(bm.model, path, img_size=bm.size)
                out[bm.name] = FrameOrtStreamer(path, session_options=options,
                                                key_interval=bm.stream_options.get("key_interval"))
                continue
            export_onnx(bm.model, path, img_size=bm.size, window=bm.stream_options.get("window"))
            out[bm.name] = OrtStreamer(path, session_options=options)
            if incremental and incremental_support(bm.model) is None:
                export_step_graphs(bm.model, path)
                steps[bm.name] = OrtStepStreamer(path, session_options=options)
        except (DeployError, RuntimeError, ValueError) as e:
            raise DeployError(f"{bm.name}: ONNX export / onnxruntime failed: {e}") from e
    return out, steps
