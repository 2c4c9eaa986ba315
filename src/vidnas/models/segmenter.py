"""VideoSegmenter: a per-frame encoder plus a decoder over a window of frames, for training and for streaming.

Clip forward (training, evaluation): ``(B, T, 3, H, W) -> (B, T, K, H, W)``; the mask of frame t is slice t.
Streaming (inference, the ST-NAS FPS protocol): ``stream()`` keeps a ring buffer of the last ``w`` encoder features,
so each new frame costs one encoder pass plus one decode of the full window [ST-NAS Sec. 4 "Metrics"].

Window rule shared with the data layer (SPEC "Clip model"): the clip of target frame t holds frames
``t - w + 1 .. t`` (causal) or ``t - w // 2 .. t - w // 2 + w - 1`` (centred: target at index ``w // 2``), with frame
indices clamped to the video, i.e. the first (last) frame repeated past the video's start (end). The streamer builds
exactly these windows, so its outputs equal the clip forward's target-frame outputs (tested).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VideoSegmenter", "Streamer"]

logger = logging.getLogger(__name__)


class VideoSegmenter(nn.Module):
    """Encoder + temporal decoder + bilinear upsampling.

    Args:
        encoder: ``forward(x: (N, 3, H, W)) -> list of NCHW maps``; the map at ``feature_index`` is decoded.
        decoder: ``forward((B, C, T, h, w)) -> (B, K, T, h, w)``.
        num_classes: K.
        window: frames per clip w (1 for per-frame models).
        causal: the target frame is the last of its window (True) or its centre (False).
        out_size: (H_out, W_out) of the logits; None = the input size.
        feature_index: which encoder map the decoder reads (-1: the last, stride 32, as the SP-TCN does).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        num_classes: int,
        *,
        window: int,
        causal: bool = True,
        out_size: Sequence[int] | None = None,
        feature_index: int = -1,
    ) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.encoder = encoder
        self.decoder = decoder
        self.num_classes = num_classes
        self.window = window
        self.causal = causal
        self.out_size = None if out_size is None else (int(out_size[0]), int(out_size[1]))
        self.feature_index = feature_index

    @property
    def target_index(self) -> int:
        """Index of the supervised / emitted frame inside a window: ``w - 1`` (causal) or ``w // 2`` (centred)."""
        return self.window - 1 if self.causal else self.window // 2

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Encoder features of independent frames.

        Args:
            frames: (N, 3, H, W).

        Returns:
            (N, C, h, w), the encoder map at ``feature_index``.
        """
        return self.encoder(frames)[self.feature_index]

    def decode(self, features: torch.Tensor, out_hw: Sequence[int]) -> torch.Tensor:
        """Decode stacked features and upsample.

        Args:
            features: (B, C, T, h, w).
            out_hw: (H, W) of the returned logits.

        Returns:
            (B, T, K, H, W) logits.
        """
        logits = self.decoder(features)  # (B, K, T, h, w)
        b, k, t, h, w = logits.shape
        logits = logits.transpose(1, 2).reshape(b * t, k, h, w)  # (B*T, K, h, w)
        logits = self._upsample(logits, out_hw)  # (B*T, K, H, W)
        return logits.reshape(b, t, k, *logits.shape[-2:])  # (B, T, K, H, W)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Clip forward.

        Args:
            frames: (B, T, 3, H, W), ImageNet-normalised.

        Returns:
            (B, T, K, H_out, W_out) logits, one map per frame.
        """
        if frames.dim() != 5:
            raise ValueError(f"expected frames of shape (B, T, 3, H, W), got {tuple(frames.shape)}")
        b, t, c, h, w = frames.shape
        feats = self.encode(frames.reshape(b * t, c, h, w))  # (B*T, C, h', w')
        feats = feats.reshape(b, t, *feats.shape[1:]).transpose(1, 2)  # (B, C, T, h', w')
        return self.decode(feats, self.out_size or (h, w))

    def stream(self, batch_size: int = 1) -> Streamer:
        """A stateful streamer over this model (see ``Streamer``). Put the model in eval mode first."""
        return Streamer(self, batch_size=batch_size)

    def _upsample(self, logits: torch.Tensor, out_hw: Sequence[int]) -> torch.Tensor:
        """(N, K, h, w) -> (N, K, H, W), bilinear, align_corners=False."""
        if tuple(logits.shape[-2:]) == tuple(out_hw):
            return logits
        return F.interpolate(logits, size=tuple(out_hw), mode="bilinear", align_corners=False)


class Streamer:
    """Frame-by-frame inference with a ring buffer of the last ``w`` encoder features.

    Each ``push`` runs the encoder once on the new frame and the decoder once on the whole window (the ST-NAS FPS
    protocol). While fewer than ``w`` frames have been seen, the window is filled with copies of the first frame's
    features, the data layer's rule at a video start.

    * Causal: ``push`` returns the logits of the frame just pushed (the last slice of the decoded window).
    * Centred: ``push`` returns the logits of the frame pushed ``w - 1 - w // 2`` pushes ago (``w // 2`` for odd w),
      None until that frame exists; ``flush()`` repeats the last frame's features to emit the remaining frames, the
      data layer's rule at a video end.

    Runs under ``torch.no_grad()``. Call ``flush()`` (centred) or ``reset()`` at the end of each video.

    Args:
        model: the VideoSegmenter.
        batch_size: B of every pushed frame (independent streams decoded together).
    """

    def __init__(self, model: VideoSegmenter, batch_size: int = 1) -> None:
        self.model = model
        self.batch_size = batch_size
        self.window = model.window
        self.target_index = model.target_index
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
        """Add one frame.

        Args:
            frame: (B, 3, H, W).

        Returns:
            (B, K, H_out, W_out) logits of the frame now complete (see the class docstring), or None.
        """
        if frame.dim() != 4 or frame.shape[0] != self.batch_size:
            raise ValueError(f"expected a frame of shape ({self.batch_size}, 3, H, W), got {tuple(frame.shape)}")
        self._out_hw = self.model.out_size or (int(frame.shape[-2]), int(frame.shape[-1]))
        feat = self.model.encode(frame)  # (B, C, h, w)
        self._pushed += 1
        return self._advance(feat)

    @torch.no_grad()
    def flush(self) -> list[torch.Tensor]:
        """End of the video: emit every pending frame, then ``reset()``.

        Centred windows repeat the last frame's features (the data layer's rule at a video end) until every pushed
        frame has been returned; causal streams have nothing pending and return [].

        Returns:
            The pending frames' logits in frame order, each (B, K, H_out, W_out).
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
        window = torch.stack(tuple(self._buffer), dim=2)  # (B, C, T=w, h', w')
        logits = self.model.decoder(window)[:, :, self.target_index]  # (B, K, h', w')
        self._emitted += 1
        assert self._out_hw is not None
        return self.model._upsample(logits, self._out_hw)  # (B, K, H_out, W_out)
