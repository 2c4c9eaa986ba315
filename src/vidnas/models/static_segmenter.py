"""The static segmenter ("arch2"): the per-frame network the dynamic-cell search builds on [CELLS Sec. 3.1, Fig. 2].

``arch2`` stays its user-facing name (``--model arch2``, ``model.decoder=arch2``), the name the paper uses.

arch2 is an encoder-decoder network found by Nekrasov et al.'s earlier static search ("Fast NAS of compact semantic
segmentation models via auxiliary cells", CVPR 2019): a MobileNetV2 encoder (EfficientNet-Lite0 also works) and a
light-weight decoder (``vidnas.models.decoders.static.StaticDecoder``, reconstructed) that aggregates the encoder
outputs at strides 4/8/16/32 at 64 channels and predicts at stride 8. The dynamic-cell search records three of its
tensors (SPEC "Dynamic-cell search"):

* ``layer2`` (stride 8), ``layer3`` (stride 16), ``layer4`` (stride 32): encoder outputs;
* ``dec`` (64 channels, stride 8): the decoder's output before the final classifier;
* ``pred`` (K channels, stride 8): the classifier's output.

Shapes: clips ``(B, T, 3, H, W)`` in, logits ``(B, T, K, H, W)`` out, computed frame by frame (window 1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vidnas.config import Config
from vidnas.models.decoders.static import ARCH2_CHANNELS, StaticDecoder
from vidnas.models.encoders import build_encoder
from vidnas.models.layers import resize_to
from vidnas.models.streaming import FrameStreamer, check_stream_options

__all__ = ["StaticSegmenter", "build_static_segmenter"]

logger = logging.getLogger(__name__)


class StaticSegmenter(nn.Module):
    """Encoder + arch2 decoder, applied to every frame independently; ``VideoSegmenter``-compatible.

    In training mode with auxiliary heads, ``forward`` returns ``(logits, [aux logits, ...])`` (every tensor
    ``(B, T, K, H, W)``), which the training engine turns into ``CE + aux_weight * sum(aux CE)``; in eval mode it
    returns the logits only.

    Args:
        encoder: a ``vidnas.models.encoders.Encoder`` (four NCHW maps at strides 4/8/16/32).
        num_classes: K.
        channels: decoder width (64).
        aux: auxiliary heads on the first two decoder blocks.
        out_size: (H_out, W_out) of the logits; None = the input size.
        decoder: a built decoder with ``StaticDecoder``'s contract (``build_model`` passes the arch2 family's);
            None = ``StaticDecoder(encoder.out_channels, num_classes, channels=channels, aux=aux)``.
    """

    window = 1
    causal = True

    def __init__(self, encoder: nn.Module, num_classes: int, *, channels: int = ARCH2_CHANNELS, aux: bool = True,
                 out_size: Sequence[int] | None = None, decoder: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder if decoder is not None else StaticDecoder(list(encoder.out_channels), num_classes,
                                                                         channels=channels, aux=aux)
        self.num_classes = num_classes
        self.channels = self.decoder.channels
        self.out_size = None if out_size is None else (int(out_size[0]), int(out_size[1]))

    @property
    def target_index(self) -> int:
        """Every frame is its own window: index 0."""
        return 0

    @property
    def encoder_channels(self) -> list[int]:
        """Channels of layer1..layer4."""
        return list(self.encoder.out_channels)

    def encode(self, x: torch.Tensor, stages: int | None = None) -> list[torch.Tensor]:
        """(N, 3, H, W) -> [layer1, layer2, layer3, layer4] at strides 4, 8, 16, 32 (``stages=n``: the first n)."""
        return self.encoder(x) if stages is None else self.encoder(x, stages)

    def decode(self, feats: Sequence[torch.Tensor]) -> dict[str, Any]:
        """Four encoder maps -> ``{"dec": (N, 64, H/8, W/8), "pred": (N, K, H/8, W/8), "aux": [...]}``."""
        return self.decoder(feats)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The tensors the dynamic-cell search records [CELLS Sec. 3.1].

        Args:
            x: (N, 3, H, W).

        Returns:
            ``layer2`` (N, C2, H/8, W/8), ``layer3`` (N, C3, H/16, W/16), ``layer4`` (N, C4, H/32, W/32),
            ``dec`` (N, 64, H/8, W/8), ``pred`` (N, K, H/8, W/8).
        """
        feats = self.encode(x)
        out = self.decode(feats)
        return {"layer2": feats[1], "layer3": feats[2], "layer4": feats[3], "dec": out["dec"], "pred": out["pred"]}

    def forward(self, frames: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Per-frame forward of a clip.

        Args:
            frames: (B, T, 3, H, W), ImageNet-normalised.

        Returns:
            (B, T, K, H_out, W_out) logits; in training mode with aux heads ``(logits, [aux, aux])`` of that shape.
        """
        if frames.dim() != 5:
            raise ValueError(f"expected frames of shape (B, T, 3, H, W), got {tuple(frames.shape)}")
        b, t, c, h, w = frames.shape
        out_hw = self.out_size or (h, w)
        out = self.decode(self.encode(frames.reshape(b * t, c, h, w)))  # per frame: (B*T, ...)

        def up(x: torch.Tensor) -> torch.Tensor:
            x = resize_to(x, out_hw)  # (B*T, K, H_out, W_out)
            return x.reshape(b, t, *x.shape[1:])  # (B, T, K, H_out, W_out)

        logits = up(out["pred"])
        if self.training and out["aux"]:
            return logits, [up(a) for a in out["aux"]]
        return logits

    def protocol_parts(self, frame: torch.Tensor) -> tuple[tuple[Any, tuple[Any, ...]], tuple[Any, tuple[Any, ...]]]:
        """The encoder call and the decoder call of one streamed frame, as ``(fn, args)`` pairs (for FLOP counting).

        Args:
            frame: (1, 3, H, W).
        """
        with torch.inference_mode():
            feats = self.encode(frame)  # 4 x (1, C_i, h_i, w_i)
        return (self.encode, (frame,)), (self.decode, (feats,))

    def step(self, frame: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """One streamed frame (B, 3, H, W) -> (logits (B, K, H_out, W_out), None): no state is carried."""
        pred = self.decode(self.encode(frame))["pred"]
        return resize_to(pred, self.out_size or frame.shape[-2:]), None

    def stream(self, batch_size: int = 1, *, key_interval: int | None = None,
               window: int | None = None, incremental: bool | None = None) -> FrameStreamer:
        """A ``FrameStreamer`` (``vidnas.models.streaming``); put the model in eval mode first.

        Args:
            batch_size: B of every pushed frame.
            key_interval: dynamic-cell models only; must be None here (ValueError otherwise).
            window: accepted and ignored, so one call streams any model: a frame model decodes one frame per push.
            incremental: accepted and ignored: a frame model already runs one step per frame.
        """
        check_stream_options(self, key_interval=key_interval)
        return FrameStreamer(self.step, batch_size=batch_size, training=self.training)


def build_static_segmenter(cfg: Config, *, num_classes: int, encoder: str | None = None,
                           aux: bool = True) -> StaticSegmenter:
    """Build the arch2 static segmenter from a config.

    Args:
        cfg: a ``vidnas.config.Config``; uses ``model.encoder`` (unless ``encoder`` is given), ``model.weights``,
            ``data.height``, ``data.width``.
        num_classes: K.
        encoder: encoder name overriding ``cfg.model.encoder`` (``mobilenetv2`` [CELLS], ``efficientnet_lite0``, or
            the ``*_test`` variants).
        aux: auxiliary heads (training with ``train.aux_weight``).

    Returns:
        A ``StaticSegmenter`` in training mode.
    """
    name = encoder or cfg.model.encoder
    enc = build_encoder(name, img_size=(cfg.data.height, cfg.data.width), weights=cfg.model.weights)
    model = StaticSegmenter(enc, num_classes, aux=aux)
    logger.info("built arch2 (reconstructed decoder) on %s: %.2fM parameters", name,
                sum(p.numel() for p in model.parameters()) / 1e6)
    return model
