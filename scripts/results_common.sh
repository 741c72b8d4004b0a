# Settings shared by scripts/results.sh and scripts/ablate_vit.sh (sourced, not run): paths, threads,
# what TINY=1 shrinks (so that the learning tables and the ablation stay on one tiny version) and
# the one way both start a training run (train_run).
PY=${PY:-.venv/bin/python}
THREADS=${THREADS:-2}
PHOTOS=${PHOTOS:-data/shards/photos}
EVAL_DATA=${EVAL_DATA:-data/shards/copy-paste}
train_extra=()
tiny_eval=()
copy_paste=()
tiny_gtsa=(method.options.proj_dim=16 method.options.pred_hidden=32 method.options.rot_hidden=32)
if [ "${TINY:-0}" = 1 ]; then
  train_extra=(train.epochs=2 data.samples_per_epoch=8 data.batch_size=4 data.global_size=64 data.local_size=32
    data.num_local=2 checkpoint.every_steps=2 log.progress=false log.tensorboard=false)
  tiny_eval=(--quick --no-progress)
  copy_paste=(--train 24 --test 24 --size 64 --no-progress)
fi

# train_run PREFIX CONFIG RUN SEED [OVERRIDE ...]: one training run of CONFIG into RUN at SEED, at
# $THREADS threads, its output in RUN.log; prints its start and duration, or its log's tail and exits 1.
train_run() {
  local prefix=$1 config=$2 run=$3 seed=$4 start
  shift 4
  echo "$prefix: training $run ($(date +%H:%M:%S))"
  start=$(date +%s)
  $PY -m train --config "$config" --resume auto output_dir="$run" train.seed="$seed" data.seed="$seed" \
    train.threads="$THREADS" "$@" > "$run.log" 2>&1 || { tail -n 5 "$run.log"; exit 1; }
  echo "$prefix: $run took $(( $(date +%s) - start )) s"
}
