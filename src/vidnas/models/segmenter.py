"""VideoSegmenter: a per-frame encoder plus a decoder over a window of frames, for training and for streaming.

Clip forward (training, evaluation): ``(B, T, 3, H, W) -> (B, T, K, H, W)``; the mask of frame t is slice t.
Streaming (inference, ``vidnas.models.streaming``): ``stream()`` returns, for a causal model, an
``IncrementalStreamer`` (one encoder pass plus one decoder *time step* per new frame, the same logits as the window
decode: ``vidnas.models.incremental``), and for a centred model (or ``incremental=False``) a ``WindowStreamer`` (a
ring buffer of the last ``w`` encoder features, one decode of the full window per frame: the ST-NAS FPS protocol
[ST-NAS Sec. 4 "Metrics"]).

``MultiScaleSegmenter`` (``vidnas.models.multiscale``) is this model with one encoder map per scale.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from vidnas.models.layers import encode_clip, resize_to
from vidnas.models.streaming import IncrementalStreamer, WindowStreamer, check_stream_options, window_model_streamer

__all__ = ["VideoSegmenter"]

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
            (N, C, h, w), the encoder map at ``feature_index`` (contiguous, also when the encoder runs channels-last:
            ``vidnas.models.fastpath``).
        """
        return self.encoder(frames)[self.feature_index].contiguous()

    def decode(self, features: torch.Tensor | list[torch.Tensor], out_hw: Sequence[int]) -> torch.Tensor:
        """Decode stacked features and upsample.

        Args:
            features: (B, C, T, h, w) (a multi-scale model: one such window per scale, ``_decoder_input``).
            out_hw: (H, W) of the returned logits.

        Returns:
            (B, T, K, H, W) logits; a decoder with auxiliary heads in training mode: ``(logits, [aux, ...])``, each
            (B, T, K, H, W), what the training engine's loss reads.
        """
        out = self.decoder(features)  # (B, K, T, h, w), or (logits, [aux, ...])
        if isinstance(out, tuple):
            return self._upsample_clip(out[0], out_hw), [self._upsample_clip(a, out_hw) for a in out[1]]
        return self._upsample_clip(out, out_hw)

    def _upsample_clip(self, logits: torch.Tensor, out_hw: Sequence[int]) -> torch.Tensor:
        """(B, K, T, h, w) -> (B, T, K, H, W), every frame upsampled."""
        b, k, t, h, w = logits.shape
        logits = logits.transpose(1, 2).reshape(b * t, k, h, w)  # (B*T, K, h, w)
        logits = self.upsample(logits, out_hw)  # (B*T, K, H, W)
        return logits.reshape(b, t, k, *logits.shape[-2:])  # (B, T, K, H, W)

    def _decoder_input(self, windows: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """The decoder's input from ``encode_clip``'s windows, one (B, C, T, h, w) per map ``encode`` returns: here
        the one window."""
        (window,) = windows
        return window

    def forward(self, frames: torch.Tensor, grad_frames: Sequence[bool] | None = None) -> torch.Tensor:
        """Clip forward.

        Args:
            frames: (B, T, 3, H, W), ImageNet-normalised.
            grad_frames: per time step, whether gradients reach the encoder through it (None: all; training with
                ``train.context_grad=false``, ``vidnas.models.layers.encode_clip``).

        Returns:
            (B, T, K, H_out, W_out) logits, one map per frame (with auxiliary heads in training mode: ``decode``).
        """
        if frames.dim() != 5:
            raise ValueError(f"expected frames of shape (B, T, 3, H, W), got {tuple(frames.shape)}")
        h, w = frames.shape[-2:]
        windows = encode_clip(self.encode, frames, grad_frames)  # one (B, C, T, h', w') per encoder map
        return self.decode(self._decoder_input(windows), self.out_size or (h, w))

    def stream(self, batch_size: int = 1, *, key_interval: int | None = None, window: int | None = None,
               incremental: bool | None = None) -> WindowStreamer | IncrementalStreamer:
        """A stateful streamer over this model; eval mode first.

        Both streamers give the logits of the window decode of window ``w`` (the frame and its ``w - 1``
        predecessors, the first frame repeated at a video start); they differ in cost per frame:

        * ``IncrementalStreamer`` (``incremental=True``, the default for causal models): one encoder pass plus one
          decoder time step (``vidnas.models.incremental``);
        * ``WindowStreamer`` (``incremental=False``, and always for centred models): one encoder pass plus one
          decode of the whole window, the ST-NAS FPS protocol.

        Args:
            batch_size: B of every pushed frame.
            key_interval: dynamic-cell models only; must be None here (ValueError otherwise).
            window: frames per decoded window; None = ``self.window``.
            incremental: None = incremental when the model is causal; True = incremental (``IncrementalError``, a
                ValueError saying why, for a centred model); False = the window decode.
        """
        check_stream_options(self, key_interval=key_interval)
        return window_model_streamer(self, batch_size=batch_size, window=window, incremental=incremental)

    def upsample(self, logits: torch.Tensor, out_hw: Sequence[int]) -> torch.Tensor:
        """(N, K, h, w) -> (N, K, H, W), bilinear, align_corners=False."""
        return resize_to(logits, out_hw)
