"""Frame-by-frame inference for every model kind: the ``Streamer`` protocol, its PyTorch implementations, the
dispatch of window models between them, the check of ``stream()``'s options and the key-frame rule.

Every model has ``model.stream(batch_size=1, *, key_interval=None, window=None, incremental=None) -> Streamer``;
streaming settings are arguments of that call, never attributes changed on a loaded model. Each ``stream()`` checks
them with ``check_stream_options`` first.

* ``WindowStreamer`` (window models: ``VideoSegmenter``, ``MultiScaleSegmenter``; centred ones always, causal ones with
  ``incremental=False``): a ring buffer of the last ``w`` encoder features; each push runs the encoder once and the
  decoder on the whole window [ST-NAS Sec. 4 "Metrics"].
* ``IncrementalStreamer`` (causal window models, their default): one encoder pass plus one decoder time step per
  push (``vidnas.models.incremental.IncrementalDecoder``), the same logits as ``WindowStreamer``.
  ``window_model_streamer`` picks one of the two for a window model's ``stream()``.
* ``FrameStreamer`` (frame-by-frame models: the arch2 static segmenter, dynamic-cell models): the model's
  ``step(frame, state) -> (logits, state)`` carries whatever it needs from one frame to the next. Dynamic-cell models
  run their static network on key frames (``is_key_frame``, the one key-frame rule, which the onnxruntime streamer of
  a cell export follows too).

The onnxruntime streamers (``vidnas.export.ort_streamers``) and the PyTorch runner of ``vidnas predict``
(``vidnas.export.runtime.TorchRunner``) follow the same protocol with numpy arrays.

Window rule shared with the data layer (SPEC "Clip model"): the clip of target frame t holds frames
``t - w + 1 .. t`` (causal) or ``t - w // 2 .. t - w // 2 + w - 1`` (centred: target at index ``w // 2``), with frame
indices clamped to the video, i.e. the first (last) frame repeated past the video's start (end). ``WindowStreamer``
builds exactly these windows, so its outputs equal the clip forward's target-frame outputs (tested).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from vidnas.models.incremental import IncrementalDecoder, IncrementalError, incremental_support

__all__ = [
    "Streamer",
    "WindowStreamer",
    "IncrementalStreamer",
    "FrameStreamer",
    "window_model_streamer",
    "check_stream_options",
    "check_key_interval",
    "key_interval_refusal",
    "is_key_frame",
    "check_frame",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class Streamer(Protocol):
    """What every streamer offers: PyTorch tensors for the streamers of ``model.stream()``, numpy arrays (batch 1) for
    the onnxruntime streamers and ``TorchRunner``.

    Attributes:
        window: frames the model sees per emitted frame (1 for frame-by-frame models).
        lag: pushes between a frame and its logits (0 for causal models; ``w - 1 - w // 2`` centred).
        causal: the logits of a frame depend on no later frame (then ``lag`` is 0).
        protocol: what one push decodes: ``window`` (the whole window), ``incremental`` (one decoder time step of a
            window model) or ``frame`` (a frame-by-frame model's step).
        runtime: what runs the model: ``torch`` or ``onnxruntime``.

    A streamer of a deployed model (the onnxruntime streamers, ``TorchRunner``: what ``vidnas predict`` drives) also
    describes it: ``input_size`` (H, W) of its frames, ``num_classes`` K, ``class_names`` (K names, or [] when
    unnamed) and ``palette`` ((K, 3) uint8, or None when the model records none).
    """

    window: int
    lag: int
    causal: bool
    protocol: str
    runtime: str

    @property
    def pending(self) -> int:
        """Frames pushed whose logits have not been returned yet."""
        ...

    def push(self, frame: Any) -> Any | None:
        """Add one frame (B, 3, H, W); returns the logits (B, K, H, W) of the frame now complete, or None."""
        ...

    def flush(self) -> list[Any]:
        """End of a video: the pending frames' logits in frame order, then ``reset()``."""
        ...

    def reset(self) -> None:
        """Forget every frame (start of a new video)."""
        ...


def is_key_frame(t: int, key_interval: int | None) -> bool:
    """The key-frame rule of dynamic-cell models [CELLS Sec. 3.1]: frame ``t`` of a video (0-based, counted from the
    last reset) runs the static network when ``t == 0`` or, with a key interval N, when ``t % N == 0``; every other
    frame runs the encoder and the cell on the previous frame's state. The clip forward, ``DynamicCellModel.step``
    and the onnxruntime streamer of a cell export all follow it."""
    return t == 0 or (key_interval is not None and t % key_interval == 0)


def check_key_interval(key_interval: int | None) -> int | None:
    """``key_interval`` as an int, or None; ValueError unless it is None or an integer >= 1."""
    if key_interval is None:
        return None
    if isinstance(key_interval, bool) or int(key_interval) < 1:
        raise ValueError(f"key interval must be >= 1 (or None: a key frame at a video's start only), got "
                         f"{key_interval}")
    return int(key_interval)


def key_interval_refusal(what: str) -> str:
    """The one message refusing a key interval to ``what`` (a model or an export without key frames)."""
    return f"key_interval applies to dynamic-cell models only; {what} has no key frames"


def check_stream_options(model: Any, *, key_interval: int | None = None, key_frames: bool = False) -> int | None:
    """The check every model's ``stream()`` runs on its options before building a streamer; returns the key interval
    (an int, or None).

    ``key_interval`` is for models with ``key_frames`` (dynamic-cell models), where it must be an integer >= 1; every
    other model refuses it with ``key_interval_refusal``. ``window`` and ``incremental`` need no check here:
    ``window_model_streamer`` settles them for window models, and frame-by-frame models accept and ignore them (one
    call streams any model).

    Raises:
        ValueError: a key interval for a model without key frames (naming the model and its decoder), or below 1.
    """
    if key_interval is not None and not key_frames:
        raise ValueError(key_interval_refusal(f"this {type(model).__name__} ({type(model.decoder).__name__} decoder)"))
    return check_key_interval(key_interval)


def check_frame(frame: torch.Tensor, batch_size: int) -> None:
    """Raise ValueError unless ``frame`` is (batch_size, 3, H, W)."""
    if frame.dim() != 4 or frame.shape[0] != batch_size:
        raise ValueError(f"expected a frame of shape ({batch_size}, 3, H, W), got {tuple(frame.shape)}")


class WindowStreamer:
    """Frame-by-frame inference of a window model with a ring buffer of the last ``w`` encoder features.

    Each ``push`` runs the encoder once on the new frame and the decoder once on the whole window (the ST-NAS FPS
    protocol). While fewer than ``w`` frames have been seen, the window is filled with copies of the first frame's
    features, the data layer's rule at a video start.

    * Causal: ``push`` returns the logits of the frame just pushed (the last slice of the decoded window).
    * Centred: ``push`` returns the logits of the frame pushed ``w - 1 - w // 2`` pushes ago, None until that frame
      exists; ``flush()`` repeats the last frame's features to emit the remaining frames, the data layer's rule at a
      video end.

    Runs under ``torch.no_grad()``. Call ``flush()`` (centred) or ``reset()`` at the end of each video.

    Args:
        model: a ``VideoSegmenter`` (``encode``, ``decoder``, ``causal``, ``out_size``, ``upsample``).
        batch_size: B of every pushed frame (independent streams decoded together).
        window: frames decoded per push; None = the model's own. The decoders are convolutional in time, so any
            window runs (the benchmark's ``--window``); accuracy is best at the trained one.
    """

    protocol = "window"
    runtime = "torch"

    def __init__(self, model: Any, batch_size: int = 1, *, window: int | None = None) -> None:
        self.model = model
        self.batch_size = batch_size
        self.window = int(model.window if window is None else window)
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        self.causal = bool(model.causal)
        self.target_index = self.window - 1 if model.causal else self.window // 2
        # frames between the target and the newest frame of a window: 0 (causal), w - 1 - w // 2 (centred)
        self.lag = self.window - 1 - self.target_index
        self._buffer: collections.deque[torch.Tensor] = collections.deque(maxlen=self.window)
        self._pushed = 0
        self._appended = 0  # pushes plus the edge copies appended by flush()
        self._emitted = 0
        self._out_hw: tuple[int, int] | None = None
        if model.training:
            logger.warning("streaming a model in training mode: BatchNorm uses batch statistics of each window")

    def reset(self) -> None:
        """Forget all frames (start of a new video)."""
        self._buffer.clear()
        self._pushed = 0
        self._appended = 0
        self._emitted = 0
        self._out_hw = None

    @property
    def pending(self) -> int:
        """Frames pushed whose logits have not been returned yet."""
        return self._pushed - self._emitted

    @torch.no_grad()
    def push(self, frame: torch.Tensor) -> torch.Tensor | None:
        """Add one frame (B, 3, H, W); returns (B, K, H_out, W_out) logits of the frame now complete, or None."""
        check_frame(frame, self.batch_size)
        self._out_hw = self.model.out_size or (int(frame.shape[-2]), int(frame.shape[-1]))
        feat = self.model.encode(frame)  # (B, C, h, w)
        self._pushed += 1
        return self._advance(feat)

    @torch.no_grad()
    def flush(self) -> list[torch.Tensor]:
        """End of the video: emit every pending frame (repeating the last features), then ``reset()``.

        Returns:
            The pending frames' logits in frame order, each (B, K, H_out, W_out); [] for causal streams.
        """
        out: list[torch.Tensor] = []
        while self.pending > 0:
            logits = self._advance(self._buffer[-1])
            if logits is not None:
                out.append(logits)
        self.reset()
        return out

    def _advance(self, feat: torch.Tensor) -> torch.Tensor | None:
        """Append ``feat`` (B, C, h, w) to the window; decode it if the window's target frame has been pushed."""
        if not self._buffer:
            self._buffer.extend([feat] * self.window)  # edge repetition at the video start
        else:
            self._buffer.append(feat)
        self._appended += 1
        # the window's newest entry is append number _appended - 1, so its target frame is `lag` appends earlier
        if self._appended - 1 - self.lag < 0:
            return None
        window = _stack(self._buffer)  # (B, C, T=w, h', w'), or one such per scale for multi-scale models
        logits = self.model.decoder(window)[:, :, self.target_index]  # (B, K, h', w')
        self._emitted += 1
        assert self._out_hw is not None
        return self.model.upsample(logits, self._out_hw)  # (B, K, H_out, W_out)


def _stack(buffer: Sequence[Any]) -> Any:
    """The window of a ring buffer: features (B, C, h, w) -> (B, C, T, h, w); a tuple of per-scale maps (a
    multi-scale model's ``encode``) -> a list of such windows, one per scale."""
    if isinstance(buffer[0], torch.Tensor):
        return torch.stack(tuple(buffer), dim=2)
    return [torch.stack([f[i] for f in buffer], dim=2) for i in range(len(buffer[0]))]


class IncrementalStreamer:
    """The ``Streamer`` of a causal window model that decodes one time step per frame
    (``vidnas.models.incremental.IncrementalDecoder``).

    Same outputs as ``WindowStreamer`` (within float rounding; tested over streams of 3w + 3 frames), at the cost of one
    encoder pass plus one decoder step per push instead of one decoder pass over the whole window. Causal only, so
    ``lag`` is 0, ``pending`` is always 0 and ``flush()`` returns [].

    Args:
        model: a causal ``VideoSegmenter`` or ``MultiScaleSegmenter`` (``encode``, ``decoder``, ``out_size``,
            ``upsample``).
        batch_size: B of every pushed frame.
        window: the window whose decode is reproduced; None = the model's own.

    Attributes:
        decoder_module: the ``IncrementalDecoder`` each push calls (benchmarks hook it to time the decoder).

    Raises:
        IncrementalError: the model has no incremental form (``incremental_support`` says why).
    """

    lag = 0
    causal = True
    protocol = "incremental"
    runtime = "torch"

    def __init__(self, model: Any, batch_size: int = 1, *, window: int | None = None) -> None:
        reason = incremental_support(model)
        if reason is not None:
            raise IncrementalError(f"incremental decoding is not available: {reason}")
        self.model = model
        self.batch_size = batch_size
        self.window = int(model.window if window is None else window)
        self.decoder_module = IncrementalDecoder(model.decoder, self.window)
        self._state: tuple[torch.Tensor, ...] = ()
        self._pushed = 0
        if model.training:
            logger.warning("streaming a model in training mode: BatchNorm uses batch statistics of each step")

    @property
    def pending(self) -> int:
        """Frames pushed whose logits have not been returned: always 0 (causal)."""
        return 0

    @property
    def state_nbytes(self) -> int:
        """Bytes held by the decoder state (constant after the first push)."""
        return sum(t.numel() * t.element_size() for t in self._state)

    def reset(self) -> None:
        """Forget the state (start of a new video)."""
        self._state = ()
        self._pushed = 0

    @torch.no_grad()
    def push(self, frame: torch.Tensor) -> torch.Tensor:
        """Add one frame (B, 3, H, W); returns its logits (B, K, H_out, W_out)."""
        check_frame(frame, self.batch_size)
        out_hw = self.model.out_size or (int(frame.shape[-2]), int(frame.shape[-1]))
        feat = self.model.encode(frame)  # (B, C, h, w), or a tuple of per-scale maps (multi-scale models)
        logits, self._state = self.decoder_module(feat, self._state)  # (B, K, h, w)
        self._pushed += 1
        return self.model.upsample(logits, out_hw)

    @torch.no_grad()
    def flush(self) -> list[torch.Tensor]:
        """End of a video: nothing is pending; resets and returns []."""
        self.reset()
        return []


def window_model_streamer(model: Any, *, batch_size: int = 1, window: int | None = None,
                          incremental: bool | None = None) -> WindowStreamer | IncrementalStreamer:
    """The streamer a window model's ``stream()`` returns (``VideoSegmenter``, ``MultiScaleSegmenter``).

    ``incremental=False``: the window decode (``WindowStreamer``). ``None``: incremental when the model supports it
    (causal, ``incremental_support`` is None), else the window decode. ``True``: incremental, or
    ``IncrementalError`` (a ValueError) saying why not. Both streamers give the window decode's logits.
    """
    if incremental is False:
        return WindowStreamer(model, batch_size=batch_size, window=window)
    reason = incremental_support(model)
    if reason is None:
        return IncrementalStreamer(model, batch_size=batch_size, window=window)
    if incremental:
        raise IncrementalError(f"incremental=True: {reason}; use incremental=False (the window decode)")
    return WindowStreamer(model, batch_size=batch_size, window=window)


Step = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


class FrameStreamer:
    """Frame-by-frame inference of a frame model (window 1, causal): ``push`` returns the frame's own logits.

    ``step(frame, state) -> (logits, state)`` carries whatever the model needs from frame to frame (nothing for
    arch2; the previous ``dec`` and ``layer4`` for a dynamic-cell model); the state starts as None after every
    ``reset()``. Nothing is ever pending: ``flush()`` returns [] and resets.

    Args:
        step: the model's step function, its streaming options bound (e.g. ``partial(model.step, key_interval=3)``).
        batch_size: B of every pushed frame.
        training: the model is in training mode (a warning: BatchNorm would use each frame's statistics).
    """

    window = 1
    lag = 0
    causal = True
    protocol = "frame"
    runtime = "torch"

    def __init__(self, step: Step, batch_size: int = 1, *, training: bool = False) -> None:
        self.step = step
        self.batch_size = batch_size
        self._state: Any = None
        self._pushed = 0
        if training:
            logger.warning("streaming a model in training mode: BatchNorm uses the statistics of each frame")

    @property
    def pending(self) -> int:
        """Frames pushed whose logits have not been returned: always 0."""
        return 0

    @property
    def frames_seen(self) -> int:
        """Frames pushed since the last reset."""
        return self._pushed

    def reset(self) -> None:
        """Forget the carried state (start of a new video)."""
        self._state = None
        self._pushed = 0

    @torch.no_grad()
    def push(self, frame: torch.Tensor) -> torch.Tensor:
        """Add one frame (B, 3, H, W); returns its logits (B, K, H_out, W_out)."""
        check_frame(frame, self.batch_size)
        logits, self._state = self.step(frame, self._state)
        self._pushed += 1
        return logits

    @torch.no_grad()
    def flush(self) -> list[torch.Tensor]:
        """End of a video: nothing is pending; resets and returns []."""
        self.reset()
        return []
