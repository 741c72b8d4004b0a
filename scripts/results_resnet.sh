#!/usr/bin/env bash
# The ResNet learning table end to end (`make results-resnet`): shards of the pretraining pool and
# the copy-paste evaluation set, CLoVE and the global-only BYOL baseline at the CPU budget
# (configs/*_budget.yaml) for each seed in SEEDS, then one evaluation of random (3 init seeds),
# BYOL and CLoVE with paired intervals against random and BYOL, and the metric-vs-step picture.
# A run that already finished is not trained again (--resume auto finds its last checkpoint).
# Environment: OUT (default runs/results-resnet), SEEDS (default "0 1"), TINY=1 for a
# seconds-long version of every step (what the test suite runs), THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/results-resnet}
SEEDS=${SEEDS:-0 1}
THREADS=${THREADS:-2}
PHOTOS=${PHOTOS:-data/shards/photos}
EVAL_DATA=${EVAL_DATA:-data/shards/copy-paste}
train_extra=()
eval_extra=(--threads "$THREADS")
curve_extra=(--probe-seeds 1)
CURVE_STEPS=${CURVE_STEPS:-200 400 600 800}
copy_paste=()
if [ "${TINY:-0}" = 1 ]; then
  train_extra=(train.epochs=2 data.samples_per_epoch=8 data.batch_size=4 data.global_size=64 data.local_size=32
    data.num_local=2 method.options.proj_hidden=32 method.options.proj_dim=16 checkpoint.every_steps=2
    log.progress=false log.tensorboard=false)
  eval_extra+=(--quick --no-progress)
  curve_extra+=(--quick --no-progress)
  copy_paste=(--train 24 --test 24 --size 64 --no-progress)
  CURVE_STEPS="2 4"
fi
mkdir -p "$OUT"
$PY -m shards photos "$PHOTOS"
$PY -m shards copy-paste "$EVAL_DATA" "${copy_paste[@]}"

runs() { local name=$1 s list=""; for s in $SEEDS; do list="$list,$OUT/${name}_s$s"; done; echo "${list#,}"; }
for method in clove byol; do
  for s in $SEEDS; do
    run="$OUT/${method}_s$s"
    options=()
    if [ "$method" = byol ] && [ "${TINY:-0}" = 1 ]; then options=(method.options.pred_hidden=32); fi
    if [ -f "$run/exported/backbone.json" ]; then echo "results: $run is finished"; continue; fi
    echo "results: training $run ($(date +%H:%M:%S))"
    start=$(date +%s)
    $PY -m train --config "configs/${method}_budget.yaml" --resume auto output_dir="$run" data.shards="$PHOTOS" \
      train.seed="$s" data.seed="$s" train.threads="$THREADS" "${train_extra[@]}" ${options[@]+"${options[@]}"} > "$run.log" 2>&1 \
      || { tail -n 5 "$run.log"; exit 1; }
    echo "results: $run took $(( $(date +%s) - start )) s"
  done
done

rm -f "$OUT/eval.jsonl"
$PY -m train.evaluate --data "$EVAL_DATA" --bn reestimated --seeds 3 \
  --checkpoint random=random:resnet18 --checkpoint "BYOL=$(runs byol)" --checkpoint "CLoVE=$(runs clove)" \
  --baseline random --baseline BYOL "${eval_extra[@]}" --out "$OUT/eval.jsonl" | tee "$OUT/table.txt"

# metric vs step: the first seed's checkpoints at CURVE_STEPS, one probe seed
first=$(echo $SEEDS | cut -d' ' -f1)
steps=(--checkpoint random=random:resnet18)  # step 0
for method in clove byol; do
  for step in $CURVE_STEPS; do steps+=(--checkpoint "$(printf '%s/%s_s%s/checkpoints/ckpt-%08d.pt' "$OUT" $method "$first" "$step")"); done
done
rm -f "$OUT/eval_steps.jsonl"
$PY -m train.evaluate --data "$EVAL_DATA" --bn reestimated "${steps[@]}" "${curve_extra[@]}" --threads "$THREADS" \
  --out "$OUT/eval_steps.jsonl" > "$OUT/eval_steps.txt"
# runs in the order the evaluation panels colour them (byol, clove), so each method keeps one colour
$PY -m train.curves "$OUT/byol_s$first" "$OUT/clove_s$first" --fields emb_rank --eval "$OUT/eval_steps.jsonl" \
  --metrics corr/layer3 corr/layer4 fg/layer3 fg/layer4 --out "$OUT/curves.png"
echo "results: table in $OUT/table.txt, rows in $OUT/eval.jsonl, picture $OUT/curves.png"
