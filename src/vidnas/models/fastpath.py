"""CPU fast paths for inference that leave every output unchanged, switched on where ``vidnas bench`` measured a gain.

* ``use_channels_last(model)``: the convolutions of a CNN encoder (MobileNetV2, EfficientNet-Lite0, any encoder with
  the ``NCHW`` internal layout) run in the channels-last memory format. Weights are converted in place; the first
  convolution then produces channels-last maps and every later layer keeps them (oneDNN's preferred layout for
  depthwise and 1x1 convolutions). Values are the same up to float rounding of another summation order. Measured
  interleaved with ``vidnas bench --compare channels_last`` (docs/RESULTS.md §16); Swin encoders (transformers,
  ``NHWC`` internal layout) are left alone.

Model kinds: ``VideoSegmenter`` (``model.encoder``), ``StaticSegmenter`` (``model.encoder``), ``DynamicCellModel``
(``model.static.encoder``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["cnn_encoder", "use_channels_last", "uses_channels_last"]


def cnn_encoder(model: Any) -> nn.Module | None:
    """The CNN encoder of any model kind (internal layout ``NCHW``), or None (a Swin encoder, no encoder)."""
    encoder = getattr(model, "encoder", None)
    if encoder is None and getattr(model, "static", None) is not None:
        encoder = getattr(model.static, "encoder", None)
    if isinstance(encoder, nn.Module) and getattr(encoder, "layout", None) == "NCHW":
        return encoder
    return None


def use_channels_last(model: Any, on: bool = True) -> bool:
    """Convert the CNN encoder of ``model`` to (``on``) or from the channels-last memory format, in place.

    Returns:
        True when the model has a CNN encoder that now runs channels-last (False: nothing to convert, or ``on`` is
        False).
    """
    encoder = cnn_encoder(model)
    if encoder is None:
        return False
    encoder.to(memory_format=torch.channels_last if on else torch.contiguous_format)
    return on


def uses_channels_last(model: Any) -> bool:
    """Whether the CNN encoder's first convolution weight is in the channels-last memory format."""
    encoder = cnn_encoder(model)
    if encoder is None:
        return False
    for p in encoder.parameters():
        if p.dim() == 4:
            return bool(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous())
    return False
