"""Run a trained model over a video file or a frame folder: per-frame masks, an overlay video, a summary.

Three stages overlap, joined by bounded queues (``QUEUE_FRAMES`` items each):

* a **reader thread** decodes one frame at a time and preprocesses it (torch resize + normalisation);
* the **calling thread** pushes each frame through the model (a ``Streamer`` from
  ``vidnas.export.runtime.load_runner``: ``model.stream()`` in PyTorch, a streamer of ``vidnas.export.ort_streamers``
  in onnxruntime) and times only that;
* a **writer thread** turns logits into masks, writes the PNGs, paints and encodes the overlay video.

Decoding, PNG and H.264 encoding run in C with Python's lock released, so on a 2-core CPU they use the core the model
leaves free. The streamer keeps only its decoder state, the pending queue holds at most ``lag + 1`` frames (centred
windows emit a frame ``lag`` pushes after it arrived), and the queues hold at most ``2 * QUEUE_FRAMES`` more:
memory does not grow with the video's length (tested with tracemalloc). An error in any stage stops the other two;
masks already written stay valid, the overlay and the summary are not written.

Each frame is resized to the model input size exactly as in evaluation (bilinear, antialiased, then ImageNet
normalisation); its mask (argmax of the logits) is mapped back to the frame's original size with nearest neighbour.

Outputs in ``out_dir``:

* ``masks/000000.png`` ...: class ids (uint8 PNG; 16-bit when K > 256) at the original size, one per frame, each
  written to a temporary file and renamed, so a crash leaves only complete masks.
* ``overlay.mp4``: the frames with the masks blended in the palette's colours, at the input's frame rate; written
  as ``.overlay.mp4.partial`` and renamed when complete.
* ``summary.json``: frames, sizes, runtime, latency statistics, FPS (written atomically, last; a stale one is
  removed at the start so its presence means the run finished).
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vidnas.data import default_palette, normalize, resize_image
from vidnas.data import overlay as paint_overlay
from vidnas.export.video import OverlayWriter, VideoError, open_frames
from vidnas.models import Streamer
from vidnas.rundir import PREDICT_MANIFEST, prepare_output_dir
from vidnas.utils import atomic_write as atomic_save
from vidnas.utils import atomic_write_json as atomic_save_json

__all__ = [
    "preprocess",
    "StreamingStats",
    "NearestResizer",
    "PredictResult",
    "predict_video",
    "DEFAULT_FOLDER_FPS",
    "QUEUE_FRAMES",
]

logger = logging.getLogger(__name__)

DEFAULT_FOLDER_FPS = 25.0  # overlay frame rate for frame folders (no rate recorded); CholecSeg8K's 25 fps
QUEUE_FRAMES = 2  # frames waiting between two stages: enough to absorb jitter, small enough to keep memory flat
_END = object()  # end-of-stream marker in the queues
_POLL_S = 0.05  # how often a blocked stage checks whether another one failed


class _ReadError:
    """The reader's failure, queued behind the frames it did decode (they still get their masks)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Stop(Exception):
    """Another stage failed or was interrupted: this one stops quietly (the failure is raised by the caller)."""


class _Stages:
    """Shared state of the three stages: the first failure, and a stop flag every blocking call checks."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc
        self.stop.set()

    def put(self, q: queue.Queue, item: object) -> None:
        while True:
            if self.stop.is_set():
                raise _Stop
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def get(self, q: queue.Queue) -> object:
        while True:
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                if self.stop.is_set():
                    raise _Stop from None


def preprocess(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H0, W0, 3) RGB -> (1, 3, H, W) float32 ImageNet-normalised, resized as in evaluation."""
    return normalize(resize_image(rgb, size[0], size[1]))[None].numpy()


class StreamingStats:
    """Latency statistics in constant memory: exact count, mean, min, max; quantiles from a log histogram.

    The histogram has ``bins_per_decade`` bins per factor of 10 from ``lo`` to ``lo * 10**decades`` milliseconds,
    so a quantile is exact to within half a bin (about +-2.3% with 50 bins per decade).
    """

    def __init__(self, lo: float = 1e-3, decades: int = 9, bins_per_decade: int = 50) -> None:
        self.lo = lo
        self.bins_per_decade = bins_per_decade
        self.counts = np.zeros(decades * bins_per_decade, dtype=np.int64)
        self.n = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, ms: float) -> None:
        """Record one value (milliseconds)."""
        self.n += 1
        self.total += ms
        self.min = min(self.min, ms)
        self.max = max(self.max, ms)
        i = int(math.floor(math.log10(max(ms, self.lo) / self.lo) * self.bins_per_decade))
        self.counts[min(max(i, 0), len(self.counts) - 1)] += 1

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else float("nan")

    def quantile(self, q: float) -> float:
        """Approximate q-quantile (0 <= q <= 1): the geometric centre of the bin holding it, clipped to [min, max]."""
        if not self.n:
            return float("nan")
        i = int(np.searchsorted(np.cumsum(self.counts), q * self.n, side="left"))
        centre = self.lo * 10 ** ((i + 0.5) / self.bins_per_decade)
        return float(min(max(centre, self.min), self.max))

    def to_dict(self) -> dict[str, float | int]:
        """``n, mean, median, p90, p99, min, max`` (milliseconds)."""
        if not self.n:
            return {"n": 0}
        return {"n": self.n, "mean": self.mean, "median": self.quantile(0.5), "p90": self.quantile(0.9),
                "p99": self.quantile(0.99), "min": self.min, "max": self.max}


class NearestResizer:
    """Nearest-neighbour resizing of class-id maps between two fixed sizes, by precomputed index arrays.

    Samples pixel centres (source index ``floor((i + 0.5) * src / dst)``), the rule of ``vidnas.data.resize_mask``
    (torch "nearest-exact") and PIL's NEAREST, at the cost of one fancy-indexing copy per frame.

    Args:
        src_hw: (h, w) of the maps given.
        dst_hw: (H, W) of the maps returned.
    """

    def __init__(self, src_hw: tuple[int, ...], dst_hw: tuple[int, ...]) -> None:
        (sh, sw), (dh, dw) = src_hw[:2], dst_hw[:2]
        self.rows = np.minimum(((np.arange(dh) + 0.5) * (sh / dh)).astype(np.int64), sh - 1)[:, None]  # (H, 1)
        self.cols = np.minimum(((np.arange(dw) + 0.5) * (sw / dw)).astype(np.int64), sw - 1)[None, :]  # (1, W)

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        """(h, w) -> (H, W), same dtype."""
        return labels[self.rows, self.cols]


@dataclass
class PredictResult:
    """What ``predict_video`` did (also written to ``summary.json``).

    Attributes:
        frames: frames read and segmented.
        input_size: (H, W) of the input frames.
        model_size: (H, W) the model ran at.
        model_fps: frames / time spent in the streamer (encode + window decode), the ST-NAS FPS.
        pipeline_fps: frames / wall time of the whole loop (decoding, resizing, writing included).
        latency_ms: per-push streamer latency statistics.
        summary: the full ``summary.json`` content.
        out_dir, masks_dir, overlay, summary_path: where the outputs are.
    """

    frames: int
    input_size: tuple[int, int]
    model_size: tuple[int, int]
    model_fps: float
    pipeline_fps: float
    latency_ms: dict[str, Any]
    summary: dict[str, Any]
    out_dir: Path
    masks_dir: Path
    overlay: Path | None
    summary_path: Path


def predict_video(
    source: str | Path,
    out_dir: str | Path,
    runner: Streamer,
    *,
    max_frames: int | None = None,
    fps: float | None = None,
    overlay: bool = True,
    alpha: float = 0.5,
    codec: str | None = None,
    progress: Callable[[int, float], None] | None = None,
    info: dict[str, Any] | None = None,
    prepare: bool = True,
    overwrite: bool = False,
) -> PredictResult:
    """Segment every frame of ``source`` with ``runner``, streaming; write masks, an overlay video and a summary.

    Args:
        source: a video file (anything PyAV/FFmpeg reads) or a folder of *.png / *.jpg frames.
        out_dir: output directory: new, empty, or an earlier prediction (whose own outputs, listed in its
            ``vidnas_predict.json``, are replaced); anything else is refused (``vidnas.rundir.prepare_output_dir``).
        runner: ``load_runner(...)``: a ``Streamer`` with numpy frames that describes its model (``input_size``,
            ``num_classes``, ``class_names``, ``palette``): a ``TorchRunner`` or an onnxruntime streamer; reset
            before use.
        max_frames: stop after this many frames (None: all).
        fps: overlay frame rate; None = the video's own, or ``DEFAULT_FOLDER_FPS`` for folders.
        overlay: write ``overlay.mp4``.
        alpha: opacity of the mask colours in the overlay.
        codec: video encoder; None = h264 if PyAV has one, else mpeg4.
        progress: called after every finished frame with (frames done, streamer FPS so far).
        info: extra fields for ``summary.json`` (e.g. the checkpoint path).
        prepare: check and prepare ``out_dir`` here (False: the caller did, e.g. before exporting into it).
        overwrite: write into a non-empty directory that holds no prediction (nothing in it is deleted).

    Returns:
        A ``PredictResult``.

    Raises:
        VideoError: unreadable or corrupt input (names the file); masks written before the error stay valid.
        OutputDirError: ``out_dir`` holds someone else's files or a data set.
    """
    out_dir = Path(out_dir)
    if prepare:
        prepare_output_dir(out_dir, "predict", overwrite=overwrite)
    masks_dir = out_dir / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / "summary.json"
    manifest = out_dir / PREDICT_MANIFEST
    # the manifest comes first: from now on the masks, overlay and summary here are this command's to replace
    owned = ["summary.json", "overlay.mp4", *(["onnx"] if (out_dir / "onnx" / "export.json").is_file() else [])]
    atomic_save_json(manifest, {"kind": "vidnas predict", "complete": False, "files": owned,
                                "masks": "masks/NNNNNN.png, one per frame"})

    k = int(runner.num_classes)
    palette = np.asarray(runner.palette if runner.palette is not None else default_palette(k), dtype=np.uint8)
    mask_dtype = np.uint8 if k <= 256 else np.uint16
    model_hw = tuple(int(s) for s in runner.input_size)
    runner.reset()

    latency = StreamingStats()
    class_pixels = np.zeros(k, dtype=np.int64)
    pending: collections.deque[tuple[int, np.ndarray]] = collections.deque()  # frames awaiting logits (<= lag + 1)
    model_seconds = 0.0
    done = 0
    first_hw: tuple[int, int] | None = None
    writer: OverlayWriter | None = None
    resizer: NearestResizer | None = None
    stages = _Stages()
    to_model: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)  # (index, rgb, x) from the reader
    to_writer: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)  # (index, rgb, logits) for the writer
    t_start = time.perf_counter()

    def emit(index: int, rgb: np.ndarray, logits: np.ndarray) -> None:
        nonlocal done, resizer
        pred = logits[0].argmax(axis=0).astype(mask_dtype)  # (H, W) class ids at model size
        if resizer is None:
            resizer = NearestResizer(pred.shape, rgb.shape[:2])
        mask = resizer(pred)  # (H0, W0)
        class_pixels[:] += np.bincount(mask.ravel(), minlength=k)[:k]
        atomic_save(masks_dir / f"{index:06d}.png", lambda tmp: Image.fromarray(mask).save(tmp, format="PNG"))
        if writer is not None:
            writer.write(paint_overlay(rgb, mask, palette, ignore_index=None, alpha=alpha))
        done += 1
        if progress is not None:
            progress(done, done / model_seconds if model_seconds > 0 else float("nan"))

    def frames(reader: Any) -> Iterator[tuple[int, np.ndarray]]:
        nonlocal first_hw
        for index, rgb in enumerate(reader):
            if max_frames is not None and index >= max_frames:
                return
            hw = (int(rgb.shape[0]), int(rgb.shape[1]))
            if first_hw is None:
                first_hw = hw
            elif hw != first_hw:
                raise VideoError(f"{reader.path}: frame {index} is {hw[0]}x{hw[1]} but the first frame is "
                                 f"{first_hw[0]}x{first_hw[1]}; all frames must have one size")
            yield index, rgb

    def read_stage(reader: Any) -> None:
        try:
            try:
                for index, rgb in frames(reader):
                    stages.put(to_model, (index, rgb, preprocess(rgb, model_hw)))  # (1, 3, H, W)
            except (VideoError, OSError, ValueError) as e:  # a corrupt video: after the frames decoded before it
                stages.put(to_model, _ReadError(e))
                return
            stages.put(to_model, _END)
        except _Stop:
            pass
        except BaseException as e:
            stages.fail(e)

    def write_stage() -> None:
        try:
            while True:
                item = stages.get(to_writer)
                if item is _END:
                    return
                emit(*item)  # type: ignore[misc]
        except _Stop:
            pass
        except BaseException as e:
            stages.fail(e)

    reader = open_frames(source)
    threads: list[threading.Thread] = []
    try:
        with reader:
            rate = fps or reader.fps or DEFAULT_FOLDER_FPS
            writer = OverlayWriter(out_dir / "overlay.mp4", rate, codec=codec) if overlay else None
            threads = [threading.Thread(target=read_stage, args=(reader,), name="vidnas-predict-reader",
                                        daemon=True),
                       threading.Thread(target=write_stage, name="vidnas-predict-writer", daemon=True)]
            for th in threads:
                th.start()
            read_error: BaseException | None = None
            try:
                while True:
                    item = stages.get(to_model)
                    if item is _END:
                        break
                    if isinstance(item, _ReadError):
                        read_error = item.exc
                        break
                    index, rgb, x = item  # type: ignore[misc]
                    pending.append((index, rgb))
                    t0 = time.perf_counter()
                    logits = runner.push(x)
                    dt = time.perf_counter() - t0
                    model_seconds += dt
                    latency.add(dt * 1e3)
                    if logits is not None:
                        stages.put(to_writer, (*pending.popleft(), logits))
                if read_error is None:
                    t0 = time.perf_counter()
                    tail = runner.flush()  # centred windows: the last `lag` frames, with the last frame repeated
                    model_seconds += time.perf_counter() - t0
                    for logits in tail:
                        stages.put(to_writer, (*pending.popleft(), logits))
                else:
                    runner.reset()
                    pending.clear()  # a broken stream: frames still waiting for future context get no mask
                stages.put(to_writer, _END)  # the writer finishes every mask handed to it
            except _Stop:
                pass
            except BaseException as e:
                stages.fail(e)
            threads[1].join()
            stages.stop.set()
            threads[0].join()
            if stages.error is not None:
                raise stages.error
            if read_error is not None:
                raise read_error
        if first_hw is None:
            raise VideoError(f"{source}: no frames to segment")
        overlay_path = writer.close() if writer is not None else None
    except BaseException:
        stages.stop.set()
        for th in threads:
            th.join(timeout=10)
        if writer is not None:
            writer.abort()
        raise
    wall = time.perf_counter() - t_start
    assert not pending, "every pushed frame must have been emitted"

    model_fps = done / model_seconds if model_seconds > 0 else float("nan")
    pipeline_fps = done / wall if wall > 0 else float("nan")
    total_px = max(int(class_pixels.sum()), 1)
    names = list(runner.class_names) or [f"class{i}" for i in range(k)]
    summary: dict[str, Any] = {
        "input": str(source),
        "input_kind": reader.kind,
        "frames": done,
        "input_size": list(first_hw),
        "model_size": list(model_hw),
        "input_fps": reader.fps,
        "runtime": runner.runtime,
        "protocol": getattr(runner, "protocol", "window"),
        "providers": list(getattr(runner, "providers", [])) or None,
        "window": int(runner.window),
        "temporal": "causal" if runner.causal else "centred",
        "num_classes": k,
        "class_names": names,
        "latency_ms": latency.to_dict(),
        "model_fps": model_fps,
        "pipeline_fps": pipeline_fps,
        "model_seconds": model_seconds,
        "wall_seconds": wall,
        "class_fraction": {n: float(c) / total_px for n, c in zip(names, class_pixels.tolist(), strict=True)},
        "masks": "masks/",
        "overlay": None if overlay_path is None else overlay_path.name,
        "overlay_fps": rate if overlay_path is not None else None,
        "overlay_codec": writer.codec if writer is not None else None,
        **(info or {}),
    }
    atomic_save_json(summary_path, summary)
    written = [f"masks/{i:06d}.png" for i in range(done)]
    atomic_save_json(manifest, {"kind": "vidnas predict", "complete": True, "files": [*owned, *written],
                                "masks": "masks/NNNNNN.png, one per frame"})
    return PredictResult(frames=done, input_size=first_hw, model_size=model_hw, model_fps=model_fps,
                         pipeline_fps=pipeline_fps, latency_ms=latency.to_dict(), summary=summary, out_dir=out_dir,
                         masks_dir=masks_dir, overlay=overlay_path, summary_path=summary_path)
