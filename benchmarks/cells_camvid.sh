#!/usr/bin/env bash
# The CamVid evidence of issue 13 (docs/RESULTS.md §15), end to end, from the ImageNet-pretrained EfficientNet-Lite0:
#
#   1. the static arch2 network (STATIC_EPOCHS), and a second one trained STATIC_EPOCHS + FINAL_EPOCHS epochs: the
#      per-frame baseline with the same total epochs as the cell models (static + end-to-end fine-tuning);
#   2. a latency-aware search of N candidates at the proxy budget (configs/camvid_cells_cpu.yaml, latency weight
#      -0.07); before its top TOP_K cells are trained end to end (FINAL_CELL_EPOCHS cell-only, FINAL_EPOCHS
#      fine-tuning), the proxy check (issue 27): PROXY_CHECK genotypes (the top TOP_K and others spread over the
#      reward range) trained again at the full size (FINAL_CELL_EPOCHS cell-only) and scored on meta-val, with the
#      rank correlation of proxy reward and full-size mIoU (proxy_check.json; docs/CELLS.md);
#   3. the random baseline: N candidates from a frozen uniform controller, everything else the same (no top-k);
#   4. the paper's reward: the same search at latency weight 0, its proxy check and top cells the same way;
#   5. reward statistics at equal N and the proxy checks' correlations (benchmarks/cells_compare.py), sampling
#      proportions and top-cell drawings (each run's plots/), `vidnas eval` of every model on the dense val clip
#      (mIoU, VC8, flicker), and one interleaved `vidnas bench` per size (SIZES) with PyTorch and onnxruntime rows (--runtime both).
#
# Defaults: the full evidence, several hours on a 2-core CPU (28-30 min per 300-candidate search with 1 worker
# at the proxy budget, most of the rest in end-to-end fine-tuning). Every knob is an environment variable:
#   OUT=runs/cells_camvid N=300 WORKERS=2 THREADS=1 TOP_K=2 STATIC_EPOCHS=8 FINAL_CELL_EPOCHS=3 FINAL_EPOCHS=10
#   PROXY_CHECK=8 (genotypes of each search's proxy check, >= 3; 0: no check. A search finished before the check
#   gets the check alone on the next run of the script, with the paper's k = 2 as its top-k: its top-k cells are
#   not trained again)
#   FRAMES=30 SIZES="176x240 360x480" (SIZES="": no benchmark) CEILING=2048 (the benchmark's roofline matmul; 0: none)
#   DATA_ROOT=../shared/data/camvid PYTHON=python
#   VIDNAS=vidnas (the command, words split: e.g. VIDNAS="python -m vidnas.cli.main")
#   EXTRA="--set a.b=c ..." (added to every train / search / eval command; the tiny test runs synthetic data with it)
#   MAX_STEPS=  (cap on steps per epoch everywhere; empty = none)
# Finished steps are skipped when the script is run again (each step's output is checked first).
set -euo pipefail

VIDNAS=${VIDNAS:-vidnas}
read -r -a python <<< "${PYTHON:-python}"  # a command of several words, like VIDNAS
OUT=${OUT:-runs/cells_camvid}
DATA_ROOT=${DATA_ROOT:-../shared/data/camvid}
N=${N:-300}
WORKERS=${WORKERS:-2}
THREADS=${THREADS:-1}
TOP_K=${TOP_K:-2}
STATIC_EPOCHS=${STATIC_EPOCHS:-8}
FINAL_CELL_EPOCHS=${FINAL_CELL_EPOCHS:-3}
FINAL_EPOCHS=${FINAL_EPOCHS:-10}
PROXY_CHECK=${PROXY_CHECK:-8}
FRAMES=${FRAMES:-30}
SIZES=${SIZES-"176x240 360x480"}
STATIC_CONFIG=${STATIC_CONFIG:-configs/camvid_sptcn_cpu.yaml}
CELLS_CONFIG=${CELLS_CONFIG:-configs/camvid_cells_cpu.yaml}
EXTRA=${EXTRA:-}
MAX_STEPS=${MAX_STEPS:-}
HERE=$(cd "$(dirname "$0")" && pwd)

read -r -a extra <<< "$EXTRA"
read -r -a vidnas <<< "$VIDNAS"
steps=()
[ -n "$MAX_STEPS" ] && steps=(--max-steps "$MAX_STEPS")
train_steps=()
[ -n "$MAX_STEPS" ] && train_steps=(--set "train.max_steps_per_epoch=$MAX_STEPS")
mkdir -p "$OUT"
say() { printf '\n== %s\n' "$*"; }

static_run() {  # NAME EPOCHS
  if [ -f "$OUT/$1/checkpoints/best.pt" ]; then say "$1: done"; return; fi
  say "$1: arch2 static network, $2 epochs"
  "${vidnas[@]}" train --config "$STATIC_CONFIG" --set "data.root=$DATA_ROOT" --set model.decoder=arch2 \
    --set data.window=1 --epochs "$2" --threads "$THREADS" "${train_steps[@]}" "${extra[@]}" --out "$OUT/$1" -q
}

search_run() {  # NAME TOP_K [options...]
  local name=$1 top=$2
  shift 2
  local check=()
  [ "$top" != 0 ] && [ "$PROXY_CHECK" != 0 ] && check=(--proxy-check "$PROXY_CHECK")
  if [ -f "$OUT/$name/search_summary.json" ] && { [ "$top" = 0 ] || [ -f "$OUT/$name/report.md" ]; }; then
    if [ ${#check[@]} = 0 ] || [ -f "$OUT/$name/proxy_check.json" ]; then say "$name: done"; return; fi
    top=0  # finished before the proxy check: the check alone, the top-k cells stay as they were trained
  fi
  local resume=()
  [ -f "$OUT/$name/candidates.jsonl" ] && resume=(--resume)
  say "$name: $N candidates $*"
  "${vidnas[@]}" search cells --config "$CELLS_CONFIG" --set "data.root=$DATA_ROOT" \
    --static "$OUT/static/checkpoints/best.pt" -n "$N" --workers "$WORKERS" --batch 2 --threads "$THREADS" \
    --top-k "$top" "${check[@]}" --final-cell-epochs "$FINAL_CELL_EPOCHS" --final-epochs "$FINAL_EPOCHS" \
    "${steps[@]}" "${extra[@]}" "$@" "${resume[@]}" --out "$OUT/$name" -q
}

static_run static "$STATIC_EPOCHS"
static_run static_long "$((STATIC_EPOCHS + FINAL_EPOCHS))"
search_run search "$TOP_K"
search_run random 0 --random
search_run search_w0 "$TOP_K" --latency-weight 0

say "reward statistics at equal N"
"${python[@]}" "$HERE/cells_compare.py" search="$OUT/search" random="$OUT/random" --json "$OUT/compare.json"
"${python[@]}" "$HERE/cells_compare.py" search_w0="$OUT/search_w0" search="$OUT/search" random="$OUT/random" \
  --key accuracy_reward --json "$OUT/compare_accuracy.json"

models=("static=$OUT/static_long/checkpoints/best.pt")
for run in search search_w0; do
  for ((k = 0; k < TOP_K; k++)); do
    ckpt="$OUT/$run/top/cell$k/model.pt"
    [ -f "$ckpt" ] && models+=("${run}_cell$k=$ckpt")
  done
done

say "val clip: mIoU, VC8, flicker (streamed: the static network on frame 0, the cell on the others)"
for m in "${models[@]}"; do
  name=${m%%=*}
  ckpt=${m#*=}
  [ -f "$OUT/eval/$name/eval.json" ] && continue
  "${vidnas[@]}" eval "$ckpt" --threads "$THREADS" "${extra[@]}" --out "$OUT/eval/$name" -q
done
"${python[@]}" - "$OUT" "${models[@]}" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| model | mIoU | fwIoU | mAcc | VC8 | flicker |")
print("|---|---|---|---|---|---|")
for item in sys.argv[2:]:
    name = item.split("=", 1)[0]
    e = json.loads((out / "eval" / name / "eval.json").read_text())
    s = e.get("stream") or e["clips"]
    print(f"| {name} | {s['miou']:.4f} | {s['fwiou']:.4f} | {s['macc']:.4f} | {s.get('vc8', float('nan')):.4f} | "
          f"{s.get('flicker', float('nan')):.4f} |")
PY

bench_args=()
for m in "${models[@]}"; do bench_args+=(--checkpoint "$m"); done
for size in $SIZES; do
  h=${size%x*}
  w=${size#*x}
  say "runtime table at ${h}x${w}: PyTorch and onnxruntime, interleaved"
  "${vidnas[@]}" bench "${bench_args[@]}" --runtime both --height "$h" --width "$w" --frames "$FRAMES" --warmup 3 \
    --ceiling "${CEILING:-2048}" \
    --threads "$THREADS" --ref static --json "$OUT/bench_${h}x${w}.json" -q
done
say "done: $OUT (compare*.json, eval/, bench_*.json, */plots/, */top/)"
