"""``build_model``: a model from a config plus (optionally) an architecture file.

The architecture's decoder names a family of ``vidnas.models.decoders.DECODERS``, which says which encoder maps its
decoder reads, builds the decoder, and names the model around it (``VideoSegmenter``, ``MultiScaleSegmenter`` or the
per-frame ``StaticSegmenter``). A derived model is built from data alone; this module never imports
``vidnas.search`` (tested), so no supernet code ships inside a trained model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from torch import nn

from vidnas.config import Config
from vidnas.models.architecture import Arch, ArchError
from vidnas.models.decoders import DECODERS, DecoderFamily
from vidnas.models.encoders import ENCODERS, Encoder, build_encoder
from vidnas.models.multiscale import STRIDE_INDEX, MultiScaleSegmenter
from vidnas.models.segmenter import VideoSegmenter
from vidnas.models.static_segmenter import StaticSegmenter

__all__ = ["build_model", "build_decoder", "arch_from_config", "check_model_config", "TEMPORAL_MODES", "MODELS"]

logger = logging.getLogger(__name__)

TEMPORAL_MODES: dict[str, bool] = {"causal": True, "centred": False, "centered": False}  # name -> causal flag


def arch_from_config(cfg: Config) -> Arch:
    """The architecture a config describes.

    ``cfg.model.arch`` (a path to an ``arch.json``) wins when set; otherwise the architecture is read from
    ``cfg.model`` (encoder, depths, decoder, width, dilations, full channels) and ``cfg.data`` (window, temporal).

    Raises:
        ArchError: unknown temporal mode or decoder, or an invalid architecture file.
    """
    if cfg.model.arch:
        arch = Arch.load(cfg.model.arch)
        if arch.window != cfg.data.window or arch.causal != _causal(cfg.data.temporal):
            logger.warning(
                "%s: window %d (%s) differs from data.window=%d (%s); the model follows the architecture file, "
                "make the data config match",
                cfg.model.arch,
                arch.window,
                "causal" if arch.causal else "centred",
                cfg.data.window,
                cfg.data.temporal,
            )
        return arch
    return Arch(
        encoder=cfg.model.encoder,
        depths=cfg.model.encoder_depths,
        decoder=cfg.model.decoder,
        decoder_ops=None,
        full_channels=cfg.model.full_channels,
        window=cfg.data.window,
        causal=_causal(cfg.data.temporal),
        channels=cfg.model.decoder_channels,
        dilations=cfg.model.decoder_dilations,
        scales=cfg.model.decoder_scales,
        fuse_channels=cfg.model.fuse_channels,
        fusion=cfg.model.fusion,
        name="config",
    )


def check_model_config(cfg: Config, arch: Arch | None = None) -> Arch:
    """Check, without building anything, that ``cfg`` (and ``arch``) describe a model vidnas can build: known encoder
    and decoder, a readable architecture file, depths the encoder has. Commands call it before creating a run.

    Returns:
        The architecture.

    Raises:
        ArchError: naming the bad value.
    """
    arch = arch if arch is not None else arch_from_config(cfg)
    if arch.encoder not in ENCODERS:
        raise ArchError(f"unknown encoder {arch.encoder!r}; valid encoders: {', '.join(ENCODERS)}")
    _family(arch)
    return arch


def build_decoder(arch: Arch, in_channels: int, num_classes: int) -> nn.Module:
    """The decoder of ``arch`` reading ``in_channels`` encoder channels (a ``window`` family's: one map).

    Shapes:
        (B, C, T, h, w) -> (B, K, T, h, w).

    Raises:
        ArchError: an unknown decoder, or one reading several encoder maps (build those with ``build_model``).
    """
    family = _family(arch)
    if family.model != "window":
        raise ArchError(f"the {arch.decoder} decoder reads several encoder maps: build it with build_model")
    return family.build(arch, [in_channels], num_classes)


def _family(arch: Arch) -> DecoderFamily:
    """The family of ``arch.decoder`` (``ArchError`` listing the registered names when there is none)."""
    if arch.decoder not in DECODERS:
        raise ArchError(f"unknown decoder {arch.decoder!r}; valid decoders: {', '.join(DECODERS)}")
    return DECODERS[arch.decoder]


def _window_model(encoder: Encoder, decoder: nn.Module, arch: Arch, scales: Sequence[int],
                  num_classes: int) -> nn.Module:
    return VideoSegmenter(encoder, decoder, num_classes, window=arch.window, causal=arch.causal,
                          feature_index=STRIDE_INDEX[scales[0]])


def _multiscale_model(encoder: Encoder, decoder: nn.Module, arch: Arch, scales: Sequence[int],
                      num_classes: int) -> nn.Module:
    return MultiScaleSegmenter(encoder, decoder, num_classes, scales=scales, window=arch.window, causal=arch.causal)


def _static_model(encoder: Encoder, decoder: nn.Module, arch: Arch, scales: Sequence[int],
                  num_classes: int) -> nn.Module:
    return StaticSegmenter(encoder, num_classes, decoder=decoder)


# DecoderFamily.model -> the model around the decoder: (encoder, decoder, arch, scales, num_classes) -> model
MODELS: dict[str, Callable[[Encoder, nn.Module, Arch, Sequence[int], int], nn.Module]] = {
    "window": _window_model,
    "multiscale": _multiscale_model,
    "static": _static_model,
}


def build_model(cfg: Config, arch: Arch | None = None, *, num_classes: int) -> nn.Module:
    """Build the segmenter described by ``cfg`` (and ``arch``, which overrides the model part of it).

    Args:
        cfg: resolved config; uses ``model.encoder``, ``model.encoder_depths``, ``model.weights``, ``model.decoder``,
            ``model.decoder_channels``, ``model.full_channels``, ``model.decoder_dilations``, ``model.arch`` and
            ``data.window``, ``data.temporal``, ``data.height``, ``data.width``.
        arch: architecture overriding encoder, depths, decoder (ops), full channels, width, window and causality;
            None = ``arch_from_config(cfg)``.
        num_classes: K.

    Returns:
        The model the decoder's family names (``VideoSegmenter``, ``MultiScaleSegmenter``, or for the ``arch2``
        decoder the per-frame ``StaticSegmenter``), in training mode as any new ``nn.Module``, taking
        (B, T, 3, H, W) clips at ``(data.height, data.width)``.

    Raises:
        ArchError: unknown encoder or decoder name, invalid architecture.
    """
    if arch is None:
        arch = arch_from_config(cfg)
    elif arch.window != cfg.data.window:
        logger.warning(
            "architecture %r uses window %d but data.window=%d; the model follows the architecture",
            arch.name,
            arch.window,
            cfg.data.window,
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if arch.encoder not in ENCODERS:
        raise ArchError(f"unknown encoder {arch.encoder!r}; valid encoders: {', '.join(ENCODERS)}")
    family = _family(arch)
    img_size = (cfg.data.height, cfg.data.width)
    encoder = build_encoder(arch.encoder, img_size=img_size, depths=family.depths(arch), weights=cfg.model.weights)
    scales = family.scales(arch)
    decoder = family.build(arch, [encoder.out_channels[STRIDE_INDEX[s]] for s in scales], num_classes)
    model = MODELS[family.model](encoder, decoder, arch, scales, num_classes)
    logger.info(
        "built %s: encoder %s depths %s, decoder %s%s%s, window %d %s, %.2fM parameters",
        arch.name or "model",
        arch.encoder,
        arch.depths,
        arch.decoder,
        " FC" if arch.full_channels else "",
        " (searched ops)" if arch.searched else "",
        arch.window,
        "causal" if arch.causal else "centred",
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model


def _causal(temporal: str) -> bool:
    try:
        return TEMPORAL_MODES[temporal]
    except KeyError:
        raise ArchError(f"unknown data.temporal {temporal!r}; valid: causal, centred") from None
