"""Encoders: real timm architectures (Swin, MobileNetV2, EfficientNet-Lite0) behind one block-level contract.

``build_encoder(name, ...)`` builds any registered encoder; ``Encoder`` documents the contract every one follows
(four NCHW maps at strides 4/8/16/32; ``stem``, ``stages[i].downsample``, ``stages[i].blocks``, ``stage_output``).

| name | timm model | out_channels | depths |
|---|---|---|---|
| swin_tiny | SwinTransformer embed 96, heads 3-6-12-24, window 7 | 96, 192, 384, 768 | 2, 2, 6, 2 |
| swin_base | SwinTransformer embed 128, heads 4-8-16-32, window 7 | 128, 256, 512, 1024 | 2, 2, 18, 2 |
| swin_test | SwinTransformer embed 16, heads 1-1-2-2, window 4 | 16, 32, 64, 128 | 2, 2, 2, 2 |
| mobilenetv2 | mobilenetv2_100 | 24, 32, 96, 320 | 1, 2, 2, 2 |
| mobilenetv2_test | MobileNetV2, channel multiplier 0.25 | 8, 8, 24, 80 | 1, 2, 2, 2 |
| efficientnet_lite0 | efficientnet_lite0 | 24, 40, 112, 320 | 1, 1, 2, 3 |
| efficientnet_lite0_test | EfficientNet-Lite0, channel multiplier 0.25 | 8, 16, 32, 80 | 1, 1, 2, 3 |
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from vidnas.models.encoders.base import STRIDES, Encoder, EncoderFactory, EncoderStage, describe
from vidnas.models.encoders.efficientnet import EFFICIENTNET_VARIANTS, EfficientNetEncoder, build_efficientnet
from vidnas.models.encoders.swin import SWIN_VARIANTS, SwinEncoder, build_swin
from vidnas.registry import Registry

__all__ = [
    "ENCODERS",
    "STRIDES",
    "Encoder",
    "EncoderFactory",
    "EncoderStage",
    "EfficientNetEncoder",
    "SwinEncoder",
    "build_encoder",
    "describe",
]

ENCODERS: Registry[EncoderFactory] = Registry("encoder")  # factory(*, img_size, depths, weights, **options)
for _name in SWIN_VARIANTS:
    ENCODERS.register(_name, partial(build_swin, _name))
for _name in EFFICIENTNET_VARIANTS:
    ENCODERS.register(_name, partial(build_efficientnet, _name))
del _name


def build_encoder(
    name: str,
    *,
    img_size: tuple[int, int] = (320, 576),
    depths: Sequence[int] | None = None,
    weights: str | Path | None = None,
    **options: object,
) -> Encoder:
    """Build a registered encoder.

    Args:
        name: a key of ``ENCODERS`` (unknown names raise ``KeyError`` listing the valid ones).
        img_size: input (H, W). Swin is built for exactly this size (see ``vidnas.models.encoders.swin``).
        depths: blocks per stage, e.g. ``(1, 2, 3, 2)`` = [ST-NAS] Swin Short; shorter stages keep their first
            blocks. None = the encoder's own depths.
        weights: None (random init), ``"imagenet"`` (efficientnet_lite0 only) or a local timm checkpoint path,
            loaded into the full-depth timm model before any truncation.
        **options: family-specific: ``drop_path_rate`` (all), ``dynamic_img_size`` (Swin).

    Returns:
        The encoder (``Encoder`` contract), in training mode.
    """
    factory = ENCODERS[name]
    return factory(img_size=img_size, depths=depths, weights=weights, **options)
