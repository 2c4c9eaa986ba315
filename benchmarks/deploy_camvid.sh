#!/usr/bin/env bash
# Issue 28's deployment table on a trained model: every runtime x precision of one checkpoint in ONE interleaved
# `vidnas bench --runtime all` (PyTorch fp32 channels-last and bf16, onnxruntime fp32 and INT8, OpenVINO fp32, INT8 and
# bf16; 1 thread), each row's mIoU on the first ACC_FRAMES frames of the model's validation split and its delta to
# PyTorch fp32; then `vidnas export --precision int8` once per --keep-float choice (stem,head: the default; none:
# every Conv quantised), each with its accuracy check. benchmarks/deploy_table.py computes the table and the verdict on
# issue 28's goal (>= 4x the PyTorch fp32 FPS at <= 0.5 mIoU points lost). docs/RESULTS.md §21 has a run.
#
#   benchmarks/deploy_camvid.sh CHECKPOINT OUT       # e.g. runs/camvid_360/arch2_176x240_s0/checkpoints/last.pt
#   SMOKE=1 benchmarks/deploy_camvid.sh CKPT OUT     # toy size (tests run this on a tiny checkpoint)
# Environment: VIDNAS (the command, default `vidnas`), PYTHON (default `python`), FRAMES (timed frames per row, default
# 100), ACC_FRAMES (validation frames of the accuracy columns, default 101: CamVid's whole val clip), CALIB (calibration
# frames of the training split, default 32), KEEP_FLOAT (the --keep-float choices, default "stem,head none").
# Every stage is skipped when its output exists (rerun after an interruption).
#
# Under OUT: bench.json, bench.md (the interleaved run), int8_<choice>/export.json (+ its graphs), summary.json/.md.
set -euo pipefail

CKPT=${1:?usage: benchmarks/deploy_camvid.sh CHECKPOINT OUT}
OUT=${2:?usage: benchmarks/deploy_camvid.sh CHECKPOINT OUT}
read -r -a VIDNAS_CMD <<< "${VIDNAS:-vidnas}"
read -r -a PY <<< "${PYTHON:-python}"
FRAMES=${FRAMES:-100}
ACC_FRAMES=${ACC_FRAMES:-101}
CALIB=${CALIB:-32}
KEEP_FLOAT=${KEEP_FLOAT:-stem,head none}
WARMUP=10
CEILING=2048
if [[ "${SMOKE:-0}" == "1" ]]; then
  FRAMES=2
  WARMUP=0
  CEILING=0
fi
[[ -f "$CKPT" ]] || { echo "error: checkpoint not found: $CKPT" >&2; exit 2; }
mkdir -p "$OUT"
# bench.md and summary.md are written beside their JSONs only: a file of that name without its JSON is not ours
for f in bench summary; do
  if [[ -e "$OUT/$f.md" && ! -e "$OUT/$f.json" ]]; then
    echo "error: $OUT/$f.md exists without $OUT/$f.json: not written by this script, not overwritten" >&2; exit 2
  fi
done

if [[ ! -f "$OUT/bench.json" ]]; then
  "${VIDNAS_CMD[@]}" bench --checkpoint "model=$CKPT" --runtime all --calib-frames "$CALIB" \
    --accuracy-frames "$ACC_FRAMES" --frames "$FRAMES" --warmup "$WARMUP" --ceiling "$CEILING" --threads 1 --quiet \
    --json "$OUT/bench.json" > "$OUT/bench.md"
fi
cat "$OUT/bench.md"
EXPORTS=()
for K in $KEEP_FLOAT; do
  DIR="$OUT/int8_${K//,/_}"
  if [[ ! -f "$DIR/export.json" ]]; then
    "${VIDNAS_CMD[@]}" export "$CKPT" --out "$DIR" --precision int8 --keep-float "$K" --calib-frames "$CALIB" \
      --accuracy-frames "$ACC_FRAMES" --parity-frames 2 --threads 1 --overwrite
  fi
  EXPORTS+=("$DIR")
done
"${PY[@]}" "$(dirname "$0")/deploy_table.py" "$OUT" "${EXPORTS[@]}"
