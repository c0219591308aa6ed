#!/usr/bin/env bash
# MAML on the Omniglot one-shot challenge of Lake et al. 2015, on a GPU lent for minutes: recipes
# (overrides of +experiment=maml_omniglot_lake_20way) meta-trained side by side on one GPU for
# SECONDS of training each, each then scored on the 20 runs (the experiment's eval=lake_runs) from
# its last checkpoint. The experiment's cosine takes the outer rate down to 0 over
# trainer.max_steps, which is set to the updates that fit in SECONDS: a calibration run of each
# recipe (CALIBRATION_S seconds, side by side too, so at the speed they will share) measures
# updates/s, and trainer.max_steps is that rate x SECONDS; trainer.max_time_s (SECONDS + 5%) only
# guards against a slower hour.
#
#   bash scripts/gpu_maml_lake.sh WORK_DIR SECONDS [NAME="OVERRIDES" ...]
#
# Default recipes: the experiment as it is (meta-training episodes within one alphabet) and with
# episodes drawn across alphabets (data.train_task_classes=any). On an H100: 7.25% error for the
# experiment alone with trainer.cuda_graph=true (5,530 updates in 189 s); side by side with two
# other recipes, 8.25% after 3,263 updates.
# Where hydra is not installed (a bare GPU image), see scripts/gpu_check.sh for PYTHONPATH.
# Dry run on a CPU: DEVICE=cpu CALIBRATION_S=5 EXTRA="algo.meta_batch=2" bash scripts/gpu_maml_lake.sh /tmp/dry 20
set -u
work=${1:?work dir}
seconds=${2:?seconds of training}
shift 2
recipes=("$@")
if [ ${#recipes[@]} = 0 ]; then
  recipes=("within=data.train_task_classes=same_alphabet" "across=data.train_task_classes=any")
fi
calibration_s=${CALIBRATION_S:-30}
device=${DEVICE:-cuda}
python=${PYTHON:-python3}
metarun=("$python" -m metarun.cli +experiment=maml_omniglot_lake_20way)
quiet="device=$device trainer.progress=false ${EXTRA:-}"
mkdir -p "$work"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
"$python" -c "import torch; print('torch', torch.__version__)"

updates_per_s() {  # a run's updates/s: the median over the second half of its train records
  "$python" - "$1" <<'EOF'
import json, statistics, sys
from omegaconf import OmegaConf
run = sys.argv[1]
meta_batch = OmegaConf.load(f"{run}/.hydra/config.yaml").algo.meta_batch
rates = [r["perf/tasks_per_s"] / meta_batch
         for r in map(json.loads, open(f"{run}/metrics.jsonl")) if "perf/tasks_per_s" in r]
print(statistics.median(rates[len(rates) // 2:]))
EOF
}

for recipe in "${recipes[@]}"; do
  name=${recipe%%=*}
  "${metarun[@]}" ${recipe#*=} $quiet trainer.max_steps=1000000 \
    trainer.max_time_s="$calibration_s" trainer.log_every=10 trainer.ckpt_every=1000000 eval=default eval.episodes=1 \
    hydra.run.dir="$work/${name}_calibration" > "$work/${name}_calibration.log" 2>&1 &
done
wait
for recipe in "${recipes[@]}"; do
  name=${recipe%%=*}
  rate=$(updates_per_s "$work/${name}_calibration") || { tail -5 "$work/${name}_calibration.log"; continue; }
  steps=$("$python" -c "print(int($rate * $seconds))")
  echo "=== $name: ${recipe#*=}: $rate updates/s side by side -> trainer.max_steps=$steps"
  "${metarun[@]}" ${recipe#*=} $quiet trainer.max_steps="$steps" \
    trainer.max_time_s=$(( seconds * 105 / 100 )) trainer.ckpt_every=500 \
    hydra.run.dir="$work/$name" > "$work/$name.log" 2>&1 &
done
wait
for recipe in "${recipes[@]}"; do
  name=${recipe%%=*}
  echo "=== $name: ${recipe#*=}"
  grep -h "max_time_s=[0-9.]* reached\|Error\|error:" "$work/$name.log" | tail -3
  grep '"train/loss"' "$work/$name/metrics.jsonl" | tail -1
  "$python" -c "import json; r = json.load(open('$work/$name/results.json')); print('step', r.get('step'), 'wall_time_s', r.get('wall_time_s'))"
  grep -h "one-shot runs" "$work/$name.log" | tail -1
done
