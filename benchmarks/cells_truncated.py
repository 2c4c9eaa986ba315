"""One non-key cell step before and after the truncated encoder (issue 27), interleaved, in PyTorch and onnxruntime.

    python benchmarks/cells_truncated.py --encoder efficientnet_lite0 --height 176 --width 240 --frames 100

Builds an arch2 static network (random weights: the cost does not depend on them) and one cell that reads layers 2
and 3 of its frame and ``prev_dec``, never layer4: ``sum(conv1x1(layer2), sep3x3(layer3))``, then
``sum(conv1x1(.), conv1x1(prev_dec))`` (``Cell.encoder_stages`` = 3). The same cell is streamed twice, side by side
with the static network (``vidnas.bench.protocol.measure_protocol``, batch 1, no key interval): **before**, with the
whole encoder on every non-key frame (its ``encoder_stages`` set to 4, which is what every non-key frame ran until
issue 27), and **after**, the encoder stopped after stage 3. Each model is also exported (``export_frame_onnx``) and
streamed by onnxruntime (``FrameOrtStreamer``) in the same rounds. Torch and onnxruntime both run ``--threads``
threads (default 1). Printed: median and mean ms per frame, the encoder / cell split (PyTorch), the FPS ratio to the
static network of the same runtime.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch

from vidnas.bench import device_signature
from vidnas.bench.protocol import measure_protocol
from vidnas.config import load_config
from vidnas.export import FrameOrtStreamer, export_frame_onnx
from vidnas.models.cells import Cell, CellGenotype, DynamicCellModel, build_static_segmenter, cell_in_channels
from vidnas.utils import atomic_write_json

# sum(conv1x1(layer2), sep3x3(layer3)); sum(conv1x1(cell_layer0), conv1x1(prev_dec)): reads no layer4
TOKENS = [2, 3, 0, 1, 0, 5, 1, 0, 0, 0]
OPS, AGGS = ("conv1x1", "sep3x3"), ("sum",)
NUM_CLASSES = 11  # CamVid


def _measure(args: argparse.Namespace) -> tuple[list[dict], int, dict]:
    """Build, export and time the models; returns the rows, the cell's ``encoder_stages`` and the device."""
    torch.manual_seed(0)
    hw = (args.height, args.width)
    cfg = load_config(None, [f"data.height={hw[0]}", f"data.width={hw[1]}", f"model.encoder={args.encoder}",
                             "model.weights=null"])
    static = build_static_segmenter(cfg, num_classes=NUM_CLASSES).eval()
    cell = Cell(CellGenotype.from_tokens(TOKENS, ops=OPS, aggregations=AGGS), in_channels=cell_in_channels(static),
                num_classes=NUM_CLASSES).eval()
    before = copy.deepcopy(cell)
    before.encoder_stages = 4  # the whole encoder on every non-key frame
    # each model its own static copy: the protocol's timing hooks sit on each model's encoder
    models: dict[str, object] = {
        "static": static,
        "cell_before": DynamicCellModel(copy.deepcopy(static), before).eval(),
        "cell_after": DynamicCellModel(copy.deepcopy(static), cell).eval(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("static", "cell_before", "cell_after"):
            export_frame_onnx(models[name], Path(tmp) / name, img_size=hw)
            models[f"{name}@ort"] = FrameOrtStreamer(Path(tmp) / name, intra_op_threads=args.threads)
        res = measure_protocol(models, img_size=hw, warmup=args.warmup, frames=args.frames)
    rows = []
    for name, r in res.items():
        ref = res["static@ort" if name.endswith("@ort") else "static"].frame.median_ms
        rows.append({"name": name, "median_ms": r.frame.median_ms, "mean_ms": r.frame.mean_ms,
                     "encoder_ms": None if r.encoder is None else r.encoder.median_ms,
                     "cell_or_decoder_ms": None if r.decoder is None else r.decoder.median_ms,
                     "fps_ratio": ref / r.frame.median_ms})
    return rows, cell.encoder_stages, device_signature()


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="efficientnet_lite0")
    ap.add_argument("--height", type=int, default=176)
    ap.add_argument("--width", type=int, default=240)
    ap.add_argument("--frames", type=int, default=100, help="timed pushes per model (interleaved)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch and onnxruntime intra-op threads")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON (a new file)")
    args = ap.parse_args(argv)
    if args.frames < 1 or args.threads < 1:
        ap.error(f"--frames and --threads must be >= 1, got {args.frames} and {args.threads}")
    if args.json is not None and args.json.exists():
        ap.error(f"--json {args.json}: the file exists; name a new one")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        rows, stages, device = _measure(args)
    finally:
        torch.set_num_threads(threads)
    print(f"{args.encoder} {args.height}x{args.width}, {args.threads} thread(s), {args.frames} interleaved frames, "
          f"cell encoder_stages {stages} (before: 4); CPU {device['cpu']} ({device['cpu_count']} logical)")
    print("| row | median ms | mean ms | encoder ms | cell / decoder ms | FPS / static |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['name']} | {_ms(row['median_ms'])} | {_ms(row['mean_ms'])} | {_ms(row['encoder_ms'])} | "
              f"{_ms(row['cell_or_decoder_ms'])} | {row['fps_ratio']:.2f}x |")
    if args.json is not None:
        atomic_write_json(args.json, {"encoder": args.encoder, "height": args.height, "width": args.width,
                                      "threads": args.threads, "frames": args.frames, "device": device,
                                      "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
