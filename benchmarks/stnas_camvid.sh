#!/usr/bin/env bash
# ST-NAS on CamVid from the ImageNet-pretrained EfficientNet-Lite0 against random architectures of the same space
# (docs/RESULTS.md, evidence b). NOT RUN on the development machine: the full run needs roughly 10-14 hours of one
# CPU core (each model trains about 25 min at 176x240; 2 searched + 8 random + 3 baselines + 2 extra seeds).
#
#   benchmarks/stnas_camvid.sh [OUT]          # full size (hours)
#   SMOKE=1 benchmarks/stnas_camvid.sh OUT    # every stage at toy size (a minute; tests run this)
# Environment: VIDNAS (the command, default `vidnas`), CONFIG, LAMBDAS, RANDOM_K, FRAMES, EXTRA (more arguments for
# every command, e.g. EXTRA="--set data.root=/data/camvid").
#
# What it produces, all under OUT (default runs/stnas_camvid):
#   latency.json          the block + decoder-part latency table of this machine (1 thread), measured once
#   seed0/                a sweep: the SP-TCN baseline, the searched models at LAMBDAS, RANDOM random architectures
#                         (uniform depths and decoder ops, random seed 0), all trained identically (train.seed 0) and
#                         benchmarked in ONE interleaved run; seed0/sweep.md states how many random architectures
#                         each searched model dominates on FPS and mIoU, seed0/pareto.png draws them (random: grey)
#   seed1/, seed2/        the first lambda again with train.seed 1 and 2 (search and training), each with its own
#                         baseline of that seed
#   bench.md              every searched model and baseline of the three seeds in one more interleaved benchmark
# Goal stated by the issue: the searched models dominate at least 80% of the random architectures.
set -euo pipefail

OUT=${1:-runs/stnas_camvid}
read -r -a VIDNAS_CMD <<< "${VIDNAS:-vidnas}"
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
CONFIG=${CONFIG:-configs/camvid_sptcn_cpu.yaml}
LAMBDAS=${LAMBDAS:-0.003,0.03}
RANDOM_K=${RANDOM_K:-8}
FRAMES=${FRAMES:-100}
COMMON=(--config "$CONFIG" --threads 1 --quiet)
SETS=(--set stnas.encoder_epochs=2 --set stnas.decoder_epochs=3 --set stnas.warmup_epochs=1 "${EXTRA_ARGS[@]}")
LATENCY_ARGS=(--repeats 5 --iters 10)
if [[ "${SMOKE:-0}" == "1" ]]; then
  # toy size: 64x96, one epoch of 2 steps everywhere, 2 random architectures, 3 timed frames
  SETS+=(--set data.height=64 --set data.width=96 --set train.epochs=1 --set train.max_steps_per_epoch=2
         --set train.batch_size=2 --set stnas.encoder_epochs=1 --set stnas.decoder_epochs=1
         --set stnas.warmup_epochs=0 --set stnas.depth_val_batches=1 --set stnas.bn_calib_batches=1)
  LATENCY_ARGS=(--repeats 1 --iters 1 --warmup 0)
  RANDOM_K=2
  FRAMES=3
fi
FIRST=${LAMBDAS%%,*}
mkdir -p "$OUT"

# 1. latency table of this machine: blocks, stage entries, stem, outputs and every decoder part, 1 thread
"${VIDNAS_CMD[@]}" latency "${COMMON[@]}" "${SETS[@]}" "${LATENCY_ARGS[@]}" --decoder --out "$OUT/latency.json"

# 2. seed 0: baseline, searched models at every lambda, random architectures, one interleaved benchmark
"${VIDNAS_CMD[@]}" search stnas "${COMMON[@]}" "${SETS[@]}" --latency-table "$OUT/latency.json" --lambdas "$LAMBDAS" \
  --random "$RANDOM_K" --random-mode uniform --random-seed 0 --bench-frames "$FRAMES" --out "$OUT/seed0"

# 3. seeds 1 and 2 of the first lambda (search and training seeded alike; their own baselines)
for SEED in 1 2; do
  "${VIDNAS_CMD[@]}" search stnas "${COMMON[@]}" "${SETS[@]}" --set train.seed=$SEED --latency-table "$OUT/latency.json" \
    --lambdas "$FIRST" --bench-frames "$FRAMES" --out "$OUT/seed$SEED"
done

# 4. every baseline and searched model of the three seeds in one interleaved benchmark
CKPTS=()
for SEED in 0 1 2; do
  CKPTS+=(--checkpoint "base_s$SEED=$OUT/seed$SEED/baseline/train/checkpoints/best.pt")
  for DIR in "$OUT/seed$SEED"/lam_*; do
    CKPTS+=(--checkpoint "$(basename "$DIR")_s$SEED=$DIR/train/checkpoints/best.pt")
  done
done
"${VIDNAS_CMD[@]}" bench "${CKPTS[@]}" --ref base_s0 --frames "$FRAMES" --threads 1 --json "$OUT/bench.json" > "$OUT/bench.md"
cat "$OUT/seed0/sweep.md" "$OUT/bench.md"
