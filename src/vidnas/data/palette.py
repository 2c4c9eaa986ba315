"""Colours for masks: a default palette, a data set's palette, colourising, and the one overlay painter."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from vidnas.data.base import open_source

__all__ = ["default_palette", "resolve_palette", "colorize", "overlay"]

logger = logging.getLogger(__name__)


def default_palette(num_classes: int) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved), distinct for up to 256 classes.

    Returns:
        uint8 (num_classes, 3).
    """
    pal = np.zeros((num_classes, 3), dtype=np.uint8)
    for i in range(num_classes):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def resolve_palette(data_cfg: Any, num_classes: int) -> tuple[np.ndarray, str]:
    """The palette of the data set ``data_cfg`` names if it opens here and has K colours, else the default colour map.

    Returns:
        (uint8 (K, 3) palette, ``"data:<format>"`` or ``"default"``).
    """
    try:
        pal = np.asarray(open_source(data_cfg).palette, dtype=np.uint8)
        if pal.shape == (num_classes, 3):
            return pal, f"data:{data_cfg.format}"
        logger.info("palette of %s has shape %s, not (%d, 3): using the default", data_cfg.format, pal.shape,
                    num_classes)
    except Exception as e:  # the data set may not exist on the deployment machine: any failure means "unknown"
        logger.info("no palette from %s data (%s): using the default", data_cfg.format, e)
    return default_palette(num_classes), "default"


def colorize(mask: np.ndarray, palette: np.ndarray, ignore_index: int = 255,
             ignore_colour: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Class-id mask (H, W) -> RGB uint8 (H, W, 3); ignored and out-of-range ids get ``ignore_colour``."""
    mask = np.asarray(mask)
    pal = np.asarray(palette, dtype=np.uint8)
    valid = (mask >= 0) & (mask < len(pal)) & (mask != ignore_index)
    out = np.empty((*mask.shape, 3), dtype=np.uint8)
    out[...] = np.asarray(ignore_colour, dtype=np.uint8)
    out[valid] = pal[mask[valid]]
    return out


def overlay(image: np.ndarray, mask: np.ndarray | None, palette: np.ndarray, ignore_index: int | None = 255,
            alpha: float = 0.5) -> np.ndarray:
    """Blend the mask's colours over an RGB image: ``(1 - alpha) * image + alpha * palette[mask]``.

    The one overlay painter of the library (data previews, evaluation overlays, the prediction video). Integer
    arithmetic in 8-bit fixed point (``alpha`` rounded to a multiple of 1/256), fast enough for every video frame.
    Ignored and out-of-range ids leave the image as it is.

    Args:
        image: uint8 (H, W, 3).
        mask: class ids (H, W), or None (image returned unchanged).
        palette: uint8 (K, 3).
        ignore_index: an id drawn as the image (None: none).
        alpha: opacity of the mask colours.

    Returns:
        uint8 (H, W, 3).
    """
    img = np.asarray(image, dtype=np.uint8)
    if mask is None:
        return img.copy()
    mask = np.asarray(mask)
    pal = np.asarray(palette, dtype=np.uint8)
    a = int(round(alpha * 256))
    valid = (mask >= 0) & (mask < len(pal))
    if ignore_index is not None:
        valid &= mask != ignore_index
    if valid.all():  # the prediction video: every pixel has a class, no masking needed
        colour = pal[mask].astype(np.uint16)  # (H, W, 3)
        return ((img.astype(np.uint16) * (256 - a) + colour * a + 128) >> 8).astype(np.uint8)
    out = img.copy()
    colour = pal[mask[valid]].astype(np.uint16)  # (N, 3)
    out[valid] = ((img[valid].astype(np.uint16) * (256 - a) + colour * a + 128) >> 8).astype(np.uint8)
    return out
