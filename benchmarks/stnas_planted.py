"""Planted answers for the ST-NAS search (docs/RESULTS.md, evidence c): does the search find what was built in?

1. Depth. The demo's encoder (swin_test, depths 2,2,4,2) with blocks 2-4 of stage 3 made useless by construction: their
   attention and MLP output projections are zero and frozen, so each of them is an exact identity map. On the demo data
   with shape-coded classes (where depth matters, docs/RESULTS.md §6) the truncated rule should drop them (the loss
   they save is nil) and keep blocks whose removal costs validation loss; the paper's shrink rule is run beside it.
2. Decoder. The decoder search alone (--skip-encoder) on the demo data with 30% of the frames corrupted (temporal
   context helps: a corrupted frame's labels stay true) and without corruption, 3 training seeds each; the count of
   temporal ops per derived decoder.

Run (about 5 minutes on the 2-core development CPU, one thread):

    PYTHONPATH=src python benchmarks/stnas_planted.py --out runs/planted [--seeds 0,1,2] [--json planted.json]

It prints markdown tables; --smoke shrinks every run to seconds (what tests/test_benchmarks_scripts.py runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from vidnas.config import load_config
from vidnas.experiments.demo import DEMO_LATENCY_TABLE
from vidnas.models.encoders import ENCODERS, build_encoder
from vidnas.search.stnas import search_stnas

PLANTED = "swin_test_planted"
PLANTED_STAGE = 2  # stage 3 of 4: 4 blocks in the demo's 2,2,4,2
# one supernet epoch per phase (the demo's 6 encoder and the decoder runs' 4 decoder epochs otherwise): the identities
# are identities whatever the training, and a decoder search needs its warm-up epoch plus one with the betas trained
SMOKE = ["data.height=64", "data.width=96", "data.synthetic_videos=3", "data.synthetic_frames=6",
         "model.decoder_channels=8", "model.decoder_dilations=1,2", "train.batch_size=2",
         "train.max_steps_per_epoch=2", "stnas.depth_val_batches=1", "stnas.bn_calib_batches=1",
         "stnas.encoder_epochs=1", "stnas.decoder_epochs=2"]


def planted_swin(**kwargs):
    """swin_test with blocks 2.. of stage ``PLANTED_STAGE`` turned into exact identities (zero, frozen output
    projections of attention and MLP: x + 0 + 0). Its name stays ``swin_test`` so latency tables match."""
    enc = build_encoder("swin_test", **kwargs)
    for block in list(enc.stages[PLANTED_STAGE].blocks)[1:]:
        for lin in (block.attn.proj, block.mlp.fc2):
            with torch.no_grad():
                lin.weight.zero_()
                lin.bias.zero_()
            lin.weight.requires_grad_(False)
            lin.bias.requires_grad_(False)
    return enc


def _register() -> None:
    if PLANTED not in ENCODERS:
        ENCODERS.register(PLANTED, planted_swin)


def depth_runs(out: Path, smoke: bool, lams: list[float]) -> list[dict]:
    _register()
    rows = []
    extra = SMOKE if smoke else []
    table = [] if smoke else [f"stnas.latency_table={DEMO_LATENCY_TABLE}"]
    for rule, lam in [("truncated", lam) for lam in lams] + [("paper", lams[-1])]:
        cfg = load_config("demo", ["model.encoder=" + PLANTED, "data.synthetic_classes_by=shape",
                                   f"stnas.depth_rule={rule}", f"stnas.lam={lam}", *table, *extra])
        res = search_stnas(cfg, out / f"depth_{rule}_{lam:g}", skip_decoder=True, show_progress=False, plots=False,
                           save_init=False)
        d = res.depth or {}
        rows.append({"rule": rule, "lambda": lam, "depths": list(res.depths), "losses": d.get("losses"),
                     "alphas": res.alphas, "flip_lambda": d.get("flip_lambda")})
    return rows


def decoder_runs(out: Path, smoke: bool, seeds: list[int]) -> list[dict]:
    rows = []
    extra = SMOKE if smoke else []
    for corruption in (0.3, 0.0):
        for seed in seeds:
            cfg = load_config("demo", [f"data.synthetic_corruption={corruption}", f"train.seed={seed}",
                                       "stnas.decoder_epochs=4", "stnas.warmup_epochs=1", *extra])
            res = search_stnas(cfg, out / f"decoder_c{corruption:g}_s{seed}", skip_encoder=True, show_progress=False,
                               plots=False, save_init=False)
            ops = list(res.decoder_ops)
            weights = (res.decoder or {}).get("weights_mean") or []
            temporal_weight = sum(w for row in weights for c, w in zip(res.candidates, row, strict=True)
                                  if c.startswith("temporal")) / max(len(weights), 1)
            rows.append({"corruption": corruption, "seed": seed, "ops": ops,
                         "temporal": sum(o.startswith("temporal") for o in ops),
                         "identity": sum(o == "identity" for o in ops),
                         "temporal_weight": temporal_weight})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/planted"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--lambdas", default="0.001,0.003")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: seconds, for tests")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--skip", choices=("depth", "decoder"), default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    lams = [float(v) for v in args.lambdas.split(",")]
    result: dict = {}
    if args.skip != "depth":
        result["depth"] = depth_runs(args.out, args.smoke, lams)
        print(f"## Depth: stage {PLANTED_STAGE + 1} blocks 2.. are identities by construction\n")
        print("| rule | lambda | derived depths | truncated losses of the planted stage |")
        print("|---|---|---|---|")
        for r in result["depth"]:
            losses = r["losses"][PLANTED_STAGE] if r["losses"] else None
            shown = "-" if losses is None else ", ".join(f"{v:.4f}" for v in losses)
            print(f"| {r['rule']} | {r['lambda']:g} | {','.join(map(str, r['depths']))} | {shown} |")
    if args.skip != "decoder":
        result["decoder"] = decoder_runs(args.out, args.smoke, seeds)
        print("\n## Decoder: temporal ops picked with and without corrupted frames\n")
        print("| corruption | seed | temporal / spatial / identity ops | mean softmax weight on temporal ops |")
        print("|---|---|---|---|")
        for r in result["decoder"]:
            n = len(r["ops"])
            print(f"| {r['corruption']:g} | {r['seed']} | {r['temporal']} / {n - r['temporal'] - r['identity']} / "
                  f"{r['identity']} | {r['temporal_weight']:.3f} |")
        by = {c: [r for r in result["decoder"] if r["corruption"] == c] for c in (0.3, 0.0)}
        wins = sum(a["temporal"] > b["temporal"] for a, b in zip(by[0.3], by[0.0], strict=True))
        print(f"\nSeeds where the corrupted data got more temporal ops: {wins} of {len(seeds)}")
        result["decoder_wins"] = wins
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
