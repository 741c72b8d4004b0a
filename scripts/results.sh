#!/usr/bin/env bash
# A learning table end to end: `make results-resnet` (bash scripts/results.sh resnet: CLoVE vs BYOL)
# and `make results-vit` (bash scripts/results.sh vit: GTSA vs DINO). For the family's global-only
# baseline and its dense method at the CPU budget (configs/<method>_budget.yaml), each seed in SEEDS:
# train (a finished run is not trained again; --resume auto picks a stopped one up at its last
# checkpoint); then one evaluation of random init (3 seeds), the baseline and the dense method, with
# paired intervals against random and against the baseline; the metric at CURVE_STEPS of the first
# seed's runs; and the picture of both against the training step.
# Environment: OUT (default runs/results-FAMILY), SEEDS (default "0 1"), THREADS (default 2),
# TINY=1 for a seconds-long version of every step (what the test suite runs).
set -euo pipefail
cd "$(dirname "$0")/.."
family=${1:-}
# shellcheck source=scripts/results_common.sh
source scripts/results_common.sh
OUT=${OUT:-runs/results-$family}
SEEDS=${SEEDS:-0 1}
CURVE_STEPS=${CURVE_STEPS:-}
declare -A tiny_options
case "$family" in
  resnet)  # pretrained on the pretraining pool's photos
    baseline=byol method=clove names=(BYOL CLoVE) random_spec=random:resnet18 pretrain=$PHOTOS
    fields=(emb_rank) metrics=(corr/layer3 corr/layer4 fg/layer3 fg/layer4)
    CURVE_STEPS=${CURVE_STEPS:-200 400 600 800}
    tiny_options=([clove]="method.options.proj_hidden=32 method.options.proj_dim=16"
      [byol]="method.options.proj_hidden=32 method.options.proj_dim=16 method.options.pred_hidden=32") ;;
  vit)  # pretrained on scenes of objects pasted over the pretraining pool's photos (the copy-paste train split)
    baseline=dino method=gtsa names=(DINO GTSA) random_spec=random:configs/gtsa_budget.yaml pretrain="$EVAL_DATA/train-*.tar"
    fields=(rot_acc emb_rank) metrics=(corr/block3 corr/block4 fg/block3 fg/block4)
    CURVE_STEPS=${CURVE_STEPS:-200 400 600}
    tiny_options=([gtsa]="${tiny_gtsa[*]}"
      [dino]="method.options.head_hidden_dim=32 method.options.head_bottleneck_dim=16 method.options.out_dim=64") ;;
  *) echo "usage: bash scripts/results.sh resnet|vit (the README's learning tables; see the script's head)" >&2; exit 2 ;;
esac
eval_extra=(--threads "$THREADS" ${tiny_eval[@]+"${tiny_eval[@]}"})
curve_extra=(--probe-seeds 1 ${tiny_eval[@]+"${tiny_eval[@]}"})
if [ "${TINY:-0}" = 1 ]; then CURVE_STEPS="2 4"; fi
mkdir -p "$OUT"
[ "$family" = resnet ] && $PY -m shards photos "$PHOTOS"
$PY -m shards copy-paste "$EVAL_DATA" "${copy_paste[@]}"

runs() { local s list=""; for s in $SEEDS; do list="$list,$OUT/${1}_s$s"; done; echo "${list#,}"; }
for m in $method $baseline; do
  for s in $SEEDS; do
    run="$OUT/${m}_s$s"
    if [ -f "$run/exported/backbone.json" ]; then echo "results: $run is finished"; continue; fi
    options=()
    if [ "${TINY:-0}" = 1 ]; then read -ra options <<< "${tiny_options[$m]}"; fi
    train_run results "configs/${m}_budget.yaml" "$run" "$s" data.shards="$pretrain" "${train_extra[@]}" ${options[@]+"${options[@]}"}
  done
done

# a ViT has no BatchNorm: its rows stay as exported under --bn reestimated
rm -f "$OUT/eval.jsonl"
$PY -m evaluation --data "$EVAL_DATA" --bn reestimated --seeds 3 --checkpoint "random=$random_spec" \
  --checkpoint "${names[0]}=$(runs $baseline)" --checkpoint "${names[1]}=$(runs $method)" \
  --baseline random --baseline "${names[0]}" "${eval_extra[@]}" --out "$OUT/eval.jsonl" | tee "$OUT/table.txt"

# metric vs step: the first seed's checkpoints at CURVE_STEPS, one probe seed
first=$(echo $SEEDS | cut -d' ' -f1)
steps=(--checkpoint "random=$random_spec")  # step 0
for m in $method $baseline; do
  for step in $CURVE_STEPS; do steps+=(--checkpoint "$(printf '%s/%s_s%s/checkpoints/ckpt-%08d.pt' "$OUT" "$m" "$first" "$step")"); done
done
rm -f "$OUT/eval_steps.jsonl"
$PY -m evaluation --data "$EVAL_DATA" --bn reestimated "${steps[@]}" "${curve_extra[@]}" --threads "$THREADS" \
  --out "$OUT/eval_steps.jsonl" > "$OUT/eval_steps.txt"
# the baseline's run first: byol < clove and dino < gtsa, the order the evaluation panels colour the
# methods in, so each method keeps one colour in every panel
$PY -m train.curves "$OUT/${baseline}_s$first" "$OUT/${method}_s$first" --fields "${fields[@]}" --eval "$OUT/eval_steps.jsonl" --metrics "${metrics[@]}" \
  --out "$OUT/curves.png"
echo "results: table in $OUT/table.txt, rows in $OUT/eval.jsonl, picture $OUT/curves.png"
