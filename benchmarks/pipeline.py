"""Does `vidnas predict` keep up with its model? Model FPS vs pipeline FPS on a real video.

Builds an H.264 mp4 from the shared DAVIS 2016 frames (the four sequences of ``davis2016-subset``, 199 frames of
480x854, read in place and written to a temporary directory, never into the repository), builds the CamVid
EfficientNet-Lite0 models of ``configs/camvid_sptcn_cpu.yaml`` at 360x480 (random weights: speed does not depend
on them) -- the temporal one (SP-TCN, window 3, causal) and its per-frame twin (head, window 1) -- saves them as
checkpoints as ``vidnas train`` does, and runs ``vidnas.export.predict_video`` on the mp4 with each, as ``vidnas
predict`` does: masks, overlay video, summary. Prints, per model and runtime:

* ``model_fps``: frames / time inside the streamer (what the model alone sustains);
* ``pipeline_fps``: frames / wall time of the whole run (decoding, resizing, mask PNGs, overlay H.264 included);
* ``ratio`` = pipeline / model: 1.0 means reading and writing cost nothing beside the model (the goal: >= 0.8).

    python benchmarks/pipeline.py                                # torch, both models, 1 torch thread
    python benchmarks/pipeline.py --runtime torch,onnxruntime    # the onnxruntime runner too (openvino: extra)
    python benchmarks/pipeline.py --frames 60 --models temporal  # shorter
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vidnas.bench import BenchRow, device_line, format_table
from vidnas.checkpoint import save_checkpoint
from vidnas.config import config_to_dict, load_config
from vidnas.data.base import natural_key
from vidnas.export import RUNTIMES, OverlayWriter, load_runner, predict_video
from vidnas.models import build_model
from vidnas.utils import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "camvid_sptcn_cpu.yaml"
DEFAULT_DATA = Path(os.environ.get("VIDNAS_SHARED_DATA", REPO.parent / "shared" / "data"))
SEQUENCES = ("blackswan", "car-shadow", "dog", "libby")
MODEL_SIZE = (360, 480)  # CamVid's frame size
NUM_CLASSES = 11  # CamVid
MODELS = {
    "temporal": ["model.decoder=sptcn", "data.window=3"],  # SP-TCN width 64, dilations 1,2 (the config's)
    "frame": ["model.decoder=head", "data.window=1"],  # the per-frame twin
}
COLUMNS = ("name", "runtime", "protocol", "frames", "model_fps", "pipeline_fps", "ratio", "wall_s", "threads")

__all__ = ["build_video", "build_checkpoints", "run", "main"]


def build_video(davis_root: Path, out: Path, *, frames: int | None = None, fps: float = 24.0) -> tuple[Path, int]:
    """Encode the DAVIS subset's frames (sequence after sequence) as one mp4; returns (path, frame count)."""
    files: list[Path] = []
    for seq in SEQUENCES:
        folder = davis_root / "JPEGImages" / "480p" / seq
        files += sorted((f for f in folder.glob("*.jpg")), key=lambda f: natural_key(f.name))
    if not files:
        raise FileNotFoundError(f"no DAVIS frames under {davis_root / 'JPEGImages' / '480p'}")
    files = files[:frames] if frames else files
    writer = OverlayWriter(out, fps)
    try:
        for f in files:
            with Image.open(f) as im:
                writer.write(np.asarray(im.convert("RGB")))
        path = writer.close()
    except BaseException:
        writer.abort()
        raise
    assert path is not None
    return path, len(files)


def build_checkpoints(out_dir: Path, names: Sequence[str], size: tuple[int, int] = MODEL_SIZE) -> dict[str, Path]:
    """The CamVid EfficientNet-Lite0 models (random weights) saved as `vidnas train` checkpoints."""
    out = {}
    for name in names:
        cfg = load_config(CONFIG, [f"data.height={size[0]}", f"data.width={size[1]}", "model.weights=null",
                                   *MODELS[name]])
        torch.manual_seed(0)
        model = build_model(cfg, num_classes=NUM_CLASSES)
        out[name] = save_checkpoint(out_dir / f"{name}.pt", {"model": model.state_dict(), "config": config_to_dict(cfg),
                                                            "num_classes": NUM_CLASSES})
    return out


def run(video: Path, checkpoints: dict[str, Path], work: Path, *, runtimes: Sequence[str], threads: int,
        overlay: bool = True) -> list[BenchRow]:
    """Predict the video with each checkpoint and runtime (after a 5-frame warm-up run); one row each."""
    rows = []
    for name, ckpt in checkpoints.items():
        for runtime in runtimes:
            export_dir = work / f"onnx-{name}-{runtime}" if runtime != "torch" else None
            runner = load_runner(ckpt, runtime=runtime, export_dir=export_dir, intra_op_threads=threads)
            predict_video(video, work / f"warm-{name}-{runtime}", runner, max_frames=5, overlay=overlay)
            res = predict_video(video, work / f"pred-{name}-{runtime}", runner, overlay=overlay)
            s = res.summary
            rows.append(BenchRow(name, latency_ms=1000.0 / res.model_fps, extra={
                "runtime": runtime, "protocol": s["protocol"], "frames": res.frames, "model_fps": res.model_fps,
                "pipeline_fps": res.pipeline_fps, "ratio": res.pipeline_fps / res.model_fps,
                "wall_s": s["wall_seconds"], "model_s": s["model_seconds"], "threads": torch.get_num_threads(),
                "input_size": s["input_size"], "model_size": s["model_size"], "overlay_codec": s["overlay_codec"],
                "latency_ms": s["latency_ms"]}))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (davis2016-subset/)")
    parser.add_argument("--frames", type=int, default=None, help="use only the first N frames (default: all 199)")
    parser.add_argument("--models", default="temporal,frame", help="comma-separated: temporal, frame")
    parser.add_argument("--runtime", default="torch", help=f"comma-separated: {', '.join(RUNTIMES)}")
    parser.add_argument("--threads", type=int, default=1, help="torch / onnxruntime / openvino threads of the model "
                        "(default 1)")
    parser.add_argument("--height", type=int, default=MODEL_SIZE[0])
    parser.add_argument("--width", type=int, default=MODEL_SIZE[1])
    parser.add_argument("--no-overlay", action="store_true", help="masks only, no overlay video")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    runtimes = [r.strip() for r in args.runtime.split(",") if r.strip()]
    bad = [n for n in names if n not in MODELS] + [r for r in runtimes if r not in RUNTIMES]
    if bad or not names or not runtimes:
        parser.error(f"unknown model or runtime {bad}; models: {', '.join(MODELS)}; runtimes: {', '.join(RUNTIMES)}")
    if args.threads < 1 or (args.frames is not None and args.frames < 6):
        parser.error("need --threads >= 1 and --frames >= 6")
    davis = args.data / "davis2016-subset"
    if not davis.is_dir():
        parser.error(f"DAVIS subset not found: {davis} (set --data or VIDNAS_SHARED_DATA)")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vidnas-pipeline-") as tmp:
        work = Path(tmp)
        video, n = build_video(davis, work / "davis.mp4", frames=args.frames)
        checkpoints = build_checkpoints(work, names, (args.height, args.width))
        rows = run(video, checkpoints, work, runtimes=runtimes, threads=args.threads, overlay=not args.no_overlay)
    load_after = os.getloadavg()
    print(format_table(rows, COLUMNS))
    print(f"video: {n} DAVIS frames 480x854, H.264 mp4 at 24 fps (built in a temporary directory); models: "
          f"{CONFIG.name} at {args.height}x{args.width}, {NUM_CLASSES} classes, random weights; each run after a "
          f"5-frame warm-up; outputs: masks{'' if args.no_overlay else ' + overlay.mp4'} + summary.json")
    print("model_fps = frames / time in the streamer; pipeline_fps = frames / wall time of the run; ratio = "
          "pipeline / model")
    print(device_line())
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); elapsed "
          f"{time.perf_counter() - t0:.0f} s")
    if args.json is not None:
        data: list[dict[str, Any]] = [r.to_dict() for r in rows]
        for d in data:
            d["extra"]["load_average"] = [load_before[0], load_after[0]]
        print(f"written: {atomic_write_json(args.json, data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
