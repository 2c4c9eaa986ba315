"""``MultiScaleSegmenter``: the video model of the multi-scale decoders (``decoder="mstcn"``,
``vidnas.models.decoders.mstcn``): the encoder's maps at the chosen strides for every frame, the decoder over a window
of them, bilinear upsampling to the image.

It streams with the window protocol (one encoder pass per frame, a ring buffer of every scale's features, one decode
of the window per push) or, causal, incrementally (one decoder time step per push, the same logits:
``vidnas.models.incremental``, which reads the decoder's dataflow from its ``incremental_program``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vidnas.models.decoders.mstcn import MultiScaleDecoder, StaticFusionDecoder
from vidnas.models.incremental import IncrementalStreamer, window_model_streamer
from vidnas.models.layers import encode_clip, resize_to
from vidnas.models.streaming import WindowStreamer

__all__ = ["STRIDE_INDEX", "MultiScaleSegmenter"]

logger = logging.getLogger(__name__)

STRIDE_INDEX: dict[int, int] = {4: 0, 8: 1, 16: 2, 32: 3}  # encoder output index of each stride


class MultiScaleSegmenter(nn.Module):
    """Encoder + ``MultiScaleDecoder`` over a window of frames + bilinear upsampling (``VideoSegmenter``-compatible).

    Args:
        encoder: an ``Encoder`` (four NCHW maps at strides 4/8/16/32).
        decoder: the multi-scale decoder.
        num_classes: K.
        scales: strides the decoder reads, coarse first (e.g. ``(32, 8, 4)``).
        window: frames per clip w.
        causal: the target frame is the last of its window (True) or its centre.
        out_size: (H_out, W_out) of the logits; None = the input size.
    """

    def __init__(self, encoder: nn.Module, decoder: MultiScaleDecoder, num_classes: int, *, scales: Sequence[int],
                 window: int, causal: bool = True, out_size: Sequence[int] | None = None) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.encoder = encoder
        self.decoder = decoder
        self.num_classes = num_classes
        self.scales = tuple(int(s) for s in scales)
        self.indices = tuple(STRIDE_INDEX[s] for s in self.scales)
        self.window = window
        self.causal = causal
        self.out_size = None if out_size is None else (int(out_size[0]), int(out_size[1]))

    @property
    def target_index(self) -> int:
        """Index of the emitted frame in a window: ``w - 1`` (causal) or ``w // 2`` (centred)."""
        return self.window - 1 if self.causal else self.window // 2

    def translate_init_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A per-frame arch2 checkpoint's ``state_dict`` in this model's names, for ``vidnas train --init``.

        With the arch2 fusion, arch2's decoder maps onto the per-frame part (``decoder.adapt.{0,1,2}`` -> the stride
        4/8/16 laterals, ``adapt.3`` -> the stride-32 lateral of ``arch2_res``, ``gap``, ``down``, ``block1..3``,
        classifier and auxiliary heads; 2-D weights gain a time axis of 1); the encoder keys are the same. Any other
        state (or another decoder here) comes back unchanged, so the shape check of the caller still applies.
        """
        if not isinstance(self.decoder, StaticFusionDecoder) or "decoder.adapt.0.0.weight" not in state:
            return state
        lateral = {"0": "laterals.2", "1": "laterals.1", "2": "laterals.0", "3": "top_lateral"}
        own = self.state_dict()
        out: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if not key.startswith("decoder."):
                out[key] = value
                continue
            part = key.split(".")[1:]
            if part[0] == "adapt":  # ConvBNReLU (0 conv, 1 BN) -> ConvBNReLU3d (0 STConv3d.conv, 1 BN)
                rest = ["0", "conv", *part[3:]] if part[2] == "0" else part[2:]
                name = ".".join([lateral[part[1]], *rest])
            elif part[0] == "gap":  # Sequential(pool, conv, relu) -> PerFrame(_GapAdd).conv
                name = ".".join(["gap.module.conv", *part[2:]])
            elif part[0] == "down":
                name = ".".join(["down.module", *part[1:]])
            elif part[0].startswith("block"):
                name = ".".join([f"blocks.{int(part[0][5:]) - 1}.module", *part[1:]])
            else:  # classifier, aux_heads
                name = ".".join(part)
            name = "decoder." + name
            if name in own and own[name].dim() == value.dim() + 1:
                value = value.unsqueeze(2)  # (C_out, C_in, kh, kw) -> (C_out, C_in, 1, kh, kw)
            out[name] = value
        return out

    def encode(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N, 3, H, W) -> the encoder maps at ``scales``, coarse first, each (N, C_s, H/s, W/s) (contiguous, also
        when the encoder runs channels-last, as ``VideoSegmenter.encode``)."""
        maps = self.encoder(frames)
        return tuple(maps[i].contiguous() for i in self.indices)

    def forward(self, frames: torch.Tensor, grad_frames: Sequence[bool] | None = None) -> torch.Tensor:
        """Clip forward: (B, T, 3, H, W) -> (B, T, K, H_out, W_out) logits, one map per frame (``grad_frames``: as
        ``VideoSegmenter.forward``)."""
        if frames.dim() != 5:
            raise ValueError(f"expected frames of shape (B, T, 3, H, W), got {tuple(frames.shape)}")
        b, t, c, h, w = frames.shape
        feats = encode_clip(self.encode, frames, grad_frames)  # [(B, C_s, T, h_s, w_s), ...] coarse first
        out = self.decoder(feats)  # (B, K, T, h', w'), or (logits, [aux, ...]) from a decoder with auxiliary heads

        def up(y: torch.Tensor) -> torch.Tensor:  # (B, K, T, h', w') -> (B, T, K, H, W)
            k, hh, ww = y.shape[1], y.shape[-2], y.shape[-1]
            z = self.upsample(y.transpose(1, 2).reshape(b * t, k, hh, ww), self.out_size or (h, w))
            return z.reshape(b, t, k, *z.shape[-2:])

        if isinstance(out, tuple):  # training mode with auxiliary heads: what the training engine's loss reads
            return up(out[0]), [up(a) for a in out[1]]
        return up(out)

    def upsample(self, logits: torch.Tensor, out_hw: Sequence[int]) -> torch.Tensor:
        """(N, K, h, w) -> (N, K, H, W), bilinear, align_corners=False."""
        return resize_to(logits, out_hw)

    def stream(self, batch_size: int = 1, *, key_interval: int | None = None, window: int | None = None,
               incremental: bool | None = None) -> WindowStreamer | IncrementalStreamer:
        """A streamer over this model, as ``VideoSegmenter.stream``: an ``IncrementalStreamer`` (one encoder pass
        plus one decoder time step per push; the default for causal models) or a ``WindowStreamer`` (ring buffers of
        every scale's features, one decode of the window per push; ``incremental=False``, and always for centred
        models). Both give the logits of the window decode.

        ``key_interval`` is refused (dynamic-cell models only); ``incremental=True`` on a centred model raises
        ``IncrementalError`` (a ValueError) saying why.
        """
        if key_interval is not None:
            raise ValueError("key_interval applies to dynamic-cell models only; this is a multi-scale window model")
        return window_model_streamer(self, batch_size=batch_size, window=window, incremental=incremental)

    def protocol_parts(self, frame: torch.Tensor) -> tuple[tuple[Any, tuple[Any, ...]], tuple[Any, tuple[Any, ...]]]:
        """The encoder call and the decoder call of one streamed frame (the full window), as ``(fn, args)`` pairs,
        for FLOP counting.

        Args:
            frame: (1, 3, H, W).
        """
        with torch.inference_mode():
            feats = self.encode(frame)  # per scale (1, C_s, h_s, w_s)
        window = [f.unsqueeze(2).expand(-1, -1, self.window, -1, -1).contiguous() for f in feats]  # (1, C_s, w, ..)
        return (self.encode, (frame,)), (self.decoder, (window,))
