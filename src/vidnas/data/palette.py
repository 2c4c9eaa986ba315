"""Colours for masks: a default palette, colourising and overlaying masks on frames."""

from __future__ import annotations

import numpy as np

__all__ = ["default_palette", "colorize", "overlay"]


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


def overlay(image: np.ndarray, mask: np.ndarray | None, palette: np.ndarray, ignore_index: int = 255,
            alpha: float = 0.5) -> np.ndarray:
    """Blend the mask's colours over an RGB image; ignored pixels stay as the image.

    Args:
        image: uint8 (H, W, 3).
        mask: class ids (H, W), or None (image returned unchanged).
        palette: uint8 (K, 3).
        alpha: opacity of the mask colours.

    Returns:
        uint8 (H, W, 3).
    """
    if mask is None:
        return np.asarray(image, dtype=np.uint8).copy()
    img = np.asarray(image, dtype=np.float32)
    col = colorize(mask, palette, ignore_index).astype(np.float32)
    valid = ((mask >= 0) & (mask < len(palette)) & (mask != ignore_index))[..., None]
    out = np.where(valid, (1.0 - alpha) * img + alpha * col, img)
    return out.round().clip(0, 255).astype(np.uint8)
