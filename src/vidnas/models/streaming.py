"""Frame-by-frame inference for every model kind: the ``Streamer`` protocol and its two PyTorch implementations.

Every model has ``model.stream(batch_size=1, *, key_interval=None, window=None) -> Streamer``; streaming settings are
arguments of that call, never attributes changed on a loaded model.

* ``WindowStreamer`` (``VideoSegmenter``: SP-TCN, ST-NAS-derived, per-frame head): a ring buffer of the last ``w``
  encoder features; each push runs the encoder once and the decoder on the whole window [ST-NAS Sec. 4 "Metrics"].
* ``FrameStreamer`` (frame-by-frame models: the arch2 static segmenter, dynamic-cell models): the model's
  ``step(frame, state) -> (logits, state)`` carries whatever it needs from one frame to the next.
* ``IncrementalStreamer`` (``vidnas.models.incremental``; causal ``VideoSegmenter``s, their default): one encoder
  pass plus one decoder time step per push, the same logits as ``WindowStreamer``.

The onnxruntime streamer (``vidnas.export.runtime.OrtStreamer``) follows the same protocol with numpy arrays.

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

__all__ = ["Streamer", "WindowStreamer", "FrameStreamer", "check_frame"]

logger = logging.getLogger(__name__)


@runtime_checkable
class Streamer(Protocol):
    """What every streamer offers (PyTorch tensors here; numpy arrays for ``OrtStreamer``).

    Attributes:
        window: frames the model sees per emitted frame (1 for frame-by-frame models).
        lag: pushes between a frame and its logits (0 for causal models; ``w - 1 - w // 2`` centred).
        protocol: what one push decodes: ``window`` (the whole window), ``incremental`` (one decoder time step of a
            window model) or ``frame`` (a frame-by-frame model's step).
    """

    window: int
    lag: int
    protocol: str

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

    def __init__(self, model: Any, batch_size: int = 1, *, window: int | None = None) -> None:
        self.model = model
        self.batch_size = batch_size
        self.window = int(model.window if window is None else window)
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
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
    protocol = "frame"

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
