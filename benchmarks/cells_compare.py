"""Compare cell-search runs at equal N: a search and its random baseline (issue 13), or two reward settings.

    python benchmarks/cells_compare.py search=runs/cells random=runs/cells_random
    python benchmarks/cells_compare.py w0=runs/cells_w0 random=runs/cells_random --key accuracy_reward

Each NAME=RUN_DIR names a `vidnas search cells` run directory (`--random` for the baseline). Every run is cut to the
smallest number of candidates among them. Printed per run: N, mean reward, the first and last third (mean +- standard
error: a search that learns has its last third above its first; a random baseline's thirds agree), how many
candidates stopped early at the halfway rule and the mean and thirds over those that ran every cell epoch (an
early-stopped reward is a halfway reward: runs that stop different shares early compare at equal training only
there), best of N, mean accuracy reward, mean and median measured latency and FPS ratio to the static network, and
the share of candidates faster than it. `--key accuracy_reward` compares the accuracy reward alone, e.g. a
latency-weight-0 search against a random baseline run with a latency weight (the random sampler draws the same cells
whatever the weight).

Runs whose directory holds a `proxy_check.json` (`vidnas search cells --proxy-check N`) get a second table: the rank
correlation (Spearman rho, Kendall tau-b) of the proxy reward and of the proxy mIoU with the full-size meta-val mIoU,
and where the top-k cells rank by full-size mIoU among the N checked; the JSON holds each run's correlations under
`proxy_check`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vidnas.search.cells import compare_runs, format_comparison
from vidnas.search.cells.proxy_check import PROXY_CHECK_NAME, format_proxy_correlations
from vidnas.utils import atomic_write_json


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR", help="cell-search run directories to compare")
    ap.add_argument("--key", choices=("reward", "accuracy_reward"), default="reward",
                    help="which reward the statistics are about (default: the one the controller learned from)")
    ap.add_argument("--json", type=Path, help="also write the statistics as JSON")
    args = ap.parse_args(argv)
    runs = {}
    for item in args.runs:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            ap.error(f"{item!r}: expected NAME=RUN_DIR")
        if not (Path(path) / "candidates.jsonl").is_file():
            ap.error(f"{item!r}: no candidates.jsonl in {path}")
        runs[name] = path
    try:
        stats = compare_runs(runs, key=args.key)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"statistics of the {args.key} over the first {next(iter(stats.values()))['candidates_compared']} "
          "candidates of each run")
    print(format_comparison(stats))
    checks = {name: json.loads((Path(path) / PROXY_CHECK_NAME).read_text()) for name, path in runs.items()
              if (Path(path) / PROXY_CHECK_NAME).is_file()}
    if checks:
        print("proxy check: rank correlation of the proxy score with the full-size meta-val mIoU")
        print(format_proxy_correlations(checks))
        for name, d in checks.items():
            stats[name]["proxy_check"] = {"n": d["n"], "decided_on": d["decided_on"], **d["correlations"]}
    if args.json is not None:
        atomic_write_json(args.json, stats)
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
