#!/usr/bin/env bash
# Which change of configs/gtsa_budget.yaml (against the tiny preset, which does not move from its
# init) makes GTSA's features move: `make results-vit-ablation`. Each arm is the budget config with
# ONE setting put back to the tiny preset's, trained for STEPS steps of the budget's own schedule
# (train.max_steps: the lr and EMA schedules are those of the full 600-step run), then all arms are
# evaluated in one run against the unchanged budget at the same step, with paired intervals.
# The budget arm reuses the step-STEPS checkpoint of `make results-vit`'s GTSA runs where they exist
# (same config and seed, so the same weights as a run stopped there), else trains its own.
# Environment: OUT (default runs/ablation-vit), RESULTS (default runs/results-vit), SEEDS (budget
# arm's seeds, default "0 1"), STEPS (default 300), THREADS (default 2), TINY=1 for a seconds-long
# version of every step (what the test suite runs).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/results_common.sh
source scripts/results_common.sh
OUT=${OUT:-runs/ablation-vit}
RESULTS=${RESULTS:-runs/results-vit}
SEEDS=${SEEDS:-0 1}
STEPS=${STEPS:-300}
# arm -> the one setting put back to configs/gtsa_tiny.yaml's (peak lr and batch as the tiny preset
# has them: lr 1.6e-4 = base_lr 1.28e-3 per 256 at batch 32; batch 8 at the budget's peak lr 2e-3)
declare -A arms=(
  [budget]=""
  [photos]="data.shards=$PHOTOS"
  [views64]="data.global_size=64 data.local_size=32 method.options.img_size=64 method.options.aligned_cells_global=6 method.options.aligned_cells_local=3"
  [lr_tiny]="optim.base_lr=1.28e-3"
  [batch8]="data.batch_size=8 data.samples_per_epoch=64 optim.base_lr=6.4e-2"
)
order=(budget photos views64 lr_tiny batch8)
eval_extra=(--probe-seeds 1 --threads "$THREADS" ${tiny_eval[@]+"${tiny_eval[@]}"})
if [ "${TINY:-0}" = 1 ]; then
  train_extra+=("${tiny_gtsa[@]}")
  arms[views64]="data.global_size=48 data.local_size=24 method.options.img_size=48 method.options.aligned_cells_global=6 method.options.aligned_cells_local=3"
  arms[batch8]="data.batch_size=2 data.samples_per_epoch=4 optim.base_lr=6.4e-2"
fi
mkdir -p "$OUT"
$PY -m shards photos "$PHOTOS"
$PY -m shards copy-paste "$EVAL_DATA" "${copy_paste[@]}"

ckpt_name=$(printf 'ckpt-%08d.pt' "$STEPS")
rows=()
logs=()
for arm in "${order[@]}"; do
  seeds=0
  [ "$arm" = budget ] && seeds=$SEEDS
  list=""
  for s in $seeds; do
    ckpt="$OUT/${arm}_s$s/checkpoints/$ckpt_name"
    if [ "$arm" = budget ] && [ -f "$RESULTS/gtsa_s$s/checkpoints/$ckpt_name" ]; then
      ckpt="$RESULTS/gtsa_s$s/checkpoints/$ckpt_name"
      echo "ablation: budget seed $s is $ckpt"
    elif [ -f "$ckpt" ]; then
      echo "ablation: $ckpt is finished"
    else
      read -ra options <<< "${arms[$arm]}"
      train_run ablation configs/gtsa_budget.yaml "$OUT/${arm}_s$s" "$s" data.shards="$EVAL_DATA/train-*.tar" \
        train.max_steps="$STEPS" checkpoint.every_steps="$STEPS" "${train_extra[@]}" ${options[@]+"${options[@]}"}
    fi
    list="$list,$ckpt"
    logs+=("$arm=$(dirname "$(dirname "$ckpt")")/log.jsonl")
  done
  rows+=(--checkpoint "$arm=${list#,}")
done

rm -f "$OUT/eval.jsonl"
$PY -m evaluation --data "$EVAL_DATA" --checkpoint "random=random:configs/gtsa_budget.yaml" "${rows[@]}" \
  --baseline budget "${eval_extra[@]}" --out "$OUT/eval.jsonl" | tee "$OUT/table.txt"
# GTSA's rotation accuracy over the last 50 training steps up to STEPS (chance: 25 %)
$PY - "$STEPS" "${logs[@]}" <<'EOF_PY' | tee -a "$OUT/table.txt"
import json, sys
steps = int(sys.argv[1])
for spec in sys.argv[2:]:
    arm, path = spec.split("=", 1)
    rows = [json.loads(line) for line in open(path)]
    acc = [r["rot_acc"] for r in rows if "rot_acc" in r and steps - 50 < r["step"] <= steps]
    print(f"rotation accuracy, {arm} ({path}), steps {steps - 50}-{steps}: {100 * sum(acc) / max(len(acc), 1):.1f} %")
EOF_PY
echo "ablation: table in $OUT/table.txt, rows in $OUT/eval.jsonl"
