"""Joint clip transforms: every frame of a clip gets the same resize, scale + crop, rotation and flip.

Images are resized bilinearly (antialiased), masks with nearest neighbour, so a mask never gains a label value it did
not have. Pixels rotated in from outside the frame are the ImageNet mean colour in images (zero after normalisation)
and the ignore index in masks (never class 0: they were not observed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "normalize",
    "denormalize",
    "ClipParams",
    "ClipTransform",
    "resize_image",
    "resize_mask",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return mean, std


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float images (..., 3, H, W) -> ImageNet-normalised float32 (..., 3, H, W)."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    mean, std = _stats(x)
    return (x - mean) / std


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised (..., 3, H, W) -> float in [0, 1] (..., 3, H, W), e.g. for overlays."""
    mean, std = _stats(images.float())
    return (images.float() * std + mean).clamp(0.0, 1.0)


def resize_image(image: np.ndarray | torch.Tensor, height: int, width: int) -> torch.Tensor:
    """RGB image (H0, W0, 3) uint8 -> (3, height, width) uint8, bilinear with antialiasing."""
    t = torch.as_tensor(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    if t.ndim != 3 or t.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {tuple(t.shape)}")
    t = t.permute(2, 0, 1)  # (3, H0, W0)
    if tuple(t.shape[1:]) == (height, width):
        return t.to(torch.uint8).contiguous()
    x = F.interpolate(t[None].float(), size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return x[0].round_().clamp_(0, 255).to(torch.uint8)


def resize_mask(mask: np.ndarray | torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Class-id mask (H0, W0) -> (height, width) int64, nearest neighbour (no new values)."""
    t = torch.as_tensor(np.ascontiguousarray(mask)) if isinstance(mask, np.ndarray) else mask
    t = t.to(torch.int64)
    if tuple(t.shape) == (height, width):
        return t
    # float32 holds every class id exactly (ids < 2**24); "nearest-exact" samples pixel centres like PIL's NEAREST
    x = F.interpolate(t[None, None].float(), size=(height, width), mode="nearest-exact")
    return x[0, 0].to(torch.int64)


@dataclass(frozen=True)
class ClipParams:
    """The random choices shared by every frame of a clip.

    Attributes:
        angle: rotation in degrees, counter-clockwise.
        flip: horizontal flip.
        scale: zoom factor s of the scale + crop step (1 = none).
        crop: where the H x W output window sits, as fractions (fy, fx) in [0, 1] of the free room: at scale s the
            frame is resized to (round(s H), round(s W)); s > 1 crops the window at offset (fy, fx) * (sH - H, sW - W);
            s < 1 pads the frame into the window at that offset of (H - sH, W - sW).
    """

    angle: float = 0.0
    flip: bool = False
    scale: float = 1.0
    crop: tuple[float, float] = (0.5, 0.5)


class ClipTransform:
    """Resize, then (train only) rotate and flip a whole clip with one set of random parameters.

    Args:
        height, width: output size.
        rotate_degrees: rotation angle drawn uniformly from [-rotate_degrees, rotate_degrees] (0 disables).
        hflip: flip horizontally with probability 0.5.
        ignore_index: mask value for pixels rotated or padded in from outside the frame.
        train: False (evaluation) resizes only.
        scale_range: (min, max) of the random zoom s, drawn log-uniformly (so 0.5 and 2 are equally likely in
            (0.5, 2)); then a random H x W window (crop when s > 1, pad when s < 1). (1, 1) disables it.
    """

    def __init__(self, height: int, width: int, *, rotate_degrees: float = 0.0, hflip: bool = False,
                 ignore_index: int = 255, train: bool = False, scale_range: Sequence[float] = (1.0, 1.0)) -> None:
        self.height, self.width = int(height), int(width)
        self.rotate_degrees = float(rotate_degrees)
        self.hflip = bool(hflip)
        self.ignore_index = int(ignore_index)
        self.train = bool(train)
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be 0 < min <= max, got {scale_range}")
        self.scale_range = (lo, hi)

    @classmethod
    def from_config(cls, data_cfg: Any, train: bool) -> ClipTransform:
        """From a ``DataConfig``; augmentation only when ``train`` and ``data_cfg.augment``."""
        aug = bool(train and getattr(data_cfg, "augment", True))
        return cls(data_cfg.height, data_cfg.width, rotate_degrees=getattr(data_cfg, "rotate_degrees", 0.0),
                   hflip=getattr(data_cfg, "hflip", False), ignore_index=getattr(data_cfg, "ignore_index", 255),
                   train=aug, scale_range=getattr(data_cfg, "scale_range", (1.0, 1.0)))

    def sample(self, generator: torch.Generator | None = None) -> ClipParams:
        """Draw the clip's parameters (identity when not training). Uses torch's global RNG when no generator."""
        if not self.train:
            return ClipParams()
        u = torch.rand(2, generator=generator)
        angle = (2.0 * float(u[0]) - 1.0) * self.rotate_degrees if self.rotate_degrees > 0 else 0.0
        flip = bool(float(u[1]) < 0.5) if self.hflip else False
        lo, hi = self.scale_range
        if hi == lo == 1.0:  # no draw: the parameters (and the generator's stream) of earlier presets are unchanged
            return ClipParams(angle, flip)
        v = torch.rand(3, generator=generator)
        scale = math.exp(math.log(lo) + float(v[0]) * (math.log(hi) - math.log(lo)))
        return ClipParams(angle, flip, scale, (float(v[1]), float(v[2])))

    def __call__(self, images: Sequence[np.ndarray | torch.Tensor], masks: Sequence[np.ndarray | torch.Tensor | None],
                 params: ClipParams | None = None, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform a clip.

        Args:
            images: T RGB images, each uint8 (H0, W0, 3) (numpy or tensor); or already resized uint8 (3, H, W) tensors.
            masks: T class-id masks (H0, W0) (or (H, W)), None for an unsupervised frame (becomes all ignore).
            params: the clip's random parameters; drawn with ``sample(generator)`` when None.

        Returns:
            frames (T, 3, H, W) float32 ImageNet-normalised, masks (T, H, W) int64.
        """
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        if params is None:
            params = self.sample(generator)
        h, w = self.height, self.width
        imgs = torch.stack([self._image(im) for im in images])  # (T, 3, H, W) uint8
        ms = torch.stack([torch.full((h, w), self.ignore_index, dtype=torch.int64) if m is None
                          else self._mask(m) for m in masks])  # (T, H, W)
        return self.apply(imgs, ms, params)

    def _image(self, im: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(im, torch.Tensor) and im.ndim == 3 and im.shape[0] == 3 and tuple(im.shape[1:]) == (
                self.height, self.width):
            return im.to(torch.uint8)
        return resize_image(im, self.height, self.width)

    def _mask(self, m: np.ndarray | torch.Tensor) -> torch.Tensor:
        return resize_mask(m, self.height, self.width)

    def apply(self, images: torch.Tensor, masks: torch.Tensor, params: ClipParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate + flip + normalise already-resized tensors.

        Args:
            images: (T, 3, H, W) uint8.
            masks: (T, H, W) int64.

        Returns:
            (T, 3, H, W) float32 normalised, (T, H, W) int64.
        """
        x = images.float() / 255.0
        m = masks
        if params.scale != 1.0:
            x, m = self._scale_crop(x, m, params.scale, params.crop)
        if params.angle != 0.0:
            x, m = self._rotate(x, m, params.angle)
        if params.flip:
            x = x.flip(-1)
            m = m.flip(-1)
        return normalize(x), m.contiguous()

    def _scale_crop(self, x: torch.Tensor, m: torch.Tensor, scale: float, crop: tuple[float, float]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Zoom every frame by ``scale`` and take the H x W window at ``crop`` (``ClipParams``).

        Args:
            x: (T, 3, H, W) float in [0, 1]. m: (T, H, W) int64.

        Returns:
            (T, 3, H, W), (T, H, W): padding is the ImageNet mean in images (0 after normalisation) and the ignore
            index in masks.
        """
        t, _, h, w = x.shape
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        xs = F.interpolate(x, size=(sh, sw), mode="bilinear", align_corners=False, antialias=scale < 1)
        ms = F.interpolate(m[:, None].float(), size=(sh, sw), mode="nearest-exact")[:, 0].to(torch.int64)
        out_x = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, 3, 1, 1).expand(t, 3, h, w).clone()
        out_m = torch.full((t, h, w), self.ignore_index, dtype=torch.int64)
        fy, fx = crop
        # source window (crop when the zoomed frame is larger) and target window (pad when it is smaller), per axis
        y0, x0 = round(fy * max(sh - h, 0)), round(fx * max(sw - w, 0))
        ty, tx = round(fy * max(h - sh, 0)), round(fx * max(w - sw, 0))
        ch, cw = min(h, sh), min(w, sw)
        out_x[:, :, ty:ty + ch, tx:tx + cw] = xs[:, :, y0:y0 + ch, x0:x0 + cw]
        out_m[:, ty:ty + ch, tx:tx + cw] = ms[:, y0:y0 + ch, x0:x0 + cw]
        return out_x, out_m

    def _rotate(self, x: torch.Tensor, m: torch.Tensor, angle: float) -> tuple[torch.Tensor, torch.Tensor]:
        t, _, h, w = x.shape
        a = math.radians(angle)
        cos, sin = math.cos(a), math.sin(a)
        # affine_grid works in normalised coords; correct for the aspect ratio so the rotation is rigid in pixels
        theta = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], dtype=torch.float32)
        grid = F.affine_grid(theta[None], [1, 1, h, w], align_corners=False)  # (1, H, W, 2), shared by all frames
        # sampling ones tells how much of each output pixel came from inside the frame (the same for every frame)
        ones = torch.ones(1, 1, h, w)
        inside = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        inside_nn = F.grid_sample(ones, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0] > 0.5
        grid_t = grid.expand(t, h, w, 2)
        xs = F.grid_sample(x, grid_t, mode="bilinear", padding_mode="zeros", align_corners=False)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        x = xs + (1.0 - inside) * mean
        ms = F.grid_sample(m[:, None].float(), grid_t, mode="nearest", padding_mode="zeros", align_corners=False)
        m = torch.where(inside_nn, ms[:, 0].round().to(torch.int64), torch.full_like(m, self.ignore_index))
        return x, m

    def __repr__(self) -> str:
        return (f"ClipTransform({self.height}x{self.width}, rotate={self.rotate_degrees}, hflip={self.hflip}, "
                f"scale={self.scale_range}, train={self.train})")
