"""Reproduce the speed columns of [ST-NAS] Table 1 on this machine: params, GFLOPs, latency, FPS, FPS ratio.

The seven model rows of the paper (Swin-B and Swin-T non-temporal, SP-TCN with Swin-B and Swin-T, Swin Short, Full
Channels, ST-NAS) are built with random weights at 320x576, batch 1, float32, window 11 (window 1 for the
non-temporal rows), and timed **interleaved in one process** (``vidnas.bench.protocol``) under two protocols:

* the paper's: per frame, encode one frame and decode the full window (``fps``, ``fps_ratio``);
* the incremental one: per frame, encode one frame and run one decoder time step (``vidnas.models.incremental``),
  the same logits (``inc_fps``, ``inc_fps_ratio``).

Both ratios are to the **paper-protocol** SP-TCN Tiny, the paper's baseline. The paper's params, FPS and FPS ratio
are printed beside ours; absolute FPS differ (their V100 GPU, our CPU), ratios are what to compare. A 2048x2048
float32 matmul timed in the same rounds gives the roofline table (achieved GFLOP/s and its share of that ceiling).

    python benchmarks/table1.py                 # full size, 30 frames: about 6-10 minutes on the quiet 2-core CPU
    python benchmarks/table1.py --frames 1000   # the paper's averaging (hours on a CPU)
    python benchmarks/table1.py --quick         # tiny substitutes at 64x96: checks the script in seconds
    python benchmarks/table1.py --device cuda   # on a GPU (the paper's V100 protocol; ratios comparable)
    python benchmarks/table1.py --paper-only    # the paper's protocol alone (about half the time)
    python benchmarks/table1.py --runtime all   # + every deployment of each row (onnxruntime fp32/INT8, OpenVINO
                                                #   fp32/INT8/bf16, PyTorch bf16) in the same rounds [issue 28]

``--runtime all`` times every row also as `vidnas bench --runtime all` does (``run_benchmark``): each model is
exported to ONNX once per precision (INT8: static QDQ quantisation, calibrated on ``--calib-frames`` frames of the
synthetic data, since the weights are random), and rows ``NAME@ort``, ``NAME@ort@int8``, ``NAME@ov``,
``NAME@ov@int8``, ``NAME@ov@bf16`` and ``NAME@bf16`` (PyTorch autocast) are timed interleaved with the PyTorch fp32
rows, under both protocols. Their ``fps_ratio`` / ``inc_fps_ratio`` are to the same paper-protocol PyTorch fp32
SP-TCN Tiny, so the ST-NAS row's best deployment reads against the paper's baseline. A runtime that refuses a model
(OpenVINO cannot compile onnxruntime's INT8 Swin graphs) leaves that row out and says why.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from vidnas.bench import BenchRow, device_signature, format_table, write_rows_json
from vidnas.bench.protocol import CEILING_SIZE, PAPER_FRAMES, protocol_rows
from vidnas.config import Config
from vidnas.experiments.benchmark import DEPLOY_COLUMNS, BenchModel, run_benchmark
from vidnas.models import PAPER_ROWS, Arch, VideoSegmenter, build_model
from vidnas.models.architecture import PAPER_INPUT_SIZE
from vidnas.precision import check_device

__all__ = [
    "REF_ROW",
    "DEFAULT_FRAMES",
    "DEFAULT_WARMUP",
    "NUM_CLASSES",
    "QUICK_SIZE",
    "COLUMNS",
    "BOTH_COLUMNS",
    "ROOFLINE_COLUMNS",
    "table1_archs",
    "build_models",
    "add_paper_columns",
    "run",
    "main",
]

REF_ROW = "sptcn_tiny"  # the paper's baseline: ST-NAS is "56% faster than the baseline" SP-TCN with Swin-T
# one round (one frame through each of the 7 models) costs about 9 s here at 320x576 with 2 threads when the machine
# is quiet (Swin-B 1.2 s, SP-TCN Base 2.1 s, the Swin-T based temporal rows 1-1.4 s each), up to 17 s measured on
# first calls: 1 priming + 2 warm-up + 30 timed rounds, plus ~30 s of builds and FLOP counts, is 5-10 minutes, under
# the 15-minute budget

DEFAULT_FRAMES = 30
DEFAULT_WARMUP = 2
NUM_CLASSES = 13  # CholecSeg8K, the paper's public data set
QUICK_SIZE = (64, 96)
QUICK_ENCODER = "swin_test"  # embed 16, depths 2,2,2,2, window 4
QUICK_CHANNELS = 8
COLUMNS: tuple[str, ...] = (
    "name",
    "window",
    "params_m",
    "paper_params_m",
    "gflops",
    "encoder_ms",
    "decoder_ms",
    "latency_ms",
    "fps",
    "fps_ratio",
    "paper_fps",
    "paper_fps_ratio",
)
# the incremental protocol beside the paper's (same rounds): its decoder step, latency, FPS and ratio to the
# paper-protocol SP-TCN Tiny
BOTH_COLUMNS: tuple[str, ...] = (
    "name",
    "window",
    "params_m",
    "gflops",
    "inc_gflops",
    "encoder_ms",
    "decoder_ms",
    "inc_decoder_ms",
    "latency_ms",
    "inc_latency_ms",
    "fps",
    "inc_fps",
    "fps_ratio",
    "inc_fps_ratio",
    "paper_fps_ratio",
)
ROOFLINE_COLUMNS: tuple[str, ...] = ("name", "gflops", "gflop_s", "roofline", "inc_gflops", "inc_gflop_s",
                                     "inc_roofline")


def table1_archs(names: Sequence[str] | None = None, *, quick: bool = False) -> dict[str, Arch]:
    """The architectures of the paper rows ``names`` (default all seven, in the paper's order).

    Args:
        names: keys of ``PAPER_ROWS``.
        quick: tiny substitutes keeping each row's structure (window, decoder kind, full channels, searched ops,
            shortened stages): the ``swin_test`` encoder with its depths capped at 2 per stage and a decoder of
            width 8. For smoke runs only; their timings say nothing about the paper's models.

    Raises:
        KeyError: an unknown row name (the message lists the valid ones).
    """
    names = list(PAPER_ROWS) if names is None else list(names)
    unknown = [n for n in names if n not in PAPER_ROWS]
    if unknown:
        raise KeyError(f"unknown row(s) {unknown}; valid rows: {', '.join(PAPER_ROWS)}")
    archs = {}
    for name in names:
        arch = PAPER_ROWS[name].arch
        if quick:
            depths = None if arch.depths is None else tuple(min(d, 2) for d in arch.depths)
            arch = dataclasses.replace(arch, encoder=QUICK_ENCODER, depths=depths, channels=QUICK_CHANNELS)
        archs[name] = arch
    return archs


def build_models(
    archs: Mapping[str, Arch], *, img_size: tuple[int, int], num_classes: int = NUM_CLASSES, device: str = "cpu"
) -> dict[str, VideoSegmenter]:
    """Build every architecture with random weights at ``img_size``, in eval mode, on ``device``."""
    models = {}
    for name, arch in archs.items():
        cfg = Config()
        cfg = dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data, height=img_size[0], width=img_size[1], window=arch.window)
        )
        models[name] = build_model(cfg, arch, num_classes=num_classes).eval().to(device)
    return models


def add_paper_columns(rows: Sequence[BenchRow], ref: str = REF_ROW) -> list[BenchRow]:
    """Add ``params_m``, ``fps_ratio`` (our FPS / our ``ref`` FPS), ``inc_fps_ratio`` (our incremental FPS / the same
    paper-protocol ``ref`` FPS; None without an incremental measurement) and the paper's ``paper_params_m``,
    ``paper_fps``, ``paper_fps_ratio`` (paper FPS / paper ``ref`` FPS) to rows named after ``PAPER_ROWS`` keys (in
    place)."""
    by_name = {r.name: r for r in rows}
    our_ref = by_name[ref].fps if ref in by_name else None
    paper_ref = PAPER_ROWS[ref].fps
    for r in rows:
        paper = PAPER_ROWS.get(r.name)
        inc_fps = r.extra.get("inc_fps")
        r.extra["params_m"] = None if r.params is None else r.params / 1e6
        r.extra["fps_ratio"] = None if our_ref is None or r.fps is None else r.fps / our_ref
        r.extra["inc_fps_ratio"] = None if our_ref is None or inc_fps is None else inc_fps / our_ref
        r.extra["label"] = paper.label if paper else r.name
        r.extra["paper_params_m"] = paper.params_m if paper else None
        r.extra["paper_fps"] = paper.fps if paper else None
        r.extra["paper_fps_ratio"] = paper.fps / paper_ref if paper else None
    return list(rows)


def run(
    *,
    frames: int = DEFAULT_FRAMES,
    warmup: int = DEFAULT_WARMUP,
    names: Sequence[str] | None = None,
    quick: bool = False,
    img_size: tuple[int, int] | None = None,
    progress: Callable[[], Any] | None = None,
    device: str = "cpu",
    incremental: bool = True,
    ceiling: int | None = CEILING_SIZE,
    runtime: str = "torch",
    calib_frames: int = 8,
) -> list[BenchRow]:
    """Build the rows' models and measure them interleaved; returns one row each with the paper's figures beside.

    ``incremental``: time the incremental protocol in the same rounds (``inc_*`` columns). ``ceiling``: the
    roofline's matmul size (None: no roofline). ``runtime="all"``: also every deployment of each model (module
    docstring), ``calib_frames`` INT8 calibration frames each; those rows are named ``NAME@...``.
    """
    size = img_size or (QUICK_SIZE if quick else PAPER_INPUT_SIZE)
    models = build_models(table1_archs(names, quick=quick), img_size=size, device=device)
    if runtime == "all":
        cfg = Config()
        bench = [BenchModel(name, m, size, cfg=dataclasses.replace(cfg, data=dataclasses.replace(
            cfg.data, height=size[0], width=size[1], window=m.window))) for name, m in models.items()]
        rows = run_benchmark(bench, runtime="all", frames=frames, warmup=warmup, progress=progress,
                             incremental=incremental, ceiling=ceiling, calib_frames=calib_frames, accuracy_frames=4)
    elif runtime == "torch":
        rows = protocol_rows(models, img_size=size, warmup=warmup, frames=frames, progress=progress,
                             incremental=incremental, ceiling=ceiling)
    else:
        raise ValueError(f"runtime {runtime!r}: torch or all")
    for r in rows:
        r.extra["quick"] = quick
    return add_paper_columns(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--frames",
        type=int,
        default=DEFAULT_FRAMES,
        help=f"timed frames per model (default {DEFAULT_FRAMES}; the paper: {PAPER_FRAMES})",
    )
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed frames per model first")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--rows", default=None, help=f"comma-separated subset of: {', '.join(PAPER_ROWS)}")
    parser.add_argument("--height", type=int, default=None, help="input height (default 320; --quick: 64)")
    parser.add_argument("--width", type=int, default=None, help="input width (default 576; --quick: 96)")
    parser.add_argument("--quick", action="store_true", help="tiny substitutes at 64x96: a smoke run in seconds")
    parser.add_argument("--json", type=Path, default=None, help="write the rows (and the device) as a JSON list")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--paper-only", action="store_true", help="the paper's protocol only (no incremental columns)")
    parser.add_argument("--runtime", choices=("torch", "all"), default="torch",
                        help="all: also every deployment of each row (onnxruntime, OpenVINO, INT8, bf16), interleaved")
    parser.add_argument("--calib-frames", type=int, default=8, help="--runtime all: INT8 calibration frames")
    parser.add_argument("--ceiling", type=int, default=CEILING_SIZE,
                        help=f"roofline matmul size N (NxN float32, default {CEILING_SIZE}; 0: no roofline)")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.warmup < 0:
        parser.error("need --frames >= 1 and --warmup >= 0")
    if args.ceiling < 0:
        parser.error("need --ceiling >= 0")
    if (args.height is None) != (args.width is None):
        parser.error("give --height and --width together")
    try:
        check_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    names = None if args.rows is None else [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names or [] if n not in PAPER_ROWS]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; valid rows: {', '.join(PAPER_ROWS)}")
    img_size = None if args.height is None else (args.height, args.width)

    from tqdm import tqdm

    n_models = len(names) if names is not None else len(PAPER_ROWS)
    per_model = 7 if args.runtime == "all" else 1  # rows per model: fp32, bf16, ort, ort int8, ov, ov int8, ov bf16
    bar = tqdm(
        total=n_models * per_model * (args.warmup + args.frames) * (1 if args.paper_only else 2),
        desc="table1",
        file=sys.stderr,
        leave=False,
        disable=True if args.no_progress else None,
    )
    t0 = time.perf_counter()
    try:
        rows = run(
            frames=args.frames,
            warmup=args.warmup,
            names=names,
            quick=args.quick,
            img_size=img_size,
            progress=bar.update,
            device=args.device,
            incremental=not args.paper_only,
            ceiling=args.ceiling or None,
            runtime=args.runtime,
            calib_frames=args.calib_frames,
        )
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0

    size = img_size or (QUICK_SIZE if args.quick else PAPER_INPUT_SIZE)
    title = "[ST-NAS] Table 1, speed columns" + (
        " -- QUICK: tiny substitutes, numbers mean nothing" if args.quick else ""
    )
    print(title)
    print(format_table(rows, COLUMNS if args.paper_only else BOTH_COLUMNS))
    if args.ceiling:
        rate = rows[0].extra.get("ceiling_gflop_s")
        print()
        print(format_table(rows, ROOFLINE_COLUMNS if not args.paper_only else ROOFLINE_COLUMNS[:4]))
        print(f"roofline: ceiling = {args.ceiling}x{args.ceiling} float32 matmul timed in the same rounds, "
              f"{rate:.1f} GFLOP/s; gflop_s = GFLOPs per frame / latency; roofline = gflop_s / ceiling")
    dev = {**device_signature(), "torch_device": args.device}
    print(
        f"device: {dev['cuda'] or dev['cpu']} ({dev['cpu_count']} logical CPUs, {dev['num_threads']} torch threads), "
        f"torch {dev['torch']}, python {dev['python']}"
    )
    print(
        f"protocol [ST-NAS Sec. 4]: {size[0]}x{size[1]}, batch 1, float32, random weights, {NUM_CLASSES} classes; per "
        f"frame = encode 1 frame + decode the full window (window 11; 1 for the non-temporal Swin-B/Swin-T rows) "
        f"via Streamer.push with the ring buffer full; latency = mean over {args.frames} frames after "
        f"{args.warmup} warm-up pushes (the paper: {PAPER_FRAMES}), FPS = 1000 / latency; all models interleaved in "
        f"one process (one frame each per round, rotated order). GFLOPs per frame: encoder on 1 frame + decoder on "
        f"the window (1 MAC = 2 FLOPs). fps_ratio = FPS / FPS of {REF_ROW}; paper_fps_ratio likewise from the "
        f"paper's FPS (V100 GPU, PyTorch 2.0.1): compare ratios, not absolute FPS. The ST-NAS decoder ops are a "
        f"reconstruction (the paper's Fig. 2 is not in its text)."
        + ("" if args.paper_only else
           f" Incremental protocol (inc_*), pushed in the same rounds: encode 1 frame + one decoder time step "
           f"(model.stream(incremental=True): the same logits as the window decode); inc_fps_ratio = incremental FPS "
           f"/ paper-protocol FPS of {REF_ROW}.")
    )
    if args.runtime == "all":
        print()
        print("deployments (x_torch: FPS / the same model's PyTorch fp32 FPS; fps_ratio / inc_fps_ratio above: to the "
              f"paper-protocol PyTorch fp32 {REF_ROW}; agreement on {4} random frames; random weights: no mIoU)")
        print(format_table(rows, [c for c in DEPLOY_COLUMNS if c not in ("miou", "miou_delta")]
                           + ["fps_ratio", "inc_fps_ratio"]))
        for r in rows:
            for why in r.extra.get("left_out") or []:
                print(f"left out: {why}")
    print(f"elapsed: {elapsed:.0f} s")
    if args.json is not None:
        for r in rows:
            r.extra["device"] = dev
        print(f"written: {write_rows_json(args.json, rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
