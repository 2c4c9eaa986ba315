#!/usr/bin/env bash
# ST-NAS on CamVid from the ImageNet-pretrained EfficientNet-Lite0 against random architectures of the same space
# (docs/RESULTS.md §13, issue #12 evidence b). The space: the user preset's multi-scale decoder (mstcn: temporal
# trunk at stride 32, paths at strides 8 and 4; 14 op slots) on the encoder's depths, with the decoder latency term
# on (--decoder-latency), so one lambda prices encoder and decoder milliseconds. Every model trains EPOCHS epochs of
# the preset's recipe; the per-frame arch2 of the library trains beside them (--references arch2).
#
#   benchmarks/stnas_camvid.sh [OUT]          # full size: about 4 hours of one CPU core at EPOCHS=8
#   SMOKE=1 benchmarks/stnas_camvid.sh OUT    # every stage at toy size (a few minutes; tests run this)
# Environment: VIDNAS (the command, default `vidnas`), CONFIG, LAMBDAS, RANDOM_K, EPOCHS, FRAMES, SEEDS (the training
# seeds of step 3, default "1 2"), JOBS (stages of a sweep at once, one thread each, default 2: `vidnas search stnas
# --jobs`), EXTRA (more arguments for every command, e.g. EXTRA="--set data.root=/data/camvid").
#
# What it produces, all under OUT (default runs/stnas_camvid):
#   latency.json          the block + decoder-part latency table of this machine (1 thread), measured once
#   seed0/                a sweep: the baseline (the preset's mstcn model), the searched models at LAMBDAS, RANDOM_K
#                         random architectures (uniform depths and decoder ops, random seed 0) and the per-frame
#                         arch2, all trained identically (train.seed 0) and benchmarked in ONE interleaved run;
#                         seed0/sweep.md states how many random architectures each searched model dominates on FPS
#                         and mIoU, seed0/pareto.png draws them (random: grey)
#   seed1/, seed2/        the first lambda again with train.seed 1 and 2 (search and training), each with its own
#                         baseline and per-frame arch2 of that seed
#   bench.md              every searched model, baseline and arch2 of the three seeds in one more interleaved benchmark
# The stages of a sweep are resumable (each writes done.json) and run JOBS at a time (the runs of RESULTS §13 were made
# by running stages of the same sweeps side by side on the two cores by hand, before --jobs existed).
# Goal stated by the issue: the searched models dominate at least 80% of the random architectures.
set -euo pipefail

OUT=${1:-runs/stnas_camvid}
read -r -a VIDNAS_CMD <<< "${VIDNAS:-vidnas}"
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
CONFIG=${CONFIG:-configs/camvid_effnet_cpu.yaml}
LAMBDAS=${LAMBDAS:-0.001,0.01}
EPOCHS=${EPOCHS:-8}
RANDOM_K=${RANDOM_K:-8}
FRAMES=${FRAMES:-100}
JOBS=${JOBS:-2}
BENCH_WARMUP=10
CEILING=2048  # the roofline matmul of step 4's benchmark
COMMON=(--config "$CONFIG" --threads 1 --quiet)
SETS=(--set train.epochs="$EPOCHS" --set stnas.encoder_epochs=2 --set stnas.decoder_epochs=3 --set stnas.warmup_epochs=1
      "${EXTRA_ARGS[@]}")
LATENCY_ARGS=(--repeats 5 --iters 10)
if [[ "${SMOKE:-0}" == "1" ]]; then
  # toy size: 64x96, one epoch of 2 steps everywhere, 2 random architectures, 3 timed frames
  SETS+=(--set data.height=64 --set data.width=96 --set train.epochs=1 --set train.max_steps_per_epoch=2
         --set train.batch_size=2 --set stnas.encoder_epochs=1 --set stnas.decoder_epochs=1
         --set stnas.warmup_epochs=0 --set stnas.depth_val_batches=1 --set stnas.bn_calib_batches=1)
  LATENCY_ARGS=(--repeats 1 --iters 1 --warmup 0)
  RANDOM_K=2
  FRAMES=3
  BENCH_WARMUP=0
  CEILING=0
fi
SEARCH=(--decoder-latency --references arch2 --bench-frames "$FRAMES" --jobs "$JOBS")
FIRST=${LAMBDAS%%,*}
mkdir -p "$OUT"

# 1. latency table of this machine: blocks, stage entries, stem, outputs and every decoder part, 1 thread
"${VIDNAS_CMD[@]}" latency "${COMMON[@]}" "${SETS[@]}" "${LATENCY_ARGS[@]}" --decoder --out "$OUT/latency.json"

# 2. seed 0: baseline, searched models at every lambda, random architectures, one interleaved benchmark
"${VIDNAS_CMD[@]}" search stnas "${COMMON[@]}" "${SETS[@]}" --latency-table "$OUT/latency.json" --lambdas "$LAMBDAS" \
  "${SEARCH[@]}" --random "$RANDOM_K" --random-mode uniform --random-seed 0 --out "$OUT/seed0"

# 3. seeds 1 and 2 of the first lambda (search and training seeded alike; their own baselines)
SEEDS=${SEEDS:-1 2}
for SEED in $SEEDS; do
  "${VIDNAS_CMD[@]}" search stnas "${COMMON[@]}" "${SETS[@]}" --set train.seed=$SEED --latency-table "$OUT/latency.json" \
    --lambdas "$FIRST" "${SEARCH[@]}" --out "$OUT/seed$SEED"
done

# 4. every baseline and searched model of the three seeds in one interleaved benchmark
CKPTS=()
for SEED in 0 $SEEDS; do
  CKPTS+=(--checkpoint "base_s$SEED=$OUT/seed$SEED/baseline/train/checkpoints/best.pt")
  CKPTS+=(--checkpoint "arch2_s$SEED=$OUT/seed$SEED/ref_arch2/train/checkpoints/best.pt")
  for DIR in "$OUT/seed$SEED"/lam_*; do
    CKPTS+=(--checkpoint "$(basename "$DIR")_s$SEED=$DIR/train/checkpoints/best.pt")
  done
done
"${VIDNAS_CMD[@]}" bench "${CKPTS[@]}" --ref base_s0 --frames "$FRAMES" --warmup "$BENCH_WARMUP" --ceiling "$CEILING" --threads 1 --json "$OUT/bench.json" > "$OUT/bench.md"
cat "$OUT/seed0/sweep.md" "$OUT/bench.md"
