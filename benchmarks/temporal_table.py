"""Summarise trained CamVid models side by side: both validation protocols, per-class IoU, VC8, flicker, and the FPS
of one interleaved benchmark (issue 16's evidence table; docs/RESULTS.md §17).

    python benchmarks/temporal_table.py --bench OUT/bench.json NAME=RUN_DIR [NAME=RUN_DIR ...]

Every RUN_DIR is a `vidnas train` directory evaluated with `vidnas eval RUN_DIR/checkpoints/best.pt` (its
`eval/best/eval.json`). Runs whose NAME differs only by a trailing `_s<seed>` are one model: the table gives each seed
and their mean. The FPS column comes from `vidnas bench --json` rows named like the models (no suffix).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

RARE = ("Pole", "SignSymbol", "Pedestrian", "Bicyclist")


def load(run: Path) -> dict:
    path = run / "eval" / "best" / "eval.json"
    if not path.is_file():
        raise SystemExit(f"{path}: not found (run `vidnas eval {run}/checkpoints/best.pt` first)")
    return json.loads(path.read_text())


def class_names(run: Path) -> list[str]:
    from vidnas.models import load_model

    return list(load_model(run / "checkpoints" / "best.pt").class_names)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    ap.add_argument("--bench", type=Path, help="`vidnas bench --json` output (rows named like the models)")
    ap.add_argument("--ref", default="arch2", help="model the FPS and mIoU differences are taken against")
    args = ap.parse_args(argv)
    rows: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    names: list[str] | None = None
    for item in args.runs:
        name, _, run = item.partition("=")
        if not run:
            raise SystemExit(f"{item!r}: expected NAME=RUN_DIR")
        model, seed = (m.group(1), m.group(2)) if (m := re.fullmatch(r"(.+)_s(\d+)", name)) else (name, "0")
        rows[model].append((seed, load(Path(run))))
        names = names or class_names(Path(run))
    fps = {}
    if args.bench is not None:
        for r in json.loads(args.bench.read_text()):
            fps[r["name"]] = r.get("fps")
            if "inc_fps" in (r.get("extra") or {}):
                fps[r["name"] + "@inc"] = r["extra"]["inc_fps"]
    assert names is not None

    def deployed(model: str) -> float | None:  # what model.stream() runs: incremental where the model has it
        return fps.get(model + "@inc") or fps.get(model)

    rare = [names.index(c) for c in RARE if c in names]
    head = ["model", "seed", "mIoU dense clips", "mIoU dense stream", "mIoU matched stream", "VC8", "flicker",
            *[names[i] for i in rare], "FPS window decode", "FPS deployed"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    means: dict[str, dict[str, float]] = {}
    for model, seeds in rows.items():
        acc: dict[str, list[float]] = defaultdict(list)
        for seed, ev in sorted(seeds):
            vals = {"clips": ev["clips"]["miou"], "stream": ev["stream"]["miou"],
                    "matched": (ev.get("stream_matched") or ev["stream"])["miou"], "vc8": ev["stream"].get("vc8"),
                    "flicker": ev["stream"].get("flicker")}
            for i in rare:
                vals[names[i]] = ev["stream"]["per_class_iou"][i]
            for k, v in vals.items():
                if v is not None:
                    acc[k].append(float(v))
            out.append(_row(model, seed, vals, rare, names, None, None))
        mean = {k: sum(v) / len(v) for k, v in acc.items()}
        means[model] = mean
        if len(seeds) > 1:
            out.append(_row(f"**{model}**", "mean", mean, rare, names, fps.get(model), deployed(model)))
        else:
            out[-1] = _row(model, seeds[0][0], mean, rare, names, fps.get(model), deployed(model))
    print("\n".join(out))
    if args.ref in means:
        ref = means[args.ref]
        print(f"\nDifferences to {args.ref} (means over seeds, mIoU points; FPS ratio of the interleaved benchmark):")
        for model, m in means.items():
            if model == args.ref:
                continue
            a, b = deployed(model), deployed(args.ref)
            ratio = f"{a / b:.2f}x its deployed FPS" if a and b else "FPS -"
            print(f"- {model}: dense stream {100 * (m['stream'] - ref['stream']):+.1f}, matched stream "
                  f"{100 * (m['matched'] - ref['matched']):+.1f}, flicker {m['flicker'] - ref['flicker']:+.4f}, "
                  f"{ratio}")
    return 0


def _row(model: str, seed: str, v: dict, rare: list[int], names: list[str], fps: float | None,
         fps_deployed: float | None) -> str:
    def f(x: float | None, spec: str = ".4f") -> str:
        return "-" if x is None or x != x else format(x, spec)

    cells = [model, seed, f(v.get("clips")), f(v.get("stream")), f(v.get("matched")), f(v.get("vc8")),
             f(v.get("flicker")), *[f(v.get(names[i]), ".3f") for i in rare], f(fps, ".1f"), f(fps_deployed, ".1f")]
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    sys.exit(main())
