"""Does lambda act as a dial, and does a latency budget land on its target? (docs/RESULTS.md, evidence a)

On the demo preset with shape-coded classes (``data.synthetic_classes_by=shape``: every shape painted alike, the class
is the outline, so encoder depth matters) and the shipped latency table:

1. one encoder search (truncated rule, decoder kept) per lambda: the derived depths and their table latency, which
   must never rise as lambda rises;
2. one budget search per target latency (``--target-latency``): the table latency of the chosen model and its
   measured latency per frame (ST-NAS protocol, all targets' models and the baseline timed interleaved).

Run (about 8 minutes on the 2-core development CPU, one thread):

    PYTHONPATH=src python benchmarks/stnas_dial.py --out runs/dial [--json dial.json]

Every search is the real ``vidnas search stnas`` (``search_stnas``); --smoke shrinks them to seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from vidnas.bench.protocol import protocol_rows
from vidnas.config import load_config
from vidnas.experiments.demo import DEMO_LATENCY_TABLE
from vidnas.models import Arch, build_model
from vidnas.search.stnas import search_stnas

SMOKE = ["data.synthetic_videos=3", "data.synthetic_frames=6", "train.batch_size=2", "train.max_steps_per_epoch=2",
         "stnas.encoder_epochs=1", "stnas.depth_val_batches=1", "stnas.bn_calib_batches=1"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/dial"))
    p.add_argument("--lambdas", default="0.0001,0.001,0.003,0.006,0.01,0.013,0.03,0.1")
    p.add_argument("--targets", default="3.2,3.6,4.0", help="target latencies (ms per frame, table)")
    p.add_argument("--frames", type=int, default=200, help="timed frames per model in the benchmark")
    p.add_argument("--smoke", action="store_true", help="tiny budgets: seconds, for tests")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    base = ["data.synthetic_classes_by=shape", f"stnas.latency_table={DEMO_LATENCY_TABLE}",
            *(SMOKE if args.smoke else [])]
    lambdas = [float(v) for v in args.lambdas.split(",")]
    targets = [float(v) for v in args.targets.split(",")]

    rows = []
    for lam in lambdas:
        res = search_stnas(load_config("demo", [*base, f"stnas.lam={lam}"]), args.out / f"lam_{lam:g}",
                           skip_decoder=True, show_progress=False, plots=False, save_init=False)
        rows.append({"lambda": lam, "depths": list(res.depths), "blocks_ms": res.derived_latency_ms,
                     "model_ms": res.model_latency_ms, "path": res.depth["path"]})
    print("## Lambda sweep (truncated rule, one search per lambda)\n")
    print("| lambda | depths | block latency (ms, table) | model latency (ms, table) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['lambda']:g} | {','.join(map(str, r['depths']))} | {r['blocks_ms']:.3f} | "
              f"{r['model_ms']:.3f} |")
    lat = [r["blocks_ms"] for r in rows]
    monotone = all(b <= a + 1e-12 for a, b in zip(lat, lat[1:], strict=False))
    distinct = len({tuple(r["depths"]) for r in rows})
    print(f"\nlatency never rises with lambda: {monotone}; distinct depth configurations: {distinct}")

    budget = []
    models: dict[str, torch.nn.Module] = {}
    cfg0 = load_config("demo", base)
    models["baseline"] = build_model(cfg0, num_classes=4)
    for target in targets:
        res = search_stnas(load_config("demo", [*base, f"stnas.target_latency_ms={target}"]),
                           args.out / f"target_{target:g}", skip_decoder=True, show_progress=False, plots=False,
                           save_init=False)
        budget.append({"target_ms": target, "depths": list(res.depths), "model_ms": res.model_latency_ms})
        models[f"target={target:g}"] = build_model(cfg0, Arch.load(res.arch_path), num_classes=4)
    bench = protocol_rows(models, img_size=(cfg0.data.height, cfg0.data.width), warmup=20, frames=args.frames,
                          flops=False)
    measured = {r.name: r.latency_ms for r in bench}
    scale = measured["baseline"] / res.full_model_latency_ms  # measured / table for the same (baseline) model
    print("\n## Latency budgets (truncated rule, most accurate depths that fit)\n")
    print("| target (ms) | depths | table latency (ms) | table / target | measured (ms) | measured / target | "
          "measured / (target x baseline measured/table) |")
    print("|---|---|---|---|---|---|---|")
    for b in budget:
        m = measured[f"target={b['target_ms']:g}"]
        b.update(measured_ms=m, scale=scale)
        print(f"| {b['target_ms']:g} | {','.join(map(str, b['depths']))} | {b['model_ms']:.3f} | "
              f"{b['model_ms'] / b['target_ms']:.3f} | {m:.3f} | {m / b['target_ms']:.3f} | "
              f"{m / (b['target_ms'] * scale):.3f} |")
    print(f"\nbaseline: table {res.full_model_latency_ms:.3f} ms, measured {measured['baseline']:.3f} ms "
          f"({args.frames} frames, interleaved with the budget models, 1 thread)")
    if args.json is not None:
        args.json.write_text(json.dumps({"lambdas": rows, "monotone": monotone, "distinct": distinct,
                                         "budgets": budget, "baseline_measured_ms": measured["baseline"],
                                         "baseline_table_ms": res.full_model_latency_ms}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
