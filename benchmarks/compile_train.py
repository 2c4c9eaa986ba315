"""Training steps of one model in eager mode and under ``torch.compile``, interleaved: does compiling pay?

    python benchmarks/compile_train.py --encoder efficientnet_lite0 --height 176 --width 240 --steps 6

Builds the model twice from one seed (``build_model``: random weights, the config's decoder, default per-frame
arch2) and times the training step of ``vidnas train`` (forward under ``--amp``, ``segmentation_loss`` with the
auxiliary heads, ``backward_step`` of AdamW) on one fixed random batch: the compiled copy's first step (the compile
time) apart, then ``--steps`` rounds, each one eager step and one compiled step, the order alternating. Printed: the
compile time, the median and mean step of each, the ratio, and the largest difference of the two losses over the
rounds. ``--json PATH`` writes the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from vidnas.bench import device_signature
from vidnas.config import load_config
from vidnas.engine.loop import backward_step
from vidnas.engine.losses import segmentation_loss
from vidnas.models import build_model
from vidnas.precision import autocast, check_device
from vidnas.utils import atomic_write_json


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", default="efficientnet_lite0")
    ap.add_argument("--decoder", default="arch2")
    ap.add_argument("--height", type=int, default=176)
    ap.add_argument("--width", type=int, default=240)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--classes", type=int, default=11)
    ap.add_argument("--steps", type=int, default=6, help="timed rounds (one eager and one compiled step each)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="none", help="none | bf16 | fp16 (autocast of the forward and loss)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.steps < 1 or args.batch < 1:
        print(f"error: need --steps >= 1 and --batch >= 1, got {args.steps} and {args.batch}", file=sys.stderr)
        return 2
    device = check_device(args.device)
    torch.set_num_threads(args.threads)
    cfg = load_config(None, [f"model.encoder={args.encoder}", f"model.decoder={args.decoder}", "data.window=1",
                             f"data.height={args.height}", f"data.width={args.width}"])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    frames = torch.randn(args.batch, 1, 3, args.height, args.width, generator=gen).to(device)  # (B, T=1, 3, H, W)
    masks = torch.randint(0, args.classes, (args.batch, 1, args.height, args.width), generator=gen).to(device)

    def trainer(compiled: bool):
        torch.manual_seed(0)
        model = build_model(cfg, num_classes=args.classes).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        fwd = torch.compile(model) if compiled else model

        def step() -> float:
            with autocast(device, args.amp):
                out = fwd(frames)
                logits, aux = (out[0], out[1]) if isinstance(out, tuple) else (out, [])
                loss = segmentation_loss(logits.float(), masks, 255)
                for a in aux:
                    loss = loss + 0.3 * segmentation_loss(a.float(), masks, 255)
            backward_step(loss, opt)
            return loss.item()

        return step

    eager, comp = trainer(False), trainer(True)
    eager()  # warm-up: the first step allocates
    sync()
    t0 = time.perf_counter()
    comp()
    sync()
    compile_s = time.perf_counter() - t0
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    losses: dict[str, list[float]] = {"eager": [], "compiled": []}
    for r in range(args.steps):
        order = [("eager", eager), ("compiled", comp)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            sync()
            t0 = time.perf_counter()
            losses[name].append(fn())
            sync()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    mean = {k: statistics.fmean(v) * 1e3 for k, v in times.items()}
    diff = max(abs(a - b) for a, b in zip(losses["eager"], losses["compiled"], strict=True))
    print(f"{args.encoder} + {args.decoder}, {args.height}x{args.width}, batch {args.batch}, amp {args.amp}, "
          f"{args.threads} thread(s), device {device}")
    print(f"compile (first compiled step): {compile_s:.1f} s")
    for k in times:
        print(f"{k:9s} step: median {med[k]:8.1f} ms, mean {mean[k]:8.1f} ms over {args.steps} steps")
    print(f"compiled / eager (median): {med['compiled'] / med['eager']:.3f}; largest loss difference {diff:.2e}")
    if args.json:
        atomic_write_json(args.json, {"args": vars(args), "compile_seconds": compile_s, "median_ms": med,
                                      "mean_ms": mean, "ratio": med["compiled"] / med["eager"],
                                      "max_loss_diff": diff, "device": device_signature()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
