"""Issue 29's CPU table: per-frame arch2 at 360x480 beside 176x240, every figure from the runs' own files.

    python benchmarks/camvid_360_table.py OUT [--seed S]      # OUT: the output directory of benchmarks/camvid_360.sh

Reads, per size, ``OUT/arch2_<size>_s<S>/``: ``config.yaml`` (the data set, for its class names),
``metrics.jsonl`` (each epoch's seconds, its loader share and its val mIoU), ``eval/last/eval.json`` (`vidnas eval`
of ``checkpoints/last.pt``: the mIoU, per-class IoU, VC8 and flicker of the last epoch's weights, so no epoch was
chosen on val) and ``OUT/bench.json`` (one interleaved `vidnas bench`, rows ``arch2_<size>``). Writes
``OUT/summary.json`` (only over a summary this script wrote) and prints the markdown table, with issue 29's goal: the
360x480 model at >= 0.70 val mIoU. benchmarks/results/camvid_360/ holds those files of the run in docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vidnas.config import load_config
from vidnas.data import open_source
from vidnas.utils import atomic_write_text, replace_own_json

SIZES = ("176x240", "360x480")
GOAL_MIOU = 0.70  # issue 29: 360x480 per-frame arch2 on the CPU
RARE = ("Pole", "SignSymbol", "Pedestrian", "Bicyclist")  # the thin classes resolution decides


def _epochs(run: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("kind") == "epoch"]


def summarise(out: Path, seed: int) -> dict[str, Any]:
    bench = {r["name"]: r for r in json.loads((out / "bench.json").read_text())}
    models: dict[str, Any] = {}
    names: list[str] = []
    for size in SIZES:
        run = out / f"arch2_{size}_s{seed}"
        ev = json.loads((run / "eval" / "last" / "eval.json").read_text())
        epochs = _epochs(run)
        if not epochs:
            raise ValueError(f"{run / 'metrics.jsonl'}: no finished epoch")
        names = names or list(open_source(load_config(run / "config.yaml").data).class_names)
        seconds = sum(e["epoch_seconds"] for e in epochs)
        data = sum(e.get("data_seconds") or 0.0 for e in epochs)
        val = [e.get("val_miou") for e in epochs]  # None on epochs not validated (train.val_every)
        checked = [i for i, v in enumerate(val) if v is not None]
        row = bench[f"arch2_{size}"]
        models[size] = {
            "run": str(run), "epochs": len(epochs), "step_minutes": seconds / 60,  # steps only
            "data_share": data / seconds if seconds else None,
            "val_miou_last": ev["clips"]["miou"], "val_frames": ev["stream"]["annotated"],
            "per_class_iou": dict(zip(names, ev["clips"]["per_class_iou"], strict=True)),
            "vc8": ev["stream"]["vc8"], "flicker": ev["stream"]["flicker"],
            "val_miou_per_epoch": val,
            "best_epoch_on_val": max(checked, key=val.__getitem__) + 1 if checked else None,
            "best_val_miou_on_val": max(val[i] for i in checked) if checked else None,
            "fps": row["fps"], "latency_ms": row["latency_ms"],
            "size": [row["extra"].get("height"), row["extra"].get("width")],
        }
    bench_rows = json.loads((out / "bench.json").read_text())
    threads = {r["extra"].get("torch_threads") for r in bench_rows} - {None}
    big, small = models["360x480"], models["176x240"]
    return {
        "seed": seed, "models": models, "classes": names, "bench_threads": sorted(threads),
        "device": bench_rows[0]["extra"].get("device"),
        "miou_gain_points": 100 * (big["val_miou_last"] - small["val_miou_last"]),
        "fps_ratio": big["fps"] / small["fps"],
        "goal": {"miou_360": big["val_miou_last"], "target": GOAL_MIOU, "met": big["val_miou_last"] >= GOAL_MIOU},
    }


def markdown(s: dict[str, Any]) -> str:
    names = s["classes"]
    head = ["size", "epochs", "step min", "loader share", "val mIoU (last epoch)", *names, "VC8", "flicker", "FPS"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size, m in s["models"].items():
        cells = [size, str(m["epochs"]), f"{m['step_minutes']:.1f}", f"{m['data_share']:.1%}",
                 f"{m['val_miou_last']:.4f}", *(f"{m['per_class_iou'][n]:.3f}" for n in names),
                 f"{m['vc8']:.3f}", f"{m['flicker']:.3f}", f"{m['fps']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    big, small = s["models"]["360x480"], s["models"]["176x240"]
    dev = s["device"] or {}
    cpu = f"{dev.get('cpu')}, bf16 flags {' '.join(dev.get('cpu_bf16') or []) or 'none'}"
    rare = ", ".join(f"{n} {100 * (big['per_class_iou'][n] - small['per_class_iou'][n]):+.1f}"
                     for n in RARE if n in names)
    lines += ["", f"360x480 vs 176x240: {s['miou_gain_points']:+.2f} mIoU points at {s['fps_ratio']:.2f}x the FPS "
              f"(one interleaved bench, {', '.join(map(str, s['bench_threads']))} thread(s), {cpu}); "
              f"thin classes (IoU points): {rare}.",
              "Best epoch if val had chosen it (it did not: the table reads the last epoch): "
              + "; ".join(f"{k} epoch {m['best_epoch_on_val']} at {m['best_val_miou_on_val']:.4f}"
                          for k, m in s["models"].items() if m["best_epoch_on_val"] is not None) + ".",
              f"issue 29's goal: 360x480 val mIoU {s['goal']['miou_360']:.4f} >= {s['goal']['target']:.2f}: "
              f"{'met' if s['goal']['met'] else 'not met'}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the output directory of benchmarks/camvid_360.sh")
    ap.add_argument("--seed", type=int, default=0, help="the runs' seed (their _s<seed> suffix)")
    args = ap.parse_args(argv)
    try:
        summary = summarise(args.out, args.seed)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    target = args.out / "summary.json"
    if not replace_own_json(target, summary, {"models", "goal", "fps_ratio"}):  # only over its own summary
        print(f"error: {target} exists and is not a summary of this script: not overwritten", file=sys.stderr)
        return 2
    text = markdown(summary)
    atomic_write_text(target.with_suffix(".md"), text)  # its twin: written only where summary.json is its own
    print(text, end="")
    print(f"written: {target} and {target.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
