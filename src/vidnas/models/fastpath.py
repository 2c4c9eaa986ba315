"""CPU fast paths for inference that leave every output unchanged, switched on where ``vidnas bench`` measured a gain.

* ``use_channels_last(model)``: the convolutions of a CNN encoder (MobileNetV2, EfficientNet-Lite0, any encoder with
  the ``NCHW`` internal layout) run in the channels-last memory format. Weights are converted in place; the first
  convolution then produces channels-last maps and every later layer keeps them (oneDNN's preferred layout for
  depthwise and 1x1 convolutions). Values are the same up to float rounding of another summation order. Measured
  interleaved with ``vidnas bench --compare channels_last`` (docs/RESULTS.md §16); Swin encoders (transformers,
  ``NHWC`` internal layout) are left alone.

* ``compile_parts(model)``: ``torch.compile`` of the encoder, decoder and cell ``forward``; measured interleaved with
  ``vidnas bench --compare compile`` and kept as that comparison only (no command compiles by default: on the 2-core
  development CPU neither training nor inference gained, docs/RESULTS.md).

Model kinds: ``VideoSegmenter`` (``model.encoder``), ``StaticSegmenter`` (``model.encoder``), ``DynamicCellModel``
(``model.static.encoder``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["cnn_encoder", "use_channels_last", "uses_channels_last", "COMPILED_PARTS", "compile_parts"]


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


COMPILED_PARTS: tuple[str, ...] = ("encoder", "decoder", "cell")  # what ``compile_parts`` compiles, where present


def compile_parts(model: Any, backend: str = "inductor") -> list[str]:
    """``torch.compile`` the ``forward`` of each part of ``model`` that streaming calls, in place: ``encoder``,
    ``decoder`` and ``cell`` of the model and of its ``static`` network (dynamic-cell models). Each part's
    ``forward`` becomes the compiled one; its hooks (the benchmark's timing probes) stay outside the graph. What a
    streamer calls below those parts directly (the incremental step program of a window decoder) stays eager.

    Args:
        model: a model of any kind (deep-copy it first to keep an eager one).
        backend: ``torch.compile``'s backend (``inductor``: generated kernels; ``aot_eager``: the same graph capture
            without code generation, for quick checks).

    Returns:
        The names of the compiled parts (``static.encoder``...), in order.
    """
    owners: list[tuple[str, Any]] = [("", model)]
    if isinstance(getattr(model, "static", None), nn.Module):
        owners.append(("static.", model.static))
    done: list[str] = []
    seen: set[int] = set()  # a cell model's ``encoder`` is its static network's
    for prefix, owner in owners:
        for name in COMPILED_PARTS:
            part = getattr(owner, name, None)
            if isinstance(part, nn.Module) and id(part) not in seen:
                seen.add(id(part))
                part.forward = torch.compile(part.forward, backend=backend)
                done.append(prefix + name)
    return done
