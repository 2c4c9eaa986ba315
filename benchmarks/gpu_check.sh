#!/usr/bin/env bash
# The GPU path, checked in one run of at most ~8 minutes, everything into one log.
#
#   benchmarks/gpu_check.sh [--device cuda|cpu] [--out DIR] [--python PY]
#
# On a CUDA machine (default --device cuda):
#   1. the test suite's device-marked subset on the GPU (pytest -m device --device cuda): streaming == clip for every
#      model kind, training steps in fp32 / bf16 / fp16, the supernets' search step, the benchmark protocol;
#   2. the tiny preset trained for a few steps in fp32, bf16 and fp16 (losses printed);
#   3. a tiny ST-NAS search and a 3-candidate cell search on the GPU;
#   4. benchmarks/table1.py --device cuda at 320x576 (the paper's rows, FPS ratios beside the paper's V100 ratios);
#   5. ONNX export of a GPU-trained model with the parity check.
# With --device cpu (or without CUDA) it is the same script: the device subset and the tiny runs go on the CPU, and
# the GPU-only steps (fp16 training, the full-size table) are skipped with a message. Exit status: 0 when every step
# passed, else the number of failed steps.
set -u
DEVICE=cuda
OUT=${OUT:-runs/gpu_check}
PY=${PYTHON:-}
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --python) PY=$2; shift 2 ;;
        *) echo "unknown argument: $1 (usage: $0 [--device cuda|cpu] [--out DIR] [--python PY])" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
say() { echo "$*" | tee -a "$LOG"; }
FAILED=0
step() {  # step NAME COMMAND...: run, log, time, count failures
    local name=$1; shift
    say ""
    say "=== $name"
    say "\$ $*"
    local t0=$SECONDS
    "$@" >> "$LOG" 2>&1
    local rc=$?
    if [ $rc -eq 0 ]; then say "--- ok ($((SECONDS - t0)) s)"; else say "--- FAILED rc=$rc ($((SECONDS - t0)) s)"; FAILED=$((FAILED + 1)); fi
}
skip() { say ""; say "=== $1"; say "--- skipped: $2"; }

VIDNAS=("$PY" -m vidnas.cli.main)
say "vidnas GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), device $DEVICE, log $LOG"
"$PY" - >> "$LOG" 2>&1 <<'PYEOF'
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA available {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, bf16 {torch.cuda.is_bf16_supported()}")
PYEOF
tail -n +2 "$LOG"
GPU=0
if [ "${DEVICE%%:*}" = "cuda" ]; then
    if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        GPU=1
    else
        say "CUDA is not available here: the GPU steps are skipped and the rest runs on the CPU"
        DEVICE=cpu
    fi
fi

step "1. device-marked tests on $DEVICE" "$PY" -m pytest -q -p no:cacheprovider -m device --device "$DEVICE" tests/test_device.py

TINY=(--config tiny --set train.epochs=1 --set train.max_steps_per_epoch=5 --set data.synthetic_videos=3
      --set data.synthetic_frames=8 --set train.batch_size=2 --threads 1 -q --device "$DEVICE")
for amp in none bf16 fp16; do
    if [ "$amp" = fp16 ] && [ $GPU -eq 0 ]; then skip "2. train tiny, amp $amp" "fp16 training is a GPU mode"; continue; fi
    step "2. train tiny, amp $amp" "${VIDNAS[@]}" train "${TINY[@]}" --set train.log_every=1 --amp "$amp" --out "$OUT/train_$amp" --overwrite
    "$PY" - "$OUT/train_$amp/metrics.jsonl" >> "$LOG" 2>&1 <<'PYEOF'
import json, sys
try:
    rows = [json.loads(line) for line in open(sys.argv[1])]
except OSError:
    rows = []
print("losses:", [round(r["loss"], 4) for r in rows if r.get("kind") == "train"] or "none (the run failed)")
PYEOF
    tail -n 1 "$LOG"
done

step "3a. tiny ST-NAS search on $DEVICE" "${VIDNAS[@]}" search stnas "${TINY[@]}" --amp bf16 --out "$OUT/stnas" --overwrite
step "3b. 3-candidate cell search on $DEVICE (bf16)" "${VIDNAS[@]}" search cells --threads 1 -q --device "$DEVICE" --amp bf16 \
    --set data.height=64 --set data.width=96 --set data.synthetic_videos=3 --set data.synthetic_frames=8 \
    --set model.encoder=mobilenetv2_test --set train.batch_size=4 --set cells.num_layers=2 --set cells.cell_epochs=2 \
    --set cells.cell_batch_size=8 --candidates 3 --workers 0 --top-k 1 --static-epochs 1 --max-steps 3 \
    --final-cell-epochs 1 --final-epochs 1 --out "$OUT/cells" --overwrite

if [ $GPU -eq 1 ]; then
    step "4. table1.py at 320x576 on $DEVICE" "$PY" benchmarks/table1.py --device "$DEVICE" --frames 50 --warmup 5 \
        --json "$OUT/table1.json"
else
    step "4. table1.py --quick on the CPU (the 320x576 table is a GPU step)" "$PY" benchmarks/table1.py --quick
fi

step "5. export a model trained on $DEVICE, parity with onnxruntime" "${VIDNAS[@]}" export \
    "$OUT/train_none/checkpoints/last.pt" --out "$OUT/onnx" --overwrite --device "$DEVICE"

say ""
say "gpu_check: $FAILED failed step(s); log $LOG"
exit $FAILED
