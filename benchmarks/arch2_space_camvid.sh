#!/usr/bin/env bash
# ST-NAS over the space that contains the hand-made arch2 (`decoder: arch2_space`), on CamVid from the ImageNet-
# pretrained EfficientNet-Lite0, on a protocol that cannot flatter the search (issue 26):
#   - every decision (each search's depth rule, every training's best epoch) is made on the selection video SELECT,
#     held out of the training data; the val split is read once per training, at its end;
#   - beside the searched model, every seed trains per-frame arch2 (the hand-made reference, the space's arch2
#     point), the space's cheapest point and, on the first seed, RANDOM_K random architectures latency-matched to
#     the searched model (within 10% of its table latency), all with the same recipe (CONFIG: the 15-minute one);
#   - the searched models, arch2 and the cheapest points of every seed, and the first seed's random architectures,
#     are timed in ONE interleaved run under both protocols (window and incremental), 1 thread;
#   - benchmarks/arch2_space_table.py computes every quoted figure from those JSONs into one summary.json.
#
#   benchmarks/arch2_space_camvid.sh [OUT]         # full size: about 17 trainings of ~15 minutes and 3 searches
#   SMOKE=1 benchmarks/arch2_space_camvid.sh OUT   # every stage at toy size (tests run this)
# Environment: VIDNAS (the command, default `vidnas`), PYTHON (default `python`), CONFIG, WINDOW (the clip length the
# temporal candidates read, default 3), LAMBDA (default 0.01),
# SEEDS (default "0 1 2"), RANDOM_K (default 8), SELECT (the selection video, default 0001TP), JOBS (stages of a sweep
# at once, default 2), FRAMES (timed frames per model, default 100), EXTRA (more arguments for every command, e.g.
# EXTRA="--set data.root=/data/camvid"). Every stage resumes: run the same command again after an interruption.
#
# What it produces, all under OUT (default runs/arch2_space_camvid):
#   latency.json      the block and decoder-slot latency table of this machine (1 thread), measured once
#   seed<S>/          one sweep per seed (sweep.json, sweep.md, pareto.png, the run directories)
#   bench.json/.md    the interleaved benchmark of every seed's models
#   summary.json/.md  the 3-seed means, the controls and the verdict on issue 26's goal
set -euo pipefail

OUT=${1:-runs/arch2_space_camvid}
read -r -a VIDNAS_CMD <<< "${VIDNAS:-vidnas}"
read -r -a PY <<< "${PYTHON:-python}"
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
CONFIG=${CONFIG:-configs/camvid_arch2_fast_cpu.yaml}
LAMBDA=${LAMBDA:-0.01}
SEEDS=${SEEDS:-0 1 2}
RANDOM_K=${RANDOM_K:-8}
SELECT=${SELECT:-0001TP}
JOBS=${JOBS:-2}
FRAMES=${FRAMES:-100}
WARMUP=5
CEILING=2048  # the roofline matmul of the benchmark
COMMON=(--config "$CONFIG" --threads 1 --quiet)
WINDOW=${WINDOW:-3}  # frames the temporal candidates read (the recipe's per-frame window 1 would give them none)
SETS=(--set model.decoder=arch2_space --set data.window="$WINDOW" --set "data.selection_videos=[$SELECT]"
      --set stnas.encoder_epochs=2
      --set stnas.decoder_epochs=3 --set stnas.warmup_epochs=1 "${EXTRA_ARGS[@]}")
LATENCY_ARGS=(--repeats 5 --iters 10)
if [[ "${SMOKE:-0}" == "1" ]]; then
  # toy size: 64x96, one epoch of 2 steps everywhere, 2 random architectures, 2 timed frames
  SETS+=(--set data.height=64 --set data.width=96 --set train.epochs=1 --set train.max_steps_per_epoch=2
         --set train.batch_size=2 --set stnas.encoder_epochs=1 --set stnas.decoder_epochs=1
         --set stnas.warmup_epochs=0 --set stnas.depth_val_batches=1 --set stnas.bn_calib_batches=1)
  LATENCY_ARGS=(--repeats 1 --iters 1 --warmup 0)
  RANDOM_K=2
  FRAMES=2
  WARMUP=0
  CEILING=0
fi
mkdir -p "$OUT"
# bench.md and summary.md are written beside their JSONs only: a file of that name without its JSON is not ours
for f in bench summary; do
  if [[ -e "$OUT/$f.md" && ! -e "$OUT/$f.json" ]]; then
    echo "error: $OUT/$f.md exists without $OUT/$f.json: not written by this script, not overwritten" >&2; exit 2
  fi
done

# 1. the latency table of this machine: encoder blocks, stage entries and every candidate of every decoder slot
if [[ ! -f "$OUT/latency.json" ]]; then
  "${VIDNAS_CMD[@]}" latency "${COMMON[@]}" "${SETS[@]}" "${LATENCY_ARGS[@]}" --decoder --out "$OUT/latency.json"
fi

# 2. one sweep per seed: the search, per-frame arch2, the cheapest point (and, first seed, the matched randoms)
FIRST=${SEEDS%% *}
for SEED in $SEEDS; do
  K=0
  [[ "$SEED" == "$FIRST" ]] && K=$RANDOM_K
  resume=()
  [[ -d "$OUT/seed$SEED" ]] && resume=(--resume)
  "${VIDNAS_CMD[@]}" search stnas "${COMMON[@]}" "${SETS[@]}" --set train.seed="$SEED" \
    --latency-table "$OUT/latency.json" --decoder-latency --lambdas "$LAMBDA" --references arch2 \
    --random "$K" --random-mode matched --random-seed 0 --bench-frames "$FRAMES" --jobs "$JOBS" \
    --out "$OUT/seed$SEED" "${resume[@]}"
done

# 3. every seed's models (and the first seed's random architectures) in one interleaved benchmark, both protocols
CKPTS=()
for SEED in $SEEDS; do
  for DIR in "$OUT/seed$SEED"/lam_*; do CKPTS+=(--checkpoint "searched_s$SEED=$DIR/train/checkpoints/best.pt"); done
  CKPTS+=(--checkpoint "arch2_s$SEED=$OUT/seed$SEED/ref_arch2/train/checkpoints/best.pt")
  CKPTS+=(--checkpoint "cheapest_s$SEED=$OUT/seed$SEED/cheapest/train/checkpoints/best.pt")
done
for DIR in "$OUT/seed$FIRST"/random_*; do
  NAME=$(basename "$DIR")
  [[ -d "$DIR" ]] && CKPTS+=(--checkpoint "${NAME/_/}=$DIR/train/checkpoints/best.pt")  # random_0 -> random0
done
"${VIDNAS_CMD[@]}" bench "${CKPTS[@]}" --ref "arch2_s$FIRST" --frames "$FRAMES" --warmup "$WARMUP" --ceiling "$CEILING" --threads 1 --quiet \
  --json "$OUT/bench.json" --overwrite > "$OUT/bench.md"

# 4. every quoted figure, computed from the sweeps' and the benchmark's JSONs
"${PY[@]}" "$(dirname "$0")/arch2_space_table.py" "$OUT"
