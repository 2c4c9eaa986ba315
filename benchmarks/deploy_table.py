"""Issue 28's deployment table of one trained model, every figure from the JSONs of benchmarks/deploy_camvid.sh.

    python benchmarks/deploy_table.py OUT [EXPORT_DIR ...]

``OUT/bench.json``: one interleaved `vidnas bench --runtime all` of the model (rows ``model``, ``model@bf16``,
``model@ort``, ``model@ort@int8``, ``model@ov``, ``model@ov@int8``, ``model@ov@bf16``; each with ``fps``, its ratio
to PyTorch fp32 ``x_torch``, ``miou`` on the validation frames and ``miou_delta`` = 100 x (its mIoU - PyTorch
fp32's), in points). Each EXPORT_DIR:
a `vidnas export --precision int8 --keep-float K` with its accuracy check (``export.json``: ``accuracy``,
``quantization.keep_float``). Writes ``OUT/summary.json`` (only over a summary this script wrote) and prints the
table and the verdict on issue 28's goal: the best runtime and precision at >= 4x the PyTorch fp32 FPS with at most
0.5 mIoU points lost.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vidnas.utils import atomic_write_text, replace_own_json

GOAL_RATIO = 4.0
GOAL_DROP_POINTS = 0.5


def summarise(out: Path, exports: list[Path]) -> dict[str, Any]:
    rows = json.loads((out / "bench.json").read_text())
    table = []
    for r in rows:
        e = r["extra"]
        delta = e.get("miou_delta")
        table.append({"name": r["name"], "runtime": e.get("runtime"), "precision": e.get("precision"),
                      "fps": r["fps"], "latency_ms": r["latency_ms"], "x_torch": e.get("x_torch"),
                      "miou": e.get("miou"), "drop_points": None if delta is None else -delta,  # delta: points
                      "pixel_agreement": e.get("pixel_agreement"), "frames": e.get("agreement_frames")})
    ok = [t for t in table if t["x_torch"] is not None and t["drop_points"] is not None
          and t["drop_points"] <= GOAL_DROP_POINTS]
    best = max(ok, key=lambda t: t["x_torch"], default=None)
    fastest = max(table, key=lambda t: t["x_torch"] or 0.0)
    keep = []
    for d in exports:
        meta = json.loads((d / "export.json").read_text())
        acc, q = meta["accuracy"], meta["quantization"]
        keep.append({"dir": str(d), "keep_float": q["keep_float"], "float_nodes": q["float_nodes"],
                     "frames": acc["frames"], "miou_fp32": acc["miou_fp32"], "miou_int8": acc.get("miou_int8"),
                     "drop_points": acc["miou_drop_points"], "pixel_agreement": acc["pixel_agreement"]})
    device = rows[0]["extra"].get("device") or {}
    threads = sorted({r["extra"].get("torch_threads") for r in rows} - {None})
    return {"rows": table, "keep_float": keep, "device": device, "threads": threads,
            "goal": {"ratio": GOAL_RATIO, "max_drop_points": GOAL_DROP_POINTS,
                     "best": best and best["name"], "best_x_torch": best and best["x_torch"],
                     "fastest": fastest["name"], "fastest_x_torch": fastest["x_torch"],
                     "met": bool(best and best["x_torch"] >= GOAL_RATIO)}}


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def markdown(s: dict[str, Any]) -> str:
    dev = s["device"]
    lines = [f"CPU: {dev.get('cpu')}, bf16 flags {' '.join(dev.get('cpu_bf16') or []) or 'none'}; "
             f"{', '.join(map(str, s['threads']))} thread(s)", "",
             "| row | runtime | precision | FPS | x PyTorch fp32 | mIoU | mIoU points lost | pixels equal to fp32 |",
             "|---|---|---|---|---|---|---|---|"]
    for t in s["rows"]:
        lines.append(f"| {t['name']} | {t['runtime']} | {t['precision']} | {t['fps']:.1f} | {_f(t['x_torch'], '.2f')} "
                     f"| {_f(t['miou'], '.4f')} | {_f(t['drop_points'], '+.2f')} | {_f(t['pixel_agreement'], '.4f')} |")
    if s["keep_float"]:
        lines += ["", "| --keep-float | nodes kept in float | frames | mIoU fp32 | mIoU INT8 | points lost "
                      "| pixels equal |", "|---|---|---|---|---|---|---|"]
        for k in s["keep_float"]:
            nodes = sum(len(v) for v in k["float_nodes"].values())
            lines.append(f"| {','.join(k['keep_float']) or 'none'} | {nodes} | {k['frames']} | {k['miou_fp32']:.4f} "
                         f"| {k['miou_int8']:.4f} | {k['drop_points']:+.2f} | {k['pixel_agreement']:.4f} |")
    g = s["goal"]
    best = (f"{g['best']} at {g['best_x_torch']:.2f}x" if g["best"] else "no row")
    lines += ["", f"issue 28's goal (>= {g['ratio']:g}x PyTorch fp32 at <= {g['max_drop_points']:g} mIoU points lost): "
              f"best within the loss: {best}; fastest: {g['fastest']} at {_f(g['fastest_x_torch'], '.2f')}x: "
              f"{'met' if g['met'] else 'not met'}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the output directory of benchmarks/deploy_camvid.sh")
    ap.add_argument("exports", type=Path, nargs="*", help="int8 export directories (--keep-float variants)")
    args = ap.parse_args(argv)
    try:
        summary = summarise(args.out, args.exports)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    target = args.out / "summary.json"
    if not replace_own_json(target, summary, {"rows", "keep_float", "goal"}):  # only over its own summary
        print(f"error: {target} exists and is not a summary of this script: not overwritten", file=sys.stderr)
        return 2
    text = markdown(summary)
    atomic_write_text(target.with_suffix(".md"), text)  # its twin: written only where summary.json is its own
    print(text, end="")
    print(f"written: {target} and {target.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
