#!/usr/bin/env bash
# Issue 16's CamVid evidence: temporal multi-scale models against the library's per-frame models, trained with the
# same recipe from the ImageNet-pretrained EfficientNet-Lite0 at 176x240, 2 seeds each, evaluated under both
# validation protocols, an ST-NAS search over the multi-scale family, and one interleaved benchmark.
# docs/RESULTS.md §17 has a run. About 20 min per per-frame model and 25-45 min per temporal model on one core.
#
#   benchmarks/temporal_camvid.sh [OUT]          # full size (hours; every finished stage is skipped on a rerun)
#   SMOKE=1 benchmarks/temporal_camvid.sh OUT    # every stage at toy size (tests run this)
# Environment: VIDNAS (the command, default `vidnas`), PYTHON (for the table, default `python`), SEEDS (default
# "0 1"), WINDOWS (default "3 5"), FRAME_CFG (the per-frame arch2 preset, default configs/camvid_arch2_cpu.yaml; the
# 15-minute recipe: configs/camvid_arch2_fast_cpu.yaml), A2_WINDOWS (windows of the arch2-fusion temporal model,
# configs/camvid_mstcn_arch2_cpu.yaml, default "3"; "" skips it), A2RES ("1", the default: the residual arch2 fusion
# fine-tuned from the first seed's per-frame arch2, and that arch2 fine-tuned the same way; "0" skips it), LAMBDA,
# FRAMES (benchmark frames), EXTRA (more arguments for every training, e.g. EXTRA="--set data.root=/data/camvid").
#
# Under OUT (default runs/temporal_camvid):
#   arch2_s<seed>, head_s<seed>   per-frame models (configs/camvid_arch2_cpu.yaml; head: the stride-32 head)
#   mstcn<w>_s<seed>              the multi-scale temporal model at window w (configs/camvid_effnet_cpu.yaml)
#   a2fusion<w>_s<seed>           the arch2-fusion temporal model at window w (configs/camvid_mstcn_arch2_cpu.yaml)
#   a2res_s<seed>                 configs/camvid_mstcn_arch2res_cpu.yaml, --init from arch2_s<first seed>
#   arch2ft_s<seed>               its per-frame control: the same recipe and init at window 1 with decoder arch2
#   stnas/                        ST-NAS over the multi-scale family (window 3, seed 0), stnas_train/ its model
#   */eval/best/eval.json         `vidnas eval`: dense clips, dense stream, matched stream, per class, VC8, flicker
#   bench.json, bench.md          one interleaved `vidnas bench` of seed 0 of every model (both decode protocols)
#   table.md                      benchmarks/temporal_table.py over all of it
set -euo pipefail

OUT=${1:-runs/temporal_camvid}
read -r -a VIDNAS_CMD <<< "${VIDNAS:-vidnas}"
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
SEEDS=${SEEDS:-0 1}
WINDOWS=${WINDOWS:-3 5}
LAMBDA=${LAMBDA:-0.001}
FRAMES=${FRAMES:-100}
FRAME_CFG=${FRAME_CFG:-configs/camvid_arch2_cpu.yaml}
TEMPORAL_CFG=configs/camvid_effnet_cpu.yaml
A2_CFG=configs/camvid_mstcn_arch2_cpu.yaml
A2_WINDOWS=${A2_WINDOWS-3}
A2RES_CFG=configs/camvid_mstcn_arch2res_cpu.yaml
A2RES=${A2RES:-1}
SETS=("${EXTRA_ARGS[@]}")
BENCH_WARMUP=5
CEILING=2048  # the roofline matmul of the benchmark
SEARCH=(--set stnas.encoder_epochs=2 --set stnas.decoder_epochs=3 --set stnas.warmup_epochs=1)
if [[ "${SMOKE:-0}" == "1" ]]; then
  SETS+=(--set data.height=64 --set data.width=96 --set train.epochs=1 --set train.max_steps_per_epoch=2
         --set train.batch_size=2)
  SEARCH=(--set stnas.encoder_epochs=1 --set stnas.decoder_epochs=1 --set stnas.warmup_epochs=0
          --set stnas.depth_val_batches=1 --set stnas.bn_calib_batches=1)
  FRAMES=3
  BENCH_WARMUP=0
  CEILING=0
fi
mkdir -p "$OUT"

train() {  # NAME CONFIG ARGS...: train (resuming an interrupted run), then evaluate; skipped when evaluated
  local name=$1 cfg=$2; shift 2
  [[ -f "$OUT/$name/eval/best/eval.json" ]] && return 0
  local resume=()
  [[ -f "$OUT/$name/checkpoints/last.pt" ]] && resume=(--resume)
  "${VIDNAS_CMD[@]}" train --config "$cfg" --threads 1 --quiet "${SETS[@]}" "$@" --out "$OUT/$name" "${resume[@]}"
  "${VIDNAS_CMD[@]}" eval "$OUT/$name/checkpoints/best.pt" --threads 1 --quiet
}

RUNS=()
for SEED in $SEEDS; do
  train "arch2_s$SEED" "$FRAME_CFG" --set train.seed="$SEED"
  train "head_s$SEED" "$FRAME_CFG" --set model.decoder=head --set train.seed="$SEED"
  RUNS+=("arch2_s$SEED=$OUT/arch2_s$SEED" "head_s$SEED=$OUT/head_s$SEED")
  for W in $WINDOWS; do
    train "mstcn${W}_s$SEED" "$TEMPORAL_CFG" --set data.window="$W" --set train.seed="$SEED"
    RUNS+=("mstcn${W}_s$SEED=$OUT/mstcn${W}_s$SEED")
  done
  for W in $A2_WINDOWS; do
    train "a2fusion${W}_s$SEED" "$A2_CFG" --set data.window="$W" --set train.seed="$SEED"
    RUNS+=("a2fusion${W}_s$SEED=$OUT/a2fusion${W}_s$SEED")
  done
done

# the residual arch2 fusion, fine-tuned from the first seed's per-frame arch2, beside that arch2 fine-tuned with the
# same recipe (its config at window 1 with decoder arch2), so the extra epochs alone are not mistaken for time's gain
FIRST=${SEEDS%% *}
if [[ "$A2RES" == "1" ]]; then
  for SEED in $SEEDS; do
    INIT=(--init "$OUT/arch2_s$FIRST/checkpoints/best.pt" --set train.seed="$SEED")
    train "a2res_s$SEED" "$A2RES_CFG" "${INIT[@]}"
    train "arch2ft_s$SEED" "$A2RES_CFG" "${INIT[@]}" --set model.decoder=arch2 --set model.fusion=fpn \
      --set data.window=1
    RUNS+=("a2res_s$SEED=$OUT/a2res_s$SEED" "arch2ft_s$SEED=$OUT/arch2ft_s$SEED")
  done
fi

# ST-NAS over the multi-scale family (window 3, seed 0): encoder depths and trunk + per-scale ops, then its model
if [[ ! -f "$OUT/stnas/arch.json" ]]; then
  resume=()
  [[ -d "$OUT/stnas/checkpoints" ]] && resume=(--resume)
  "${VIDNAS_CMD[@]}" search stnas --config "$TEMPORAL_CFG" --threads 1 --quiet "${SETS[@]}" "${SEARCH[@]}" \
    --lambda "$LAMBDA" --out "$OUT/stnas" "${resume[@]}"
fi
train stnas_train "$TEMPORAL_CFG" --arch "$OUT/stnas/arch.json"
RUNS+=("stnas=$OUT/stnas_train")

# one interleaved benchmark of seed 0 of every model (both decode protocols), 1 thread
CKPTS=(--checkpoint "arch2=$OUT/arch2_s$FIRST/checkpoints/best.pt" --checkpoint "head=$OUT/head_s$FIRST/checkpoints/best.pt")
for W in $WINDOWS; do CKPTS+=(--checkpoint "mstcn$W=$OUT/mstcn${W}_s$FIRST/checkpoints/best.pt"); done
for W in $A2_WINDOWS; do CKPTS+=(--checkpoint "a2fusion$W=$OUT/a2fusion${W}_s$FIRST/checkpoints/best.pt"); done
[[ "$A2RES" == "1" ]] && CKPTS+=(--checkpoint "a2res=$OUT/a2res_s$FIRST/checkpoints/best.pt")
CKPTS+=(--checkpoint "stnas=$OUT/stnas_train/checkpoints/best.pt")
"${VIDNAS_CMD[@]}" bench "${CKPTS[@]}" --frames "$FRAMES" --warmup "$BENCH_WARMUP" --ceiling "$CEILING" --threads 1 --ref arch2 --quiet \
  --json "$OUT/bench.json" > "$OUT/bench.md"

read -r -a PY <<< "${PYTHON:-python}"  # a command of several words, like VIDNAS
"${PY[@]}" "$(dirname "$0")/temporal_table.py" --bench "$OUT/bench.json" "${RUNS[@]}" | tee "$OUT/table.md"
