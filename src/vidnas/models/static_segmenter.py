"""The static segmenter ("arch2"): the per-frame network the dynamic-cell search builds on [CELLS Sec. 3.1, Fig. 2].

``arch2`` stays its user-facing name (``--model arch2``, ``model.decoder=arch2``), the name the paper uses.

arch2 is an encoder-decoder network found by Nekrasov et al.'s earlier static search ("Fast NAS of compact semantic
segmentation models via auxiliary cells", CVPR 2019): a MobileNetV2 encoder (EfficientNet-Lite0 also works) and a
light-weight decoder that aggregates the encoder outputs at strides 4/8/16/32 at 64 channels and predicts at
stride 8. The dynamic-cell search records three of its tensors (SPEC "Dynamic-cell search"):

* ``layer2`` (stride 8), ``layer3`` (stride 16), ``layer4`` (stride 32): encoder outputs;
* ``dec`` (64 channels, stride 8): the decoder's output before the final classifier;
* ``pred`` (K channels, stride 8): the classifier's output.

RECONSTRUCTION. The paper's Fig. 2 (the exact arch2 topology) was lost; its caption says only that 'gap' stands for
global average pooling. The decoder below is a light-weight RefineNet-like reconstruction with three decoder blocks,
which is what SPEC records ("three decoder blocks over encoder outputs at strides 4/8/16/32, aggregated at 64
channels")::

    a_i   = Conv1x1-BN-ReLU(layer_i) -> 64 ch                        (i = 1..4, strides 4, 8, 16, 32)
    g     = ReLU(Conv1x1(GAP(a_4)))  broadcast over a_4               ('gap' branch of Fig. 2)
    b_1   = Block(up(a_4 + g) + a_3)                                  stride 16  -> aux head 1
    b_2   = Block(up(b_1) + a_2)                                      stride 8   -> aux head 2
    dec   = Block(b_2 + Conv3x3/2-BN-ReLU(a_1))                       stride 8, 64 ch
    pred  = Conv1x1(dec) -> K                                         stride 8

    Block(x) = ReLU(x + BN(Conv3x3(ReLU(BN(Conv3x3(x))))))            (a residual 3x3 conv block)

``up`` is bilinear resizing to the next input's size. The auxiliary heads (Conv1x1 to K on ``b_1`` and ``b_2``) give
the auxiliary losses of [CELLS appendix] (weight 0.3 in the training engine).

Shapes: clips ``(B, T, 3, H, W)`` in, logits ``(B, T, K, H, W)`` out, computed frame by frame (window 1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidnas.config import Config
from vidnas.models.encoders import build_encoder
from vidnas.models.layers import ConvBNReLU, resize_to
from vidnas.models.streaming import FrameStreamer, check_stream_options

__all__ = [
    "ARCH2_CHANNELS",
    "Arch2Block",
    "Arch2Decoder",
    "Arch2Segmenter",
    "build_static_segmenter",
]

logger = logging.getLogger(__name__)

ARCH2_CHANNELS = 64  # [CELLS Sec. 3.1] dec has 64 channels


class Arch2Block(nn.Module):
    """Residual 3x3 block: ``ReLU(x + BN(Conv3x3(ConvBNReLU3x3(x))))``.

    Shapes:
        (N, C, h, w) -> (N, C, h, w).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(channels, channels, 3)
        self.conv2 = ConvBNReLU(channels, channels, 3, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(self.conv1(x)))


class Arch2Decoder(nn.Module):
    """The reconstructed arch2 decoder (topology in the module docstring).

    Args:
        in_channels: channels of the four encoder maps (strides 4, 8, 16, 32).
        num_classes: K.
        channels: aggregation width (64 [CELLS Sec. 3.1]).
        aux: build the two auxiliary heads.

    Shapes:
        four maps ``(N, C_i, H / s_i, W / s_i)`` -> ``dec (N, 64, H/8, W/8)``, ``pred (N, K, H/8, W/8)``,
        ``aux`` = [(N, K, H/16, W/16), (N, K, H/8, W/8)] (empty without aux heads).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, *, channels: int = ARCH2_CHANNELS,
                 aux: bool = True) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"arch2 reads four encoder maps (strides 4/8/16/32), got {len(in_channels)} channels")
        self.channels = channels
        self.adapt = nn.ModuleList(ConvBNReLU(c, channels, 1) for c in in_channels)
        # no BatchNorm after global pooling: a (N, C, 1, 1) map has a single value per channel when N = 1
        self.gap = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True))
        self.down = ConvBNReLU(channels, channels, 3, stride=2)  # stride 4 -> 8
        self.block1 = Arch2Block(channels)  # stride 16
        self.block2 = Arch2Block(channels)  # stride 8
        self.block3 = Arch2Block(channels)  # stride 8 -> dec
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.aux_heads = nn.ModuleList(nn.Conv2d(channels, num_classes, 1) for _ in range(2)) if aux \
            else nn.ModuleList()

    def forward(self, feats: Sequence[torch.Tensor]) -> dict[str, Any]:
        """Decode the four encoder maps; returns ``{"dec", "pred", "aux": [...]}`` (shapes in the class docstring)."""
        a1, a2, a3, a4 = (m(f) for m, f in zip(self.adapt, feats, strict=True))
        top = a4 + self.gap(a4)  # (N, 64, H/32, W/32), gap broadcast over the map
        b1 = self.block1(resize_to(top, a3.shape[-2:]) + a3)  # (N, 64, H/16, W/16)
        b2 = self.block2(resize_to(b1, a2.shape[-2:]) + a2)  # (N, 64, H/8, W/8)
        dec = self.block3(b2 + resize_to(self.down(a1), a2.shape[-2:]))  # (N, 64, H/8, W/8)
        aux = [head(b) for head, b in zip(self.aux_heads, (b1, b2), strict=False)]
        return {"dec": dec, "pred": self.classifier(dec), "aux": aux}


class Arch2Segmenter(nn.Module):
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
    """

    window = 1
    causal = True

    def __init__(self, encoder: nn.Module, num_classes: int, *, channels: int = ARCH2_CHANNELS, aux: bool = True,
                 out_size: Sequence[int] | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = Arch2Decoder(list(encoder.out_channels), num_classes, channels=channels, aux=aux)
        self.num_classes = num_classes
        self.channels = channels
        self.out_size = None if out_size is None else (int(out_size[0]), int(out_size[1]))

    @property
    def target_index(self) -> int:
        """Every frame is its own window: index 0."""
        return 0

    @property
    def encoder_channels(self) -> list[int]:
        """Channels of layer1..layer4."""
        return list(self.encoder.out_channels)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) -> [layer1, layer2, layer3, layer4] at strides 4, 8, 16, 32."""
        return self.encoder(x)

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
                           aux: bool = True) -> Arch2Segmenter:
    """Build the arch2 static segmenter from a config.

    Args:
        cfg: a ``vidnas.config.Config``; uses ``model.encoder`` (unless ``encoder`` is given), ``model.weights``,
            ``data.height``, ``data.width``.
        num_classes: K.
        encoder: encoder name overriding ``cfg.model.encoder`` (``mobilenetv2`` [CELLS], ``efficientnet_lite0``, or
            the ``*_test`` variants).
        aux: auxiliary heads (training with ``train.aux_weight``).

    Returns:
        An ``Arch2Segmenter`` in training mode.
    """
    name = encoder or cfg.model.encoder
    enc = build_encoder(name, img_size=(cfg.data.height, cfg.data.width), weights=cfg.model.weights)
    model = Arch2Segmenter(enc, num_classes, aux=aux)
    logger.info("built arch2 (reconstructed decoder) on %s: %.2fM parameters", name,
                sum(p.numel() for p in model.parameters()) / 1e6)
    return model
