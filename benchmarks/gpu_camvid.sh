#!/usr/bin/env bash
# Issue 29's GPU run, one command, about 10 minutes on one H100: per-frame arch2 (configs/camvid_arch2_360_cpu.yaml,
# EfficientNet-Lite0 from ImageNet, CamVid at 360x480) trained with bf16 autocast, a channels-last encoder and every
# frame decoded once into the cache (loader workers augment), for as many epochs as fit TRAIN_MINUTES; then evaluated
# on val and benchmarked in fp32 and bf16 at batch 1 and batch 8.
#
#   benchmarks/gpu_camvid.sh [OUT]          # device auto-detected: cuda when present, else the CPU (very slow)
#   SMOKE=1 benchmarks/gpu_camvid.sh OUT    # every stage at toy size, on the CPU (tests run this)
# Environment: VIDNAS (the command, default `vidnas`, else PYTHON -m vidnas.cli.main), PYTHON (default the
# repository's .venv/bin/python, else `python`), DEVICE (default: cuda when torch sees one, else cpu), TRAIN_MINUTES
# (the training budget, default 6), MAX_EPOCHS (default 300), WORKERS (loader workers; default 8 on cuda, 0 on the
# CPU), BATCHES (bench batch sizes, default "1 8"), FRAMES (timed frames per bench row, default 200), RESULTS (default
# the repository's benchmarks/results), EXTRA (more arguments for every training, e.g.
# EXTRA="--set data.root=/data/camvid").
#
# The epoch budget: a probe trains PROBE_STEPS steps (default 12) in its own run directory; its step and validation
# seconds (train_summary.json) give the seconds of one epoch and of one validation, and the run trains
# floor((TRAIN_MINUTES * 60 - 10 validations) / epoch seconds) epochs, validating about 10 times, so the cosine
# schedule knows its end.
#
# Under OUT (default runs/gpu_camvid): probe/, train/ (the run; eval/ beside its checkpoints), bench_b<B>.json.
# Under RESULTS: gpu_camvid_<UTC time>.json (device, epochs, epochs per minute, train seconds, the loader's share,
# val mIoU and per-class IoU, VC8, flicker, every bench row) and gpu_camvid_<UTC time>.log (everything printed).
# A rerun with the same OUT skips the finished stages (training resumes from its last checkpoint) and writes new
# result files; nothing existing is ever overwritten.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$REPO/runs/gpu_camvid}
DEFAULT_PY=python
[[ -x "$REPO/.venv/bin/python" ]] && DEFAULT_PY=$REPO/.venv/bin/python
read -r -a PY <<< "${PYTHON:-$DEFAULT_PY}"
DEFAULT_VIDNAS="${PY[*]} -m vidnas.cli.main"
command -v vidnas > /dev/null && DEFAULT_VIDNAS=vidnas
read -r -a VIDNAS_CMD <<< "${VIDNAS:-$DEFAULT_VIDNAS}"
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
CONFIG=$REPO/configs/camvid_arch2_360_cpu.yaml
RESULTS=${RESULTS:-$REPO/benchmarks/results}
TRAIN_MINUTES=${TRAIN_MINUTES:-6}
MAX_EPOCHS=${MAX_EPOCHS:-300}
PROBE_STEPS=${PROBE_STEPS:-12}
BATCHES=${BATCHES:-1 8}
FRAMES=${FRAMES:-200}
WARMUP=20
CEILING=2048  # the roofline matmul of the benchmarks
DEVICE=${DEVICE:-$("${PY[@]}" - <<< 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}
if [[ "$DEVICE" == cuda* ]]; then WORKERS=${WORKERS:-8}; else WORKERS=${WORKERS:-0}; fi
SETS=(--set train.amp=bf16 --set train.channels_last=true --set data.num_workers="$WORKERS" "${EXTRA_ARGS[@]}")
BENCH_SIZE=(--height 360 --width 480)
if [[ "${SMOKE:-0}" == "1" ]]; then
  SETS+=(--set data.height=64 --set data.width=96 --set train.batch_size=2 --set train.max_steps_per_epoch=2)
  BENCH_SIZE=(--height 64 --width 96)
  PROBE_STEPS=2
  FRAMES=2
  WARMUP=1
  BATCHES="1 2"
  CEILING=0
fi
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT" "$RESULTS"
LOG="$RESULTS/gpu_camvid_$STAMP.log"
JSON="$RESULTS/gpu_camvid_$STAMP.json"
for f in "$LOG" "$JSON"; do
  [[ -e "$f" ]] && { echo "error: $f exists; not overwriting it (rerun in a second)" >&2; exit 2; }
done
exec > >(tee "$LOG") 2>&1
echo "gpu_camvid: $(date -u +%Y-%m-%dT%H:%M:%SZ), device $DEVICE, out $OUT, training budget $TRAIN_MINUTES min"
T0=$SECONDS
COMMON=(--config "$CONFIG" --device "$DEVICE" --quiet)

# 1. the epoch budget: PROBE_STEPS steps of the same run (model, data, loader, precision), validated once
EPOCHS_FILE="$OUT/epochs.txt"
if [[ ! -f "$EPOCHS_FILE" ]]; then
  [[ -d "$OUT/probe" ]] && PROBE_RESET=(--overwrite) || PROBE_RESET=()
  "${VIDNAS_CMD[@]}" train "${COMMON[@]}" "${SETS[@]}" --set train.epochs=1 \
    --set train.max_steps_per_epoch="$PROBE_STEPS" --out "$OUT/probe" "${PROBE_RESET[@]}"
  "${PY[@]}" - "$OUT/probe/train_summary.json" "$TRAIN_MINUTES" "$MAX_EPOCHS" "$PROBE_STEPS" "${SMOKE:-0}" \
    > "$EPOCHS_FILE" <<'PYEOF'
import json, math, sys
s = json.load(open(sys.argv[1]))
minutes, cap, probe, smoke = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
per_step = s["step_seconds_this_invocation"] / s["steps_per_epoch"]  # the probe's steps (its cap)
epoch = per_step * math.ceil(s["train_clips"] / s["batch_size"])  # a whole epoch of the train split
val = s["train_seconds_this_invocation"] - s["step_seconds_this_invocation"]  # validation + checkpoint
# epochs * epoch + 10 validations fit the budget (the run validates about 10 times)
epochs = 1 if smoke else max(1, min(cap, int((minutes * 60 - 10 * val) // epoch)))
val_every = max(1, epochs // 10)
print(epochs, val_every, f"{per_step:.4f}", f"{epoch:.2f}", f"{val:.2f}", f"{s['data_share']:.4f}")
PYEOF
fi
read -r EPOCHS VAL_EVERY PER_STEP EPOCH_S VAL_S PROBE_SHARE < "$EPOCHS_FILE"
echo "probe: ${PER_STEP} s per step (loader share $PROBE_SHARE), ${EPOCH_S} s per epoch, validation ${VAL_S} s:" \
  "$EPOCHS epochs in $TRAIN_MINUTES min, validated every $VAL_EVERY"

# 2. the training (resumed when interrupted), then val: per-class IoU, VC8, flicker under both protocols
RUN="$OUT/train"
if [[ ! -f "$RUN/eval/best/eval.json" ]]; then
  RESUME=()
  [[ -f "$RUN/checkpoints/last.pt" ]] && RESUME=(--resume)
  "${VIDNAS_CMD[@]}" train "${COMMON[@]}" "${SETS[@]}" --set train.epochs="$EPOCHS" \
    --set train.val_every="$VAL_EVERY" --out "$RUN" "${RESUME[@]}"
  "${VIDNAS_CMD[@]}" eval "$RUN/checkpoints/best.pt" --device "$DEVICE" --quiet
fi

# 3. fp32 and bf16 (autocast) in one interleaved run per batch size, with their pixel agreement
BENCH_JSONS=()
for B in $BATCHES; do
  J="$OUT/bench_b$B.json"
  if [[ ! -f "$J" ]]; then
    "${VIDNAS_CMD[@]}" bench --checkpoint "arch2_360=$RUN/checkpoints/best.pt" "${BENCH_SIZE[@]}" --device "$DEVICE" \
      --compare amp --batch "$B" --frames "$FRAMES" --warmup "$WARMUP" --ceiling "$CEILING" --quiet --json "$J"
  fi
  BENCH_JSONS+=("$J")
done

# 4. one JSON of it all
"${PY[@]}" - "$JSON" "$RUN" "$DEVICE" "$((SECONDS - T0))" "$EPOCHS_FILE" "${BENCH_JSONS[@]}" <<'PYEOF'
import json, sys
from pathlib import Path
from vidnas.bench import device_signature
from vidnas.utils import atomic_write_json
out, run, device, wall, epochs_file, benches = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), \
    sys.argv[5], sys.argv[6:]
summary = json.loads((run / "train_summary.json").read_text())
ev = json.loads((run / "eval" / "best" / "eval.json").read_text())
epochs = summary["epochs"]
minutes = summary["train_seconds_this_invocation"] / 60  # steps and validations
rows = [r for b in benches for r in json.loads(Path(b).read_text())]
result = {
    "device": device, "device_signature": device_signature(), "wall_seconds": wall, "epochs": epochs,
    "epochs_per_minute": epochs / minutes if minutes > 0 else None,
    "train_seconds": summary["train_seconds_this_invocation"], "step_seconds": summary["step_seconds_this_invocation"],
    "data_share": summary["data_share"], "best_epoch": summary["best_epoch"], "best_val_miou": summary["best_miou"],
    "probe": dict(zip(("epochs", "val_every", "step_s", "epoch_s", "val_s", "data_share"),
                      open(epochs_file).read().split())),
    "eval": ev,
    "bench": [{"name": r["name"], "batch": r["extra"].get("batch"), "precision": r["extra"].get("precision"),
               "fps": r["fps"], "latency_ms": r["latency_ms"], "pixel_agreement": r["extra"].get("pixel_agreement")}
              for r in rows],
}
atomic_write_json(out, result)
print(f"epochs {epochs} in {minutes:.2f} min of training, validations included ({result['epochs_per_minute']:.2f} "
      f"epochs per minute; the loader's share of the steps {summary['data_share']:.1%}); "
      f"best val mIoU {summary['best_miou']:.4f} at epoch {summary['best_epoch'] + 1}")
for r in result["bench"]:
    print(f"bench {r['name']}: batch {r['batch']}, {r['precision']}, {r['fps']:.1f} FPS")
print(f"written: {out}")
PYEOF
echo "gpu_camvid: done in $((SECONDS - T0)) s; log $LOG"
