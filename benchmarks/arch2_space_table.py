"""Every figure of benchmarks/arch2_space_camvid.sh (issue 26), computed from its JSONs into OUT/summary.json.

    python benchmarks/arch2_space_table.py OUT      # OUT: the script's output directory

Reads ``OUT/seed*/sweep.json`` (one sweep per seed: the searched model, per-frame arch2, the space's cheapest point and,
on the first seed, the latency-matched random architectures; each row's mIoU is ``reported_miou``, the val split read
once after a training whose best epoch the selection split chose, else ``best_miou``) and ``OUT/bench.json`` (all of
them timed in one interleaved run). Deployed FPS: the incremental protocol's where a model streams so (``inc_fps``),
else the window protocol's. Prints one markdown table and the verdict on issue 26's goal:

* the searched model at >= 1.3x per-frame arch2's deployed FPS (means over seeds) at mIoU >= arch2's - 0.5 points;
* >= 1 mIoU point above the mean of the latency-matched random architectures, and above the cheapest point.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from vidnas.utils import atomic_write_text, replace_own_json

FPS_GOAL = 1.3  # x per-frame arch2's deployed FPS
MIOU_MARGIN = -0.5  # points against arch2
RANDOM_MARGIN = 1.0  # points above the matched randoms' mean


def score(row: dict[str, Any]) -> float:
    """A sweep row's reported mIoU (0..1)."""
    return float(row["reported_miou"] if row.get("reported_miou") is not None else row["best_miou"])


def deployed_fps(row: dict[str, Any]) -> float:
    """A bench row's deployed FPS: incremental where measured, else the window protocol's."""
    inc = row.get("inc_fps", (row.get("extra") or {}).get("inc_fps"))
    return float(inc if inc else row["fps"])


def _stats(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values) if values else None, "max": max(values) if values else None, "values": values}


def summarise(out: Path) -> dict[str, Any]:
    """The summary of one run directory (module docstring); raises ValueError naming a missing file or row."""
    seeds = sorted((p for p in out.glob("seed*") if (p / "sweep.json").is_file()), key=lambda p: int(p.name[4:]))
    if not seeds:
        raise ValueError(f"no seed*/sweep.json under {out}")
    bench_path = out / "bench.json"
    if not bench_path.is_file():
        raise ValueError(f"{bench_path} not found: run benchmarks/arch2_space_camvid.sh first")
    bench = {r["name"]: r for r in json.loads(bench_path.read_text())}
    kinds: dict[str, dict[str, list[float]]] = {k: {"miou": [], "fps": [], "window_fps": []}
                                                 for k in ("searched", "arch2", "cheapest")}
    per_seed, randoms, decided = [], [], []
    for d in seeds:
        seed = int(d.name[4:])
        sweep = json.loads((d / "sweep.json").read_text())
        decided.append(sweep.get("decided_on"))
        rows = {"searched": sweep["candidates"][0],
                "arch2": next(r for r in sweep["references"] if r["name"] == "per-frame arch2"),
                "cheapest": next(r for r in sweep["controls"] if r["name"] == "cheapest")}
        entry: dict[str, Any] = {"seed": seed, "control_summary": sweep.get("control_summary")}
        for kind, row in rows.items():
            name = f"{kind}_s{seed}"
            if name not in bench:
                raise ValueError(f"{bench_path}: no row {name!r}")
            kinds[kind]["miou"].append(score(row))
            kinds[kind]["fps"].append(deployed_fps(bench[name]))
            kinds[kind]["window_fps"].append(float(bench[name]["fps"]))
            entry[kind] = {"miou": score(row), "fps": deployed_fps(bench[name]), "window_fps": bench[name]["fps"],
                           "depths": row["arch"].get("depths"), "decoder_ops": row["arch"].get("decoder_ops")}
        per_seed.append(entry)
        for r in sweep["random"]:
            if r["name"] in bench:
                randoms.append({"name": r["name"], "miou": score(r), "fps": deployed_fps(bench[r["name"]]),
                                "depths": r["arch"].get("depths"), "decoder_ops": r["arch"].get("decoder_ops")})
    means = {k: {m: _stats(v) for m, v in d.items()} for k, d in kinds.items()}
    rnd = _stats([r["miou"] for r in randoms])
    s, a, c = (means[k]["miou"]["mean"] for k in ("searched", "arch2", "cheapest"))
    fps_ratio = means["searched"]["fps"]["mean"] / means["arch2"]["fps"]["mean"]
    goal = {
        "fps_ratio_vs_arch2": fps_ratio,
        "miou_points_vs_arch2": 100 * (s - a),
        "miou_points_vs_random_mean": None if rnd["mean"] is None else 100 * (s - rnd["mean"]),
        "miou_points_vs_cheapest": 100 * (s - c),
    }
    goal["met"] = {
        "fps": fps_ratio >= FPS_GOAL,
        "miou_vs_arch2": goal["miou_points_vs_arch2"] >= MIOU_MARGIN,
        "vs_random": goal["miou_points_vs_random_mean"] is not None
        and goal["miou_points_vs_random_mean"] >= RANDOM_MARGIN,
        "vs_cheapest": goal["miou_points_vs_cheapest"] > 0,
    }
    goal["met"]["all"] = all(goal["met"].values())
    return {"seeds": [e["seed"] for e in per_seed], "per_seed": per_seed, "means": means, "random": randoms,
            "random_miou": rnd, "goal": goal, "decided_on": decided,
            "fps": "deployed: incremental where a model streams so, else window protocol; one interleaved run"}


def markdown(summary: dict[str, Any]) -> str:
    """The summary as one markdown table and the verdict lines."""
    m, g = summary["means"], summary["goal"]

    def pm(st: dict[str, Any], scale: float = 1.0, spec: str = ".2f") -> str:
        if st["mean"] is None:
            return "-"
        sd = f" +- {st['std'] * scale:{spec}}" if st["std"] is not None else ""
        return f"{st['mean'] * scale:{spec}}{sd}"

    lines = [f"seeds {', '.join(map(str, summary['seeds']))}; mIoU in points (val, read once per training); "
             "FPS deployed (1 thread, one interleaved run)", "",
             "| model | seeds | mIoU | deployed FPS | window FPS |", "|---|---|---|---|---|"]
    labels = {"searched": "searched", "arch2": "per-frame arch2 (hand-made)", "cheapest": "cheapest point"}
    for kind, label in labels.items():
        lines.append(f"| {label} | {m[kind]['miou']['n']} | {pm(m[kind]['miou'], 100)} | {pm(m[kind]['fps'])} | "
                     f"{pm(m[kind]['window_fps'])} |")
    r = summary["random_miou"]
    if r["n"]:
        fps = statistics.fmean(x["fps"] for x in summary["random"])
        lines.append(f"| latency-matched random (seed {summary['seeds'][0]}) | {r['n']} models | {pm(r, 100)} "
                     f"(min {100 * r['min']:.2f}, max {100 * r['max']:.2f}) | {fps:.2f} | - |")
    met = g["met"]
    vs_rnd = g["miou_points_vs_random_mean"]
    lines += ["", f"- searched vs per-frame arch2: {g['fps_ratio_vs_arch2']:.2f}x its deployed FPS (goal >= "
              f"{FPS_GOAL}x: {'yes' if met['fps'] else 'no'}), {g['miou_points_vs_arch2']:+.2f} mIoU points (goal >= "
              f"{MIOU_MARGIN}: {'yes' if met['miou_vs_arch2'] else 'no'})",
              "- searched vs the latency-matched randoms' mean: "
              + ("-" if vs_rnd is None else f"{vs_rnd:+.2f} points") + f" (goal >= +{RANDOM_MARGIN}: "
              f"{'yes' if met['vs_random'] else 'no'})",
              f"- searched vs the cheapest point: {g['miou_points_vs_cheapest']:+.2f} points (goal > 0: "
              f"{'yes' if met['vs_cheapest'] else 'no'})",
              f"- issue 26's goal: {'MET' if met['all'] else 'NOT MET'}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the output directory of benchmarks/arch2_space_camvid.sh")
    args = ap.parse_args(argv)
    try:
        summary = summarise(args.out)
    except (ValueError, KeyError, StopIteration) as e:
        print(f"error: {e!r}" if not isinstance(e, ValueError) else f"error: {e}", file=sys.stderr)
        return 2
    target = args.out / "summary.json"
    if not replace_own_json(target, summary, {"per_seed", "goal", "means"}):  # only over its own summary
        print(f"error: {target} exists and is not a summary of this script: not overwritten", file=sys.stderr)
        return 2
    text = markdown(summary)
    atomic_write_text(target.with_suffix(".md"), text)  # its twin: written only where summary.json is its own
    print(text, end="")
    print(f"written: {target} and {target.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
