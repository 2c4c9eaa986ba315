"""The ST-NAS FPS protocol on a streaming VideoSegmenter: latency per frame, its encoder / decoder split, FLOPs.

[ST-NAS Sec. 4 "Metrics"]: ``FPS = 1 / T_inf``, where ``T_inf`` is "the time to encode one image plus the time to
decode a full 11 frame encoding window, i.e. the time to process one frame in a real application", averaged over
1000 frames. Here the timed unit is one ``Streamer.push`` in steady state (ring buffer full): exactly one encoder
pass on the new frame, one stack of the ``w`` cached features, one decoder pass on the whole window, the target
slice and its bilinear upsampling to the image size: what ``vidnas predict`` does per frame. Batch 1 (``batch``
> 1: that many streams side by side, one frame each per push, times reported per frame).

Forward hooks on ``model.encoder`` and ``model.decoder`` stamp the time inside each push, so one run gives the frame
latency and its split (encoder, decoder, rest = stack + slice + upsample) without timing anything twice. Several
models are measured **interleaved** (``vidnas.bench.interleaved_timing``, one push per model per round, rotated
order), because the development machine is noisy while ratios measured together are stable.

Two protocols, measured side by side (``protocol_rows(..., incremental=True)``):

* **paper** (the rows' main columns): the window decode above, ``model.stream(incremental=False)``;
* **incremental** (the ``inc_*`` columns): ``model.stream(incremental=True)`` for causal window models: one encoder
  pass plus one decoder *time step* (``vidnas.models.incremental``), the same logits. The decoder time is then the
  step's. Models without an incremental decode (centred windows) get no ``inc_*`` values; frame-by-frame models
  (arch2, dynamic cells) already run one step per frame, so their two protocols are the same push.

A **roofline** (``ceiling=N``): an ``N x N`` float32 matmul joins the interleaved rounds as one more candidate, so the
machine's practical ceiling (GFLOP/s) is measured under the same load as the models; each row then reports its
achieved GFLOP/s (FLOPs per frame / latency) and that as a share of the ceiling.

This module never imports ``vidnas.models`` (``bench`` sits below it): the model is an argument, any object with the
``VideoSegmenter`` interface (``encoder``, ``decoder``, ``window``, ``encode``, ``stream(batch_size, **options)``,
``eval``). Streaming settings (a benchmark's ``--window``, a cell model's ``key_interval``, ``incremental``) are
per-model ``stream_options``, passed to ``model.stream``; a streamer that decodes through another module than
``model.decoder`` names it ``decoder_module`` (the probe times that one), and says which protocol it runs in
``protocol`` (``window``, ``incremental`` or ``frame``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vidnas.bench.counting import count_flops, count_params
from vidnas.bench.report import BenchRow
from vidnas.bench.timing import TimingStats, interleaved_timing
from vidnas.precision import autocast

__all__ = [
    "PAPER_FRAMES",
    "CEILING_SIZE",
    "ProtocolResult",
    "MatmulCeiling",
    "StreamProbe",
    "ExternalStreamProbe",
    "measure_protocol",
    "stnas_frame_latency",
    "component_latency",
    "component_flops",
    "flops_per_frame",
    "protocol_rows",
]

PAPER_FRAMES = 1000  # [ST-NAS Sec. 4] inference time averaged over 1000 frames
CEILING_SIZE = 2048  # the roofline's matmul: (2048 x 2048) @ (2048 x 2048) float32, 17.2 GFLOP


@dataclass(frozen=True)
class ProtocolResult:
    """Per-frame timings of one model under the ST-NAS protocol (all over the same timed pushes).

    Attributes:
        frame: one ``push`` = encode 1 frame + decode the full window (+ stack, slice, upsample): ``T_inf``.
        encoder: the encoder forward inside each push (None when the runtime runs them fused, e.g. the onnxruntime
            graph of a dynamic-cell step).
        decoder: the decoder forward (whole window) inside each push (None likewise).
    """

    frame: TimingStats
    encoder: TimingStats | None
    decoder: TimingStats | None

    @property
    def other_ms(self) -> float | None:
        """Mean time of a push outside the encoder and decoder (feature stack, target slice, upsampling, Python)."""
        if self.encoder is None or self.decoder is None:
            return None
        return self.frame.mean_ms - self.encoder.mean_ms - self.decoder.mean_ms


def _model_device(model: nn.Module) -> torch.device:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def _check_window(model: Any, window: int | None) -> int:
    if window is not None and window != model.window:
        raise ValueError(
            f"window {window} differs from the model's window {model.window}; build the model with the window to "
            "measure (the protocol decodes the model's own window)"
        )
    return int(model.window)


class _Probe:
    """Common part of the probes: a primed streamer, per-push encoder / decoder times, the last ``n`` samples."""

    def __init__(self, progress: Callable[[], Any] | None) -> None:
        self.progress = progress
        self.sync: Callable[[], Any] | None = None
        self.encoder_ms: list[float] = []
        self.decoder_ms: list[float] = []
        self.streamer: Any = None
        self.frame: Any = None
        self.split = True  # encoder and decoder timed apart
        self.autocast: Any = contextlib.nullcontext()
        self.active = False  # hooks shared by two probes of one model record only for the probe pushing

    def _push(self) -> Any:
        self.active = True
        try:
            return self.streamer.push(self.frame)
        finally:
            self.active = False

    def _prime(self) -> None:
        # until the target frame of the newest window exists, a push encodes but does not decode
        for _ in range(int(self.streamer.lag) + 1):
            self._push()

    def __call__(self) -> Any:
        """Push the frame once: one encoder pass and one decode of the full window (or one decoder step)."""
        with self.autocast:
            logits = self._push()
        if self.progress is not None:
            self.progress()
        return logits

    def samples(self, n: int) -> tuple[TimingStats | None, TimingStats | None]:
        """Encoder and decoder statistics over the last ``n`` pushes ((None, None) without a split)."""
        if not self.split:
            return None, None
        if len(self.encoder_ms) < n or len(self.decoder_ms) < n:
            raise RuntimeError(
                f"expected >= {n} encoder and decoder calls, the probe saw {len(self.encoder_ms)} and "
                f"{len(self.decoder_ms)}"
            )
        return TimingStats.from_samples(self.encoder_ms[-n:]), TimingStats.from_samples(self.decoder_ms[-n:])

    def close(self) -> None:
        """Undo what the probe changed (subclasses)."""
        self.streamer.reset()


class StreamProbe(_Probe):
    """One PyTorch model under the protocol: a steady-state streamer and hooks splitting each push.

    Calling the probe pushes one frame (a fixed random image, batch 1). On construction the model is put in eval mode
    and the streamer is primed until every push decodes a full window (centred windows emit nothing for their first
    ``w - 1 - w // 2`` pushes). Forward hooks on ``model.encoder`` and ``model.decoder`` record every call, warm-up
    ones included; ``samples(n)`` returns the last ``n``. Call ``close()`` to remove the hooks and restore the model's
    mode.

    Args:
        model: a VideoSegmenter (see the module docstring).
        img_size: (H, W) of the frames.
        sync: called at each stamp on asynchronous devices (``torch.cuda.synchronize``); None on the CPU.
        progress: called after each push (e.g. a progress bar's update); cheap, it runs inside the timed region.
        stream_options: keyword arguments of ``model.stream`` (``window``, ``key_interval``, ``incremental``);
            ``incremental`` defaults to False here: the paper's protocol.
        amp: inference precision of the pushes (``vidnas.precision.AMP_MODES``).
        batch: frames per push, one per stream (``model.stream(batch_size=batch)``; the frame is ``(batch, 3, H, W)``).
    """

    def __init__(
        self,
        model: Any,
        img_size: Sequence[int],
        *,
        sync: Callable[[], Any] | None = None,
        progress: Callable[[], Any] | None = None,
        stream_options: Mapping[str, Any] | None = None,
        amp: str = "none",
        batch: int = 1,
    ) -> None:
        super().__init__(progress)
        self.model = model
        self.sync = sync
        self._t0 = 0.0
        self._was_training = bool(model.training)
        model.eval()
        gen = torch.Generator().manual_seed(0)
        frame = torch.randn(int(batch), 3, int(img_size[0]), int(img_size[1]), generator=gen)  # (B, 3, H, W)
        self.frame = frame.to(_model_device(model))
        self.autocast = autocast(_model_device(model), amp)
        self.streamer = model.stream(batch_size=int(batch), **{"incremental": False, **(stream_options or {})})
        decoder = getattr(self.streamer, "decoder_module", None) or model.decoder
        self._handles = [
            model.encoder.register_forward_pre_hook(self._start),
            model.encoder.register_forward_hook(self._stop(self.encoder_ms)),
            decoder.register_forward_pre_hook(self._start),
            decoder.register_forward_hook(self._stop(self.decoder_ms)),
        ]
        with torch.inference_mode(), self.autocast:
            self._prime()

    def _stamp(self) -> float:
        if self.sync is not None:
            self.sync()
        return time.perf_counter()

    def _start(self, module: nn.Module, args: Any) -> None:
        if self.active:
            self._t0 = self._stamp()

    def _stop(self, out: list[float]) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, result: Any) -> None:
            if self.active:
                out.append((self._stamp() - self._t0) * 1000.0)

        return hook

    def close(self) -> None:
        """Remove the hooks, drop the buffered features, restore the model's train / eval mode."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        super().close()
        self.model.train(self._was_training)


class ExternalStreamProbe(_Probe):
    """A streamer of another runtime (e.g. ``vidnas.export.OrtStreamer``) under the same protocol.

    The streamer must have ``push(frame)``, ``reset()``, ``lag`` and ``input_size`` (H, W). When it also has the
    methods ``encode(frame)`` / ``decode(window)`` that ``push`` calls, the probe shadows those two on the instance
    with timed wrappers (removed by ``close()``); without them (``FrameOrtStreamer``: one fused graph per frame) only
    the frame is timed. Frames are numpy float32 ``(1, 3, H, W)``. The decoder time here includes
    the target slice and the upsampling when the runtime's decoder graph contains them (the ONNX export does).

    Args:
        streamer: the streamer.
        progress: called after each push.
    """

    def __init__(self, streamer: Any, *, progress: Callable[[], Any] | None = None) -> None:
        super().__init__(progress)
        self.streamer = streamer
        h, w = (int(v) for v in streamer.input_size)
        self.frame = np.random.default_rng(0).standard_normal((1, 3, h, w), dtype=np.float32)  # (1, 3, H, W)
        self.split = callable(getattr(streamer, "encode", None)) and callable(getattr(streamer, "decode", None))
        if self.split:
            streamer.encode = self._timed(streamer.encode, self.encoder_ms)
            streamer.decode = self._timed(streamer.decode, self.decoder_ms)
        self._prime()

    @staticmethod
    def _timed(fn: Callable[..., Any], out: list[float]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            result = fn(*args, **kwargs)
            out.append((time.perf_counter() - t0) * 1000.0)
            return result

        return wrapper

    def close(self) -> None:
        """Remove the timed wrappers (the class methods show through again) and reset the streamer."""
        for attr in ("encode", "decode"):
            self.streamer.__dict__.pop(attr, None)
        super().close()


def _with_threads(fn: Callable[[], Any], n: int) -> Callable[[], Any]:
    def call() -> Any:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)

    return call


class MatmulCeiling:
    """The roofline's ceiling: one ``(n x n) @ (n x n)`` float32 matmul per call, ``2 n^3`` FLOPs.

    Calling it runs the product once (on ``device``, with torch's current thread count); ``measure_protocol`` times
    it interleaved with the models, so the ceiling is measured under the same load. ``gflops_per_s`` is set from the
    mean call time afterwards.

    Args:
        size: n (``CEILING_SIZE``).
        device: where the product runs (the models' device).
    """

    def __init__(self, size: int = CEILING_SIZE, device: str | torch.device = "cpu") -> None:
        if size < 1:
            raise ValueError(f"ceiling size must be >= 1, got {size}")
        self.size = int(size)
        gen = torch.Generator().manual_seed(0)
        self.a = torch.randn(size, size, generator=gen).to(device)
        self.b = torch.randn(size, size, generator=gen).to(device)
        self.sync = torch.cuda.synchronize if self.a.device.type == "cuda" else None
        self.flops = 2 * self.size**3
        self.stats: TimingStats | None = None

    def __call__(self) -> torch.Tensor:
        return self.a @ self.b

    @property
    def gflops_per_s(self) -> float | None:
        """Achieved GFLOP/s of the matmul (None before it was timed)."""
        if self.stats is None or self.stats.mean_ms <= 0:
            return None
        return self.flops / 1e9 / (self.stats.mean_ms / 1e3)


def measure_protocol(
    models: Mapping[str, Any],
    *,
    img_size: Sequence[int] | Mapping[str, Sequence[int]],
    warmup: int,
    frames: int,
    window: int | None = None,
    progress: Callable[[], Any] | None = None,
    stream_options: Mapping[str, Mapping[str, Any]] | None = None,
    amp: str | Mapping[str, str] = "none",
    ceiling: MatmulCeiling | None = None,
    threads: Mapping[str, int] | None = None,
    batch: int = 1,
) -> dict[str, ProtocolResult]:
    """Time several models side by side under the ST-NAS protocol.

    Each model gets ``warmup`` untimed pushes after its streamer is primed; then ``frames`` rounds run, each pushing
    one frame through every model in turn (the order rotated by one per round), so every model gets ``frames`` timed
    pushes. Batch 1, under ``torch.inference_mode``; each model runs on the device of its parameters.

    Args:
        models: name -> VideoSegmenter, or a streamer of another runtime (``ExternalStreamProbe``; its frames have
            its own ``input_size``).
        img_size: (H, W) for all models, or name -> (H, W).
        warmup: untimed pushes per model.
        frames: timed pushes per model (the paper: ``PAPER_FRAMES``).
        window: expected window of every model; None = each model's own (a mismatch raises ValueError).
        progress: called after every push (warm-up included), e.g. a progress bar's ``update``.
        stream_options: name -> keyword arguments of that model's ``stream`` (e.g. ``{"window": 5}`` to decode
            another window than the model's own, ``{"incremental": True}`` for the incremental protocol; the same
            model may appear under two names with different options).
        amp: inference precision of the PyTorch models (``none``, ``bf16``, ``fp16``): one for all, or name -> mode
            (models not named: ``none``), e.g. one model under two names, float32 and bf16, in the same rounds.
        ceiling: a ``MatmulCeiling`` timed as one more candidate of every round (its ``stats`` are set).
        threads: name -> torch intra-op threads set before each of that candidate's pushes (the others run with the
            current setting, restored after each such push): thread counts compared in one interleaved run.
        batch: frames per push of the PyTorch models (B streams side by side); the times are per push.

    Returns:
        name -> ``ProtocolResult``, in the order of ``models``.

    Raises:
        ValueError: no models, a window mismatch, or ``batch`` > 1 with a streamer of another runtime (batch 1 only).
    """
    if not models:
        raise ValueError("no models to measure")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    sizes = {n: (img_size[n] if isinstance(img_size, Mapping) else img_size) for n in models}
    probes: dict[str, _Probe] = {}
    ceiling_key = "\0matmul-ceiling"  # cannot clash with a row name
    try:
        for name, model in models.items():
            _check_window(model, window)
            if isinstance(model, nn.Module):
                sync = torch.cuda.synchronize if _model_device(model).type == "cuda" else None
                probes[name] = StreamProbe(model, sizes[name], sync=sync, progress=progress,
                                           stream_options=(stream_options or {}).get(name), amp=_amp_of(amp, name),
                                           batch=batch)
            elif batch != 1:
                raise ValueError(f"{name}: the streamers of other runtimes take batch 1 only (got batch {batch})")
            else:
                probes[name] = ExternalStreamProbe(model, progress=progress)
        any_cuda = any(p.sync is not None for p in probes.values()) or (ceiling is not None and ceiling.sync)
        fns: dict[str, Callable[[], Any]] = dict(probes)
        for name, n in (threads or {}).items():
            if name in fns:
                fns[name] = _with_threads(fns[name], int(n))
        if ceiling is not None:
            fns[ceiling_key] = ceiling
        stats = interleaved_timing(
            fns,
            warmup=warmup,
            iters=1,
            rounds=frames,
            sync=torch.cuda.synchronize if any_cuda else None,
        )
        if ceiling is not None:
            ceiling.stats = stats[ceiling_key]
        out: dict[str, ProtocolResult] = {}
        for name, probe in probes.items():
            enc, dec = probe.samples(frames)
            out[name] = ProtocolResult(frame=stats[name], encoder=enc, decoder=dec)
        return out
    finally:
        for probe in reversed(probes.values()):  # two probes of one model: the first restores its original mode
            probe.close()


def _amp_of(amp: str | Mapping[str, str], name: str) -> str:
    return amp if isinstance(amp, str) else amp.get(name, "none")


def stnas_frame_latency(
    model: Any,
    *,
    img_size: Sequence[int],
    window: int | None = None,
    warmup: int,
    frames: int,
) -> TimingStats:
    """``T_inf`` of one model: the time to encode one frame plus decode the full window, per pushed frame.

    FPS by the paper's definition is ``result.fps`` (``1000 / mean_ms``).

    Args:
        model: a VideoSegmenter.
        img_size: (H, W) of the frames.
        window: the model's window (checked), None = ``model.window``.
        warmup: untimed pushes after priming the ring buffer.
        frames: timed pushes (the paper: 1000).
    """
    return measure_protocol({"model": model}, img_size=img_size, warmup=warmup, frames=frames, window=window)[
        "model"
    ].frame


def component_latency(
    model: Any,
    *,
    img_size: Sequence[int],
    window: int | None = None,
    warmup: int,
    frames: int,
) -> ProtocolResult:
    """Frame latency and its split into the encoder (one frame) and the decoder (the whole window).

    Both parts are measured inside the same pushes as the frame latency, so ``frame ~ encoder + decoder + other``
    (``ProtocolResult.other_ms``). Arguments as ``stnas_frame_latency``.
    """
    return measure_protocol({"model": model}, img_size=img_size, warmup=warmup, frames=frames, window=window)["model"]


def component_flops(model: Any, img_size: Sequence[int], window: int | None = None, *,
                    incremental: bool = False) -> dict[str, int] | None:
    """FLOPs of one protocol frame, split: the encoder on one image and the decoder on the full window.

    Counted by ``vidnas.bench.count_flops`` (1 MAC = 2 FLOPs; matmuls, convolutions and attention only). The
    upsampling of the target slice is free there. A frame-by-frame model (arch2, dynamic cells: its streamer's
    ``protocol`` is ``frame``) has a ``protocol_parts(frame)`` method returning its own ``((encoder_fn, args),
    (decoder_fn, args))`` for one streamed frame (a dynamic-cell model: the encoder and the cell, its steady state).
    A window model whose encoder gives one map per scale (multi-scale) decodes the window of every scale.

    Args:
        model: a VideoSegmenter (its device is used; its train / eval mode is kept, the count runs in eval mode).
        img_size: (H, W).
        window: frames decoded per frame; None = ``model.window`` (frame-by-frame models ignore it).
        incremental: count the incremental protocol instead: the decoder is one steady-state step of
            ``model.stream(incremental=True)``'s ``decoder_module`` (the same as the window count for frame-by-frame
            models); None when the model has no incremental decode.

    Returns:
        ``{"encoder": ..., "decoder": ..., "total": ...}`` (None: ``incremental`` asked of a model without one).
    """
    w = int(model.window if window is None else window)
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, 3, int(img_size[0]), int(img_size[1]), device=_model_device(model))  # (1, 3, H, W)
        parts = getattr(model, "protocol_parts", None)
        step = None
        if incremental:
            try:
                streamer = model.stream(batch_size=1, window=w, incremental=True)
            except ValueError:
                return None
            step = getattr(streamer, "decoder_module", None)
            if step is None and streamer.protocol != "frame":
                return None
        if parts is not None and step is None and _is_frame_model(model, w):  # it says what one streamed frame runs
            (enc_fn, enc_args), (dec_fn, dec_args) = parts(x)
            enc, dec = count_flops(enc_fn, *enc_args), count_flops(dec_fn, *dec_args)
            return {"encoder": enc, "decoder": dec, "total": enc + dec}
        enc = count_flops(model.encode, x)
        with torch.inference_mode():
            feat = model.encode(x)  # (1, C, h, w), or one such map per scale
        if step is not None:
            with torch.inference_mode():
                _, state = step(feat, ())  # the first frame; the count is of a steady-state step
            dec = count_flops(step, feat, state)
        elif isinstance(feat, torch.Tensor):
            stacked = feat.unsqueeze(2).expand(-1, -1, w, -1, -1).contiguous()  # (1, C, T=w, h, w)
            dec = count_flops(model.decoder, stacked)
        else:  # one map per scale: one window per scale
            windows = [f.unsqueeze(2).expand(-1, -1, w, -1, -1).contiguous() for f in feat]  # (1, C_s, T=w, ..)
            dec = count_flops(model.decoder, windows)
    finally:
        model.train(was_training)
    return {"encoder": enc, "decoder": dec, "total": enc + dec}


def _is_frame_model(model: Any, window: int) -> bool:
    """Whether ``model`` streams frame by frame (its streamer's ``protocol`` is ``frame``: arch2, dynamic cells)."""
    return model.stream(batch_size=1, window=window, incremental=False).protocol == "frame"


def flops_per_frame(model: Any, img_size: Sequence[int], window: int | None = None) -> int:
    """Encoder FLOPs for one frame plus decoder FLOPs for the full window (see ``component_flops``)."""
    flops = component_flops(model, img_size, window)
    assert flops is not None
    return flops["total"]


def _streams_incrementally(model: Any, options: Mapping[str, Any]) -> bool:
    """Whether ``model.stream(incremental=True)`` gives an incremental decode (not a window decode, not a frame
    model's step, which the paper protocol already times)."""
    try:
        streamer = model.stream(batch_size=1, **{**options, "incremental": True})
    except ValueError:
        return False
    return streamer.protocol == "incremental"


INC_SUFFIX = "\0inc"  # internal candidate name of a row's incremental-protocol measurement


def _per_frame(result: ProtocolResult, batch: int) -> ProtocolResult:
    """A push of ``batch`` frames as per-frame times: every sample divided by ``batch``."""
    def scale(stats: TimingStats | None) -> TimingStats | None:
        return None if stats is None else TimingStats.from_samples([v / batch for v in stats.samples_ms])

    return ProtocolResult(frame=scale(result.frame), encoder=scale(result.encoder), decoder=scale(result.decoder))


def _gflop_rate(gflops: float | None, latency_ms: float | None) -> float | None:
    if gflops is None or not latency_ms:
        return None
    return gflops / (latency_ms / 1e3)


def protocol_rows(
    models: Mapping[str, Any],
    *,
    img_size: Sequence[int] | Mapping[str, Sequence[int]],
    warmup: int,
    frames: int,
    flops: bool = True,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    cost_models: Mapping[str, Any] | None = None,
    progress: Callable[[], Any] | None = None,
    stream_options: Mapping[str, Mapping[str, Any]] | None = None,
    amp: str | Mapping[str, str] = "none",
    incremental: bool | Mapping[str, Any] = False,
    ceiling: int | None = None,
    threads: Mapping[str, int] | None = None,
    batch: int = 1,
) -> list[BenchRow]:
    """Count and time several models (interleaved) and return one ``BenchRow`` each.

    Row fields: ``params``, ``gflops`` (per frame by the protocol), ``latency_ms`` (mean ``T_inf``; ``fps`` =
    ``1000 / latency_ms``, the paper's averaging). ``extra``: ``encoder_ms``, ``decoder_ms``, ``other_ms`` (means),
    ``median_ms``, ``p90_ms``, ``std_ms``, ``frames``, ``warmup``, ``window``, ``height``, ``width``,
    ``encoder_gflops``, ``decoder_gflops``, plus ``extra[name]`` given by the caller. With ``incremental``: the
    incremental protocol's ``inc_latency_ms``, ``inc_fps``, ``inc_encoder_ms``, ``inc_decoder_ms``,
    ``inc_median_ms``, ``inc_gflops``, ``inc_decoder_gflops`` and ``inc_speedup`` (``latency_ms / inc_latency_ms``),
    None where the model has no incremental decode. With ``ceiling``: ``gflop_s`` / ``inc_gflop_s`` (achieved GFLOP/s
    = GFLOPs per frame / latency), ``roofline`` / ``inc_roofline`` (that / the ceiling) and ``ceiling_gflop_s``,
    ``ceiling_size``.

    Args:
        models: name -> VideoSegmenter, or a streamer of another runtime (see ``measure_protocol``).
        img_size: (H, W) for all, or name -> (H, W).
        warmup: untimed pushes per model.
        frames: timed pushes per model.
        flops: count FLOPs (a few seconds per full-size model); None in the row otherwise.
        extra: name -> more ``extra`` entries (e.g. the source of the model).
        cost_models: name -> the VideoSegmenter whose params and FLOPs a non-PyTorch candidate reports (the model it
            was exported from); without one such a row has no params or FLOPs.
        progress: called after every push.
        stream_options: name -> keyword arguments of that model's ``stream`` (``window``, ``key_interval``); the
            row's window and FLOPs follow its ``window``.
        amp: inference precision of the PyTorch models: one mode, or name -> mode (not named: ``none``); recorded in
            every row's ``amp`` (``none`` for other runtimes' rows); a row's incremental candidate runs in its mode.
        incremental: also time the incremental protocol, interleaved with the paper one: True = every PyTorch model
            that streams incrementally (``model.stream(incremental=True)``); a mapping name -> candidate gives the
            incremental candidate of a row explicitly (e.g. an onnxruntime step-graph streamer; True: the row's own
            PyTorch model when it streams incrementally; None: none).
        ceiling: time an ``n x n`` float32 matmul in the same rounds (``MatmulCeiling``) and add the roofline columns.
        threads: name -> torch intra-op threads of that row's PyTorch pushes (both protocols; ``torch_threads`` in
            the row); the others use the current setting.
        batch: frames per push (``measure_protocol``): ``batch`` streams side by side. Every time in the row is then
            per frame, the push's time / ``batch`` (``fps`` = frames per second of throughput); ``batch`` and the
            push's mean, ``batch_latency_ms``, are in the row. GFLOPs stay per frame.
    """
    sizes = {n: tuple(int(v) for v in (img_size[n] if isinstance(img_size, Mapping) else img_size)) for n in models}
    options = {n: dict((stream_options or {}).get(n) or {}) for n in models}
    windows = {n: int(options[n].get("window") or m.window) for n, m in models.items()}
    costed = {n: m if isinstance(m, nn.Module) else (cost_models or {}).get(n) for n, m in models.items()}
    # the incremental candidates: name -> (candidate, stream options)
    inc: dict[str, Any] = {}
    if isinstance(incremental, Mapping):  # name -> candidate, or True: the model itself when it streams incrementally
        for n, c in incremental.items():
            if n not in models or c is None or c is False:
                continue
            if c is True:
                m = models[n]
                if isinstance(m, nn.Module) and _streams_incrementally(m, options[n]):
                    inc[n] = m
            else:
                inc[n] = c
    elif incremental:
        inc = {n: m for n, m in models.items()
               if isinstance(m, nn.Module) and _streams_incrementally(m, options[n])}
    cache: dict[tuple[int, int, bool], dict[str, int] | None] = {}  # one model under two runtimes is counted once
    counts: dict[str, dict[str, int] | None] = {}
    inc_counts: dict[str, dict[str, int] | None] = {}
    for n, m in costed.items():
        for is_inc, target in ((False, counts), (True, inc_counts)):
            if is_inc and n not in inc:
                continue
            key = (id(m), windows[n], is_inc)
            if flops and m is not None and key not in cache:
                cache[key] = component_flops(m, sizes[n], window=windows[n], incremental=is_inc)
            target[n] = cache.get(key) if flops and m is not None else None
    candidates: dict[str, Any] = {}
    cand_sizes: dict[str, tuple[int, ...]] = {}
    cand_options: dict[str, dict[str, Any]] = {}
    for n, m in models.items():  # each row's incremental candidate right after its paper one
        candidates[n], cand_sizes[n], cand_options[n] = m, sizes[n], options[n]
        if n in inc:
            key = n + INC_SUFFIX
            candidates[key], cand_sizes[key] = inc[n], sizes[n]
            cand_options[key] = {**options[n], "incremental": True}
    matmul = None
    if ceiling:
        devices = {_model_device(m) for m in candidates.values() if isinstance(m, nn.Module)}
        matmul = MatmulCeiling(ceiling, device=next(iter(devices)) if len(devices) == 1 else "cpu")
    cand_threads = {c: int(n) for name, n in (threads or {}).items()
                    for c in (name, name + INC_SUFFIX) if c in candidates}
    cand_amp = {c: _amp_of(amp, c.removesuffix(INC_SUFFIX)) for c in candidates}
    results = measure_protocol(candidates, img_size=cand_sizes, warmup=warmup, frames=frames, progress=progress,
                               stream_options=cand_options, amp=cand_amp, ceiling=matmul, threads=cand_threads,
                               batch=batch)
    if batch != 1:
        results = {n: _per_frame(r, batch) for n, r in results.items()}
    ceiling_rate = None if matmul is None else matmul.gflops_per_s
    rows = []
    for name in models:
        res, fl = results[name], counts[name]
        row = BenchRow(
            name=name,
            params=None if costed[name] is None else count_params(costed[name]),
            gflops=None if fl is None else fl["total"] / 1e9,
            latency_ms=res.frame.mean_ms,
            extra={
                "encoder_ms": None if res.encoder is None else res.encoder.mean_ms,
                "decoder_ms": None if res.decoder is None else res.decoder.mean_ms,
                "other_ms": res.other_ms,
                "median_ms": res.frame.median_ms,
                "p90_ms": res.frame.p90_ms,
                "std_ms": res.frame.std_ms,
                "frames": frames,
                "warmup": warmup,
                "window": windows[name],
                "height": sizes[name][0],
                "width": sizes[name][1],
                "encoder_gflops": None if fl is None else fl["encoder"] / 1e9,
                "decoder_gflops": None if fl is None else fl["decoder"] / 1e9,
                "amp": _amp_of(amp, name) if isinstance(models[name], nn.Module) else "none",
                "torch_threads": int((threads or {}).get(name, torch.get_num_threads())),
                "batch": batch,
                "batch_latency_ms": res.frame.mean_ms * batch,
            },
        )
        if incremental is not False:
            ires = results.get(name + INC_SUFFIX)
            ifl = inc_counts.get(name)
            row.extra.update({
                "inc_latency_ms": None if ires is None else ires.frame.mean_ms,
                "inc_fps": None if ires is None else ires.frame.fps,
                "inc_encoder_ms": None if ires is None else ires.encoder.mean_ms,
                "inc_decoder_ms": None if ires is None else ires.decoder.mean_ms,
                "inc_median_ms": None if ires is None else ires.frame.median_ms,
                "inc_gflops": None if ifl is None else ifl["total"] / 1e9,
                "inc_decoder_gflops": None if ifl is None else ifl["decoder"] / 1e9,
                "inc_speedup": None if ires is None else res.frame.mean_ms / ires.frame.mean_ms,
            })
        if matmul is not None:
            rate = _gflop_rate(row.gflops, row.latency_ms)
            row.extra.update({
                "ceiling_size": matmul.size,
                "ceiling_gflop_s": ceiling_rate,
                "gflop_s": rate,
                "roofline": None if rate is None or not ceiling_rate else rate / ceiling_rate,
            })
            if incremental is not False:
                irate = _gflop_rate(row.extra.get("inc_gflops"), row.extra.get("inc_latency_ms"))
                row.extra["inc_gflop_s"] = irate
                row.extra["inc_roofline"] = None if irate is None or not ceiling_rate else irate / ceiling_rate
        row.extra.update((extra or {}).get(name, {}))
        rows.append(row)
    return rows
