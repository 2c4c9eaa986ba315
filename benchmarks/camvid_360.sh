#!/usr/bin/env bash
# Issue 29's CPU evidence: per-frame arch2 (EfficientNet-Lite0 from ImageNet, the 15-minute recipe) trained at the
# papers' CamVid resolution, 360x480 (configs/camvid_arch2_360_cpu.yaml), beside the same recipe at 176x240
# (configs/camvid_arch2_fast_cpu.yaml): val mIoU of the LAST epoch (no epoch is chosen on val), per-class IoU, VC8 and
# flicker (`vidnas eval` of checkpoints/last.pt), the training minutes and the loader's share, and the FPS of both in
# one interleaved `vidnas bench` (1 thread, each model at its own size). docs/RESULTS.md §19 has a run.
#
#   benchmarks/camvid_360.sh [OUT]          # full size: about 10 + 75 minutes of training on 2 quiet cores
#   SMOKE=1 benchmarks/camvid_360.sh OUT    # every stage at toy size (tests run this)
# Environment: VIDNAS (the command, default `vidnas`), PYTHON (for the table, default `python`), SEED (default 0),
# THREADS (training and evaluation threads, default 2: both cores of a quiet machine), FRAMES (timed frames per model,
# default 100), EXTRA (more arguments for every training, e.g. EXTRA="--set data.root=/data/camvid").
# Every stage resumes: run the same command again after an interruption (a training continues from its last.pt).
#
# Under OUT (default runs/camvid_360):
#   arch2_176x240_s<SEED>/, arch2_360x480_s<SEED>/   the two trainings; eval/last/eval.json beside their checkpoints
#   bench.json, bench.md                            the interleaved benchmark
#   summary.json, summary.md                        benchmarks/camvid_360_table.py: every quoted figure
set -euo pipefail

OUT=${1:-runs/camvid_360}
read -r -a VIDNAS_CMD <<< "${VIDNAS:-vidnas}"
read -r -a PY <<< "${PYTHON:-python}"
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
SEED=${SEED:-0}
THREADS=${THREADS:-2}
FRAMES=${FRAMES:-100}
WARMUP=5
CEILING=2048  # the roofline matmul of the benchmark
SETS=(--set train.seed="$SEED" "${EXTRA_ARGS[@]}")
declare -A SIZE_SETS=([176x240]="" [360x480]="")
if [[ "${SMOKE:-0}" == "1" ]]; then
  # toy size: one epoch of 2 steps of batch 2, at 64x96 and 128x192 (the two sizes keep their 1:2 ratio)
  SETS+=(--set train.epochs=1 --set train.max_steps_per_epoch=2 --set train.batch_size=2)
  SIZE_SETS=([176x240]="--set data.height=64 --set data.width=96" [360x480]="--set data.height=128 --set data.width=192")
  FRAMES=2
  WARMUP=0
  CEILING=0
fi
declare -A CONFIGS=([176x240]=configs/camvid_arch2_fast_cpu.yaml [360x480]=configs/camvid_arch2_360_cpu.yaml)
mkdir -p "$OUT"
# bench.md and summary.md are written beside their JSONs only: a file of that name without its JSON is not ours
for f in bench summary; do
  if [[ -e "$OUT/$f.md" && ! -e "$OUT/$f.json" ]]; then
    echo "error: $OUT/$f.md exists without $OUT/$f.json: not written by this script, not overwritten" >&2; exit 2
  fi
done

CKPTS=()
for SIZE in 176x240 360x480; do
  RUN="$OUT/arch2_${SIZE}_s$SEED"
  read -r -a SIZE_ARGS <<< "${SIZE_SETS[$SIZE]}"
  if [[ ! -f "$RUN/train_summary.json" ]]; then  # written when the training ends
    RESUME=()
    [[ -f "$RUN/checkpoints/last.pt" ]] && RESUME=(--resume)
    "${VIDNAS_CMD[@]}" train --config "${CONFIGS[$SIZE]}" "${SETS[@]}" "${SIZE_ARGS[@]}" --threads "$THREADS" \
      --quiet --out "$RUN" "${RESUME[@]}"
  fi
  if [[ ! -f "$RUN/eval/last/eval.json" ]]; then  # the last epoch's weights: nothing chosen on val
    "${VIDNAS_CMD[@]}" eval "$RUN/checkpoints/last.pt" --threads "$THREADS" --quiet
  fi
  CKPTS+=(--checkpoint "arch2_$SIZE=$RUN/checkpoints/last.pt")
done

if [[ ! -f "$OUT/bench.json" ]]; then
  "${VIDNAS_CMD[@]}" bench "${CKPTS[@]}" --ref arch2_176x240 --frames "$FRAMES" --warmup "$WARMUP" \
    --ceiling "$CEILING" --threads 1 --quiet --json "$OUT/bench.json" > "$OUT/bench.md"
fi
cat "$OUT/bench.md"
"${PY[@]}" "$(dirname "$0")/camvid_360_table.py" "$OUT" --seed "$SEED"
