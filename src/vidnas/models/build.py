"""``build_model``: a plain ``VideoSegmenter`` from a config plus (optionally) an architecture file.

A derived model is built from data alone; this module never imports ``vidnas.search`` (tested), so no supernet code
ships inside a trained model.
"""

from __future__ import annotations

import logging

from torch import nn

from vidnas.config import Config
from vidnas.models.architecture import DECODERS, Arch, ArchError
from vidnas.models.decoders import HeadDecoder, SPTCNDecoder
from vidnas.models.encoders import ENCODERS, build_encoder
from vidnas.models.multiscale import STRIDE_INDEX, Arch2FusionDecoder, MultiScaleDecoder, MultiScaleSegmenter
from vidnas.models.segmenter import VideoSegmenter
from vidnas.models.static_segmenter import build_static_segmenter

__all__ = ["build_model", "build_decoder", "arch_from_config", "check_model_config", "TEMPORAL_MODES"]

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
    if arch.decoder not in DECODERS:
        raise ArchError(f"unknown decoder {arch.decoder!r}; valid decoders: {', '.join(DECODERS)}")
    return arch


def build_decoder(arch: Arch, in_channels: int, num_classes: int) -> nn.Module:
    """The decoder of ``arch`` reading ``in_channels`` encoder channels.

    Shapes:
        (B, C, T, h, w) -> (B, K, T, h, w).
    """
    if arch.decoder == "sptcn":
        return SPTCNDecoder(
            in_channels,
            num_classes,
            channels=arch.channels,
            dilations=arch.dilations,
            full_channels=arch.full_channels,
            causal=arch.causal,
            layer_ops=arch.decoder_ops,
        )
    if arch.decoder == "head":
        return HeadDecoder(in_channels, num_classes, arch.channels)
    if arch.decoder == "mstcn":
        raise ArchError("the mstcn decoder reads several encoder maps: build it with build_model")
    raise ArchError(f"unknown decoder {arch.decoder!r}; valid decoders: {', '.join(DECODERS)}")


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
        A ``VideoSegmenter`` (or, for the ``arch2`` decoder, the per-frame ``Arch2Segmenter``), in training mode as
        any new ``nn.Module``, taking (B, T, 3, H, W) clips at ``(data.height, data.width)``.

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
    if arch.decoder == "arch2":  # static network of the dynamic-cell search (per frame, auxiliary heads)
        return build_static_segmenter(cfg, num_classes=num_classes, encoder=arch.encoder)
    img_size = (cfg.data.height, cfg.data.width)
    encoder = build_encoder(arch.encoder, img_size=img_size, depths=arch.depths, weights=cfg.model.weights)
    if arch.decoder == "mstcn":
        channels = [encoder.out_channels[STRIDE_INDEX[s]] for s in arch.scales]
        common = dict(channels=arch.channels, fuse_channels=arch.fuse_channels, dilations=arch.dilations,
                      full_channels=arch.full_channels, causal=arch.causal, layer_ops=arch.decoder_ops)
        ms: nn.Module = (Arch2FusionDecoder(channels, num_classes, residual=arch.fusion == "arch2_res", **common)
                         if arch.fusion in ("arch2", "arch2_res")
                         else MultiScaleDecoder(channels, num_classes, scale_ops=arch.scale_ops, **common))
        model: nn.Module = MultiScaleSegmenter(encoder, ms, num_classes, scales=arch.scales, window=arch.window,
                                               causal=arch.causal)
    else:
        decoder = build_decoder(arch, encoder.out_channels[-1], num_classes)
        model = VideoSegmenter(encoder, decoder, num_classes, window=arch.window, causal=arch.causal)
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
