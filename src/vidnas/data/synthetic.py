"""The embedded synthetic data set: seeded procedural videos in which temporal context truly helps.

Each video shows a textured background seen by a drifting camera and several moving, rotating, occluding shapes. Every
foreground class has its own colour and stripe texture (shared by all videos, so a model can learn them); shape types,
sizes, paths, the background and the camera path differ per video. A fraction ``corruption`` of the frames is
corrupted after rendering, while their labels stay true:

- ``noise``: a burst of strong Gaussian noise;
- ``blur``: a heavy box blur;
- ``occluder``: a large patch painted with another class's appearance (a distractor the labels ignore);
- ``dropout``: a large region dropped to a flat grey.

A per-frame model cannot see through these; a model that looks at the neighbouring frames can. Every frame is
annotated.

``classes_by`` says what tells the foreground classes apart: ``"appearance"`` (default; each class its own colour and
stripes, every shape type for every class: a pixel's colour gives its class) or ``"shape"`` (every shape painted the
same; class ``c`` is always shape type ``c - 1``: ellipse, rectangle, diamond, so at most 4 classes). In shape mode a
pixel's class depends on the outline of the region around it, so spatial context (encoder depth) matters. Both
modes draw the same random numbers: the videos differ only in the class of each shape and its paint.

Video ``k`` is generated from ``SeedSequence([seed, k])`` (the noise of its frame ``t`` from
``[seed, k, t + 1]``), so the same seed gives the same pixels on any machine, the train / val videos never share a
seed, and a frame that is clean at one corruption probability is pixel-identical at another. Split: the last
``max(1, round(n / 3))`` videos are ``val``, the others ``train``. Videos are generated on first use and kept in
memory.
"""

from __future__ import annotations

import colorsys
import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from vidnas.data.base import DataError, FrameRef, LabelMap, Video, VideoSource, register_format

__all__ = ["SyntheticSource", "CORRUPTIONS"]

logger = logging.getLogger(__name__)

CORRUPTIONS = ("noise", "blur", "occluder", "dropout")
_KEY = re.compile(r"^synthetic://(?P<video>[^/]+)/(?P<index>\d+)(?:/mask)?$")
_APPEARANCE_STREAM = 7_777_777  # seed-sequence key for the class appearance table (shared by all videos)


@dataclass(frozen=True)
class _Rendered:
    images: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray  # (T, H, W) uint8
    kinds: tuple[str | None, ...]  # corruption per frame


@register_format("synthetic")
class SyntheticSource(VideoSource):
    """Procedural videos generated in memory (no files).

    Args:
        videos: number of videos (>= 2: at least one train and one val video).
        frames: frames per video.
        classes: number of classes including background (>= 2).
        corruption: probability that a frame is corrupted.
        seed: generator seed.
        height, width: frame size.
        ignore_index: kept for the interface; synthetic labels have no void pixels.
    """

    def __init__(self, *, videos: int = 6, frames: int = 24, classes: int = 4, corruption: float = 0.3,
                 seed: int = 0, height: int = 64, width: int = 96, ignore_index: int = 255,
                 classes_by: str = "appearance") -> None:
        super().__init__(None, ignore_index=ignore_index)
        if videos < 2:
            raise DataError(f"synthetic: synthetic_videos must be >= 2 (one train and one val video), got {videos}")
        if frames < 1:
            raise DataError(f"synthetic: synthetic_frames must be >= 1, got {frames}")
        if not 2 <= classes <= 255:
            raise DataError(f"synthetic: synthetic_classes must be in 2..255 (incl. background), got {classes}")
        if not 0.0 <= corruption <= 1.0:
            raise DataError(f"synthetic: synthetic_corruption must be a probability, got {corruption}")
        if height < 8 or width < 8:
            raise DataError(f"synthetic: frame size must be at least 8x8, got {height}x{width}")
        if classes_by not in ("appearance", "shape"):
            raise DataError(f"synthetic: synthetic_classes_by must be appearance or shape, got {classes_by!r}")
        if classes_by == "shape" and classes > 4:
            raise DataError(f"synthetic: classes_by=shape tells 3 shape types apart (4 classes with background), "
                            f"got synthetic_classes={classes}")
        self.classes_by = classes_by
        self.n_videos, self.n_frames, self.n_classes = int(videos), int(frames), int(classes)
        self.corruption_p, self.seed = float(corruption), int(seed)
        self.height, self.width = int(height), int(width)
        self.n_val = max(1, round(self.n_videos / 3))
        self._cache: dict[str, _Rendered] = {}
        self._appearance = _appearance(self.seed, self.n_classes)
        self.label_map = LabelMap({i: i for i in range(self.n_classes)}, ignore_index=self.ignore_index)

    @classmethod
    def from_config(cls, data_cfg: Any) -> SyntheticSource:
        g = getattr
        return cls(videos=g(data_cfg, "synthetic_videos", 6), frames=g(data_cfg, "synthetic_frames", 24),
                   classes=g(data_cfg, "synthetic_classes", 4), corruption=g(data_cfg, "synthetic_corruption", 0.3),
                   seed=g(data_cfg, "synthetic_seed", 0), height=g(data_cfg, "height", 64),
                   width=g(data_cfg, "width", 96), ignore_index=g(data_cfg, "ignore_index", 255),
                   classes_by=g(data_cfg, "synthetic_classes_by", "appearance"))

    # -- classes -------------------------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return ["background", *(f"object{c}" for c in range(1, self.n_classes))]

    @property
    def palette(self) -> np.ndarray:
        pal = (self._appearance["colour"] * 255).round().astype(np.uint8)
        pal[0] = (40, 40, 40)
        return pal

    # -- videos --------------------------------------------------------------------------------------------------
    def split_names(self) -> list[str]:
        return ["train", "val"]

    def video_name(self, k: int) -> str:
        return f"synth{k:03d}"

    def _list_split(self, split: str) -> list[Video]:
        n_train = self.n_videos - self.n_val
        ks = range(n_train) if split == "train" else range(n_train, self.n_videos)
        return [self._video(k, split) for k in ks]

    def _list_all(self) -> list[Video]:
        return [self._video(k, "all") for k in range(self.n_videos)]

    def _video(self, k: int, split: str) -> Video:
        name = self.video_name(k)
        frames = tuple(FrameRef(name, t, t, f"synthetic://{name}/{t}", f"synthetic://{name}/{t}/mask")
                       for t in range(self.n_frames))
        return Video(name, split, frames)

    # -- reading ---------------------------------------------------------------------------------------------------
    def _rendered(self, frame: FrameRef) -> tuple[_Rendered, int]:
        m = _KEY.match(frame.image)
        if m is None:
            raise DataError(f"synthetic: not a synthetic frame: {frame.image}")
        name, t = m["video"], int(m["index"])
        k = int(name[5:]) if name.startswith("synth") and name[5:].isdigit() else -1
        if not 0 <= k < self.n_videos or not 0 <= t < self.n_frames:
            raise DataError(f"synthetic: no frame {frame.image} (videos 0..{self.n_videos - 1}, "
                            f"frames 0..{self.n_frames - 1})")
        if name not in self._cache:
            self._cache[name] = self._render(k)
        return self._cache[name], t

    def read_image(self, frame: FrameRef) -> np.ndarray:
        r, t = self._rendered(frame)
        return r.images[t].copy()

    def _read_raw_mask(self, frame: FrameRef) -> np.ndarray:
        r, t = self._rendered(frame)
        return r.masks[t]

    def _image_size(self, frame: FrameRef) -> tuple[int, int]:
        return self.height, self.width

    def corrupted(self, frame: FrameRef) -> str | None:
        """The corruption applied to ``frame`` (one of ``CORRUPTIONS``) or None for a clean frame."""
        r, t = self._rendered(frame)
        return r.kinds[t]

    def corruptions(self, video: Video | str) -> list[str | None]:
        """Per-frame corruption kinds of a whole video."""
        name = video if isinstance(video, str) else video.name
        return list(self._rendered(FrameRef(name, 0, 0, f"synthetic://{name}/0"))[0].kinds)

    def __repr__(self) -> str:
        return (f"SyntheticSource(videos={self.n_videos}, frames={self.n_frames}, classes={self.n_classes}, "
                f"corruption={self.corruption_p}, seed={self.seed}, size={self.height}x{self.width}, "
                f"classes_by={self.classes_by})")

    # -- generator ------------------------------------------------------------------------------------------------
    def _render(self, k: int) -> _Rendered:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, k]))
        h, w, t_len, kc = self.height, self.width, self.n_frames, self.n_classes
        s = float(min(h, w))
        app = self._appearance

        # background: a few sinusoids in world coordinates, low saturation so shapes stand out by colour
        nb = 4
        b_freq = rng.uniform(1.5, 6.0, nb) * 2 * np.pi / s
        b_dir = rng.uniform(0, np.pi, nb)
        b_phase = rng.uniform(0, 2 * np.pi, nb)
        b_amp = rng.uniform(0.3, 1.0, nb)
        b_amp /= b_amp.sum()
        tint_a = rng.uniform(0.25, 0.55, 3) * np.array([1.0, 0.95, 0.9])
        tint_b = tint_a.mean() + rng.uniform(-0.08, 0.08, 3)

        # camera: linear drift plus a slow wobble, in pixels
        drift = rng.uniform(-0.015, 0.015, 2) * s
        wobble_amp = rng.uniform(0.0, 0.02, 2) * s
        wobble_freq = rng.uniform(0.1, 0.3)
        tt = np.arange(t_len, dtype=np.float64)
        cam = drift[None] * tt[:, None] + wobble_amp[None] * np.sin(wobble_freq * tt)[:, None]  # (T, 2) as (y, x)

        # shapes: every foreground class at least once, then a few extras; z-order = list order
        extra = rng.integers(0, max(1, kc - 1) + 1)
        classes = np.concatenate([np.arange(1, kc), rng.integers(1, kc, extra)]) if kc > 1 else np.zeros(0, int)
        rng.shuffle(classes)
        n = len(classes)
        kind = rng.integers(0, 3, n)  # 0 ellipse, 1 rectangle, 2 diamond
        if self.classes_by == "shape":
            kind = (classes - 1) % 3  # the class is the shape type (drawn above all the same: same random stream)
        half = rng.uniform(0.13, 0.26, (n, 2)) * s  # half-axes (a, b) in pixels
        pos0 = rng.uniform([0.1 * h, 0.1 * w], [0.9 * h, 0.9 * w], (n, 2))
        vel = rng.uniform(-0.04, 0.04, (n, 2)) * s
        ang0 = rng.uniform(0, np.pi, n)
        omega = rng.uniform(-0.08, 0.08, n)
        pos = _bounce(pos0[None] + vel[None] * tt[:, None, None], np.array([0.0, 0.0]), np.array([h, w]))  # (T, n, 2)

        # corruption plan, drawn before rendering so it does not depend on the frame contents
        # (the same draws whatever the probability, so a frame clean at p=0.3 is pixel-identical at p=0)
        corrupt = rng.random(t_len) < self.corruption_p
        kind_ids = rng.integers(0, len(CORRUPTIONS), t_len)
        kinds = tuple(CORRUPTIONS[int(i)] if c else None for c, i in zip(corrupt, kind_ids, strict=True))
        cparams = rng.random((t_len, 8))

        yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
        images = np.empty((t_len, h, w, 3), dtype=np.uint8)
        masks = np.zeros((t_len, h, w), dtype=np.uint8)
        for t in range(t_len):
            wy, wx = yy + np.float32(cam[t, 0]), xx + np.float32(cam[t, 1])  # world coordinates of the pixels
            tex = np.zeros((h, w), dtype=np.float32)
            for j in range(nb):
                tex += np.float32(b_amp[j]) * np.sin(np.float32(b_freq[j]) * (np.cos(b_dir[j]) * wx + np.sin(
                    b_dir[j]) * wy) + np.float32(b_phase[j])).astype(np.float32)
            img = tint_b[None, None, :].astype(np.float32) + tex[..., None] * tint_a[None, None, :].astype(np.float32)
            lbl = masks[t]
            for i in range(n):
                # shapes live in world coordinates too: the camera drift moves them with the background
                dy, dx = wy - np.float32(pos[t, i, 0] + cam[0, 0]), wx - np.float32(pos[t, i, 1] + cam[0, 1])
                a = ang0[i] + omega[i] * t
                ca, sa = np.float32(np.cos(a)), np.float32(np.sin(a))
                u, v = ca * dx + sa * dy, -sa * dx + ca * dy  # shape-local coordinates
                un, vn = u / np.float32(half[i, 1]), v / np.float32(half[i, 0])
                if kind[i] == 0:
                    inside = un * un + vn * vn <= 1.0
                elif kind[i] == 1:
                    inside = (np.abs(un) <= 1.0) & (np.abs(vn) <= 1.0)
                else:
                    inside = np.abs(un) + np.abs(vn) <= 1.0
                if not inside.any():
                    continue
                c = int(classes[i])
                img[inside] = _paint(app, 1 if self.classes_by == "shape" else c, u[inside], v[inside], s)
                lbl[inside] = c
            # per-frame noise stream: corrupting one frame does not change the pixels of the others
            noise = np.random.default_rng(np.random.SeedSequence([self.seed, k, t + 1]))
            img += noise.normal(0.0, 0.012, img.shape).astype(np.float32)  # mild sensor noise
            if kinds[t] is not None:
                img = _corrupt(img, kinds[t], cparams[t], app, noise, s)
            images[t] = (img.clip(0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return _Rendered(images, masks, kinds)


def _appearance(seed: int, kc: int) -> dict[str, np.ndarray]:
    """Per-class colour (K, 3) in [0, 1], stripe frequency and direction; shared by all videos of a seed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _APPEARANCE_STREAM]))
    hues = (np.arange(max(kc - 1, 1)) / max(kc - 1, 1) + rng.uniform(0, 1)) % 1.0
    colour = np.zeros((kc, 3))
    colour[0] = (0.4, 0.4, 0.4)
    for c in range(1, kc):
        colour[c] = colorsys.hsv_to_rgb(hues[c - 1], rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0))
    freq = rng.uniform(2.0, 5.0, kc)  # stripes per shape-size unit
    direction = rng.uniform(0, np.pi, kc)
    return {"colour": colour, "freq": freq, "dir": direction}


def _paint(app: dict[str, np.ndarray], c: int, u: np.ndarray, v: np.ndarray, s: float) -> np.ndarray:
    """Colour (N, 3) of class ``c`` at shape-local coordinates: base colour modulated by class-specific stripes."""
    d = app["dir"][c]
    phase = (np.cos(d) * u + np.sin(d) * v) * np.float32(2 * np.pi * app["freq"][c] / (0.25 * s))
    stripes = np.float32(0.75) + np.float32(0.25) * np.sin(phase).astype(np.float32)
    return stripes[:, None] * app["colour"][c][None, :].astype(np.float32)


def _bounce(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Reflect positions into [lo, hi] (a triangle wave), so shapes bounce off the scene borders."""
    span = hi - lo
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def _box_blur(img: np.ndarray, r: int) -> np.ndarray:
    """Separable box blur of radius r, edges replicated. img (H, W, C)."""
    out = img
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r + 1, r)
        p = np.pad(out, pad, mode="edge")
        cs = np.cumsum(p, axis=axis, dtype=np.float64)
        n = out.shape[axis]
        hi = np.take(cs, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis)
        lo = np.take(cs, np.arange(0, n), axis=axis)
        out = ((hi - lo) / (2 * r + 1)).astype(np.float32)
    return out


def _rect(p: np.ndarray, h: int, w: int) -> tuple[slice, slice]:
    """A rectangle covering roughly 25-45% of the frame, placed by the uniform numbers in ``p``."""
    rh = int(round(h * (0.45 + 0.25 * p[0])))
    rw = int(round(w * (0.55 + 0.25 * p[1])))
    y0 = int(p[2] * (h - rh + 1))
    x0 = int(p[3] * (w - rw + 1))
    return slice(y0, y0 + rh), slice(x0, x0 + rw)


def _corrupt(img: np.ndarray, kind: str, p: np.ndarray, app: dict[str, np.ndarray], rng: np.random.Generator,
             s: float) -> np.ndarray:
    h, w, _ = img.shape
    if kind == "noise":
        return img + rng.normal(0.0, 0.35, img.shape).astype(np.float32)
    if kind == "blur":
        return _box_blur(img, max(2, int(round(s * (0.08 + 0.06 * p[0])))))
    out = img.copy()
    ys, xs = _rect(p, h, w)
    if kind == "occluder":
        # a distractor with a real class's look, so colour alone would mislabel it
        c = 1 + int(p[4] * (len(app["colour"]) - 1)) if len(app["colour"]) > 1 else 0
        yy, xx = np.meshgrid(np.arange(ys.stop - ys.start, dtype=np.float32),
                             np.arange(xs.stop - xs.start, dtype=np.float32), indexing="ij")
        out[ys, xs] = _paint(app, c, xx.ravel(), yy.ravel(), s).reshape(*yy.shape, 3)
        return out
    out[ys, xs] = np.float32(0.5)  # dropout: the region carries no information
    return out
