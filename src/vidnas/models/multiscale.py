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

from vidnas.models.decoders.arch2_space import Arch2SpaceDecoder
from vidnas.models.decoders.mstcn import MultiScaleDecoder, StaticFusionDecoder
from vidnas.models.segmenter import VideoSegmenter

__all__ = ["STRIDE_INDEX", "MultiScaleSegmenter"]

logger = logging.getLogger(__name__)

STRIDE_INDEX: dict[int, int] = {4: 0, 8: 1, 16: 2, 32: 3}  # encoder output index of each stride


class MultiScaleSegmenter(VideoSegmenter):
    """A ``VideoSegmenter`` whose decoder (``MultiScaleDecoder``) reads one encoder map per scale: encoder + decoder
    over a window of frames + bilinear upsampling.

    What differs from ``VideoSegmenter``: ``encode`` returns one map per scale, the decoder takes one window per scale
    (a list, coarse first), and a decoder with auxiliary heads (``StaticFusionDecoder``) returns them in training mode
    (``VideoSegmenter.decode``). Clip forward, streaming (``stream``) and upsampling are ``VideoSegmenter``'s;
    ``feature_index`` is not read (``encode`` reads ``scales``).

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
        super().__init__(encoder, decoder, num_classes, window=window, causal=causal, out_size=out_size)
        self.scales = tuple(int(s) for s in scales)
        self.indices = tuple(STRIDE_INDEX[s] for s in self.scales)

    def translate_init_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A per-frame arch2 checkpoint's ``state_dict`` in this model's names, for ``vidnas train --init``.

        With an ``arch2_space`` decoder, arch2's decoder tensors land in the slots holding arch2's own ops
        (``Arch2SpaceDecoder.arch2_state``). With the arch2 fusion, arch2's decoder maps onto the per-frame part
        (``decoder.adapt.{0,1,2}`` -> the stride 4/8/16 laterals, ``adapt.3`` -> the stride-32 lateral of
        ``arch2_res``, ``gap``, ``down``, ``block1..3``, classifier and auxiliary heads). In both, 2-D weights gain a
        time axis of 1 where the model's layer is 3-D, and the encoder keys are the same. Any other
        state (or another decoder here) comes back unchanged, so the shape check of the caller still applies.
        """
        if "decoder.adapt.0.0.weight" not in state:
            return state
        if isinstance(self.decoder, Arch2SpaceDecoder):
            decoder = self.decoder.arch2_state({k[len("decoder."):]: v for k, v in state.items()
                                                if k.startswith("decoder.")})
            own = self.state_dict()
            out = {k: v for k, v in state.items() if not k.startswith("decoder.")}
            for key, value in decoder.items():
                name = "decoder." + key
                out[name] = value.unsqueeze(2) if name in own and own[name].dim() == value.dim() + 1 else value
            return out
        if not isinstance(self.decoder, StaticFusionDecoder):
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

    def _decoder_input(self, windows: list[torch.Tensor]) -> list[torch.Tensor]:
        """The decoder's input: every scale's window (B, C_s, T, h_s, w_s), coarse first."""
        return list(windows)

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
