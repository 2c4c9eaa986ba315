"""Frame readers (video files via PyAV, frame folders) and the overlay video writer, one frame at a time.

Nothing here holds more than the current frame: readers decode lazily, the writer encodes as frames arrive.
"""

from __future__ import annotations

import fractions
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vidnas.data.base import natural_key

__all__ = ["VideoError", "FrameReader", "open_frames", "OverlayWriter", "IMAGE_SUFFIXES", "pick_codec", "X264_PRESET"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CODEC_PREFERENCE = ("libx264", "h264", "mpeg4")  # h264 when the FFmpeg inside PyAV has an encoder for it
# x264's preset for the overlay: measured on 480x854 DAVIS frames (2-core CPU), CPU time per frame 27.8 ms with the
# default (medium), 10.8 ms with veryfast, for a file of about the same size (739 vs 809 KB for 40 frames): the
# overlay is a preview, and its encoder shares the CPU with the model in `vidnas predict`
X264_PRESET = "veryfast"


class VideoError(ValueError):
    """A video or frame folder is missing, unreadable or corrupt; the message names the file."""


class FrameReader:
    """Iterate over the RGB frames of a video file or a frame folder, decoding one frame at a time.

    Use ``open_frames(path)``. Iterating yields uint8 (H, W, 3) RGB arrays; use as a context manager to close the
    file.

    Attributes:
        path: the input.
        kind: ``"video"`` or ``"folder"``.
        fps: frames per second of a video when its container says (None otherwise).
        num_frames: the frame count the container or folder reports (None when unknown; a video's may be wrong).
    """

    def __init__(self, path: Path, kind: str, *, fps: float | None, num_frames: int | None,
                 container: Any = None, files: list[Path] | None = None) -> None:
        self.path = path
        self.kind = kind
        self.fps = fps
        self.num_frames = num_frames
        self._container = container
        self._files = files or []

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._iter_video() if self.kind == "video" else self._iter_folder()

    def _iter_video(self) -> Iterator[np.ndarray]:
        import av

        assert self._container is not None
        n = 0
        stream = self._container.streams.video[0]
        try:
            for frame in self._container.decode(stream):
                n += 1
                yield frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8
        except (av.FFmpegError, OSError, ValueError) as e:
            raise VideoError(f"cannot decode video {self.path} after {n} frame(s): {e}") from e
        if n == 0:
            raise VideoError(f"video {self.path} has no decodable frames")

    def _iter_folder(self) -> Iterator[np.ndarray]:
        for f in self._files:
            try:
                with Image.open(f) as im:
                    yield np.array(im.convert("RGB"))  # (H, W, 3) uint8, writable (torch.as_tensor warns otherwise)
            except OSError as e:
                raise VideoError(f"cannot read frame {f}: {e}") from e

    def close(self) -> None:
        """Close the video file (no-op for folders)."""
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_frames(path: str | os.PathLike) -> FrameReader:
    """Open a video file (anything FFmpeg reads: mp4, avi, mov, mkv, ...) or a folder of *.png / *.jpg frames.

    Folder frames are taken in natural order of their file names (``frame2`` before ``frame10``).

    Raises:
        VideoError: the path does not exist, the folder has no frames, or the file is not a readable video.
    """
    import av

    p = Path(path)
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda f: natural_key(f.name))
        if not files:
            raise VideoError(f"no frames (*.png, *.jpg) in folder {p}")
        return FrameReader(p, "folder", fps=None, num_frames=len(files), files=files)
    if not p.is_file():
        raise VideoError(f"input not found: {p}")
    if p.suffix.lower() in IMAGE_SUFFIXES:
        raise VideoError(f"{p} is an image, not a video: give a video file, or the folder that holds the frames "
                         f"({p.parent})")
    try:
        container = av.open(str(p))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"cannot open video {p}: {e}") from e
    if not container.streams.video:
        container.close()
        raise VideoError(f"{p} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame-threaded decoding: decode overlaps with the model on a second core
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None
    return FrameReader(p, "video", fps=fps, num_frames=int(stream.frames) or None, container=container)


def pick_codec(preference: tuple[str, ...] = CODEC_PREFERENCE) -> str:
    """The first encoder of ``preference`` the FFmpeg inside PyAV provides (h264 if any, else mpeg4)."""
    import av

    for name in preference:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # an unknown encoder raises UnknownCodecError or ValueError depending on the version
            continue
    raise VideoError(f"none of the video encoders {', '.join(preference)} is available in PyAV")


class OverlayWriter:
    """Encode RGB frames into an mp4, one at a time; the file appears under its name only when ``close()`` succeeds.

    H.264 and MPEG-4 in yuv420p need even sides, so odd frames are padded by one edge row / column.

    Args:
        path: destination (``overlay.mp4``).
        fps: frame rate (the input video's when known).
        codec: encoder name; None = ``pick_codec()``.
    """

    def __init__(self, path: str | os.PathLike, fps: float, *, codec: str | None = None) -> None:
        self.path = Path(path)
        self.fps = fps
        self.codec = codec or pick_codec()
        self.frames = 0
        self._tmp = self.path.with_name(f".{self.path.name}.partial")
        self._container: Any = None
        self._stream: Any = None

    def write(self, rgb: np.ndarray) -> None:
        """Encode one uint8 (H, W, 3) frame (every frame must have the size of the first)."""
        import av

        h, w = rgb.shape[:2]
        if self._container is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self._tmp), "w", format="mp4")
            rate = fractions.Fraction(self.fps).limit_denominator(1001)
            self._stream = self._container.add_stream(self.codec, rate=rate)
            self._stream.width, self._stream.height = w + w % 2, h + h % 2
            self._stream.pix_fmt = "yuv420p"
            if self.codec == "libx264":
                self._stream.options = {"preset": X264_PRESET}
            self._size = (h, w)
        elif (h, w) != self._size:
            raise VideoError(f"overlay frame {self.frames} is {h}x{w}, the video is {self._size[0]}x{self._size[1]}")
        if h % 2 or w % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path | None:
        """Flush the encoder and move the file into place; returns its path (None when no frame was written)."""
        if self._container is None:
            return None
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file (after an error)."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # closing a broken muxer may fail again; the file is deleted anyway
                pass
            self._container = None
        self._tmp.unlink(missing_ok=True)
