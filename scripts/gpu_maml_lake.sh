#!/usr/bin/env bash
# MAML on the Omniglot one-shot challenge of Lake et al. 2015, on a GPU lent for minutes: two
# recipes meta-trained side by side on one GPU for SECONDS (then stopped by SIGTERM, which
# checkpoints the step reached), each scored on the 20 runs from its last checkpoint:
#   paper20: the MAML paper's 20-way settings (+experiment=maml_omniglot_lake_20way: meta-batch 16,
#            5 inner steps of 0.1 in training and at test)
#   paper5:  the paper's 5-way inner loop at 20 ways (1 inner step of 0.4, 3 at test), cheaper
#            updates, so more of them in the same time
#
#   bash scripts/gpu_maml_lake.sh WORK_DIR SECONDS
#
# Where hydra is not installed (a bare GPU image), see scripts/gpu_check.sh for PYTHONPATH.
# Dry run on a CPU: DEVICE=cpu EXTRA="algo.meta_batch=2" bash scripts/gpu_maml_lake.sh /tmp/dry 30
set -u
work=${1:?work dir}
seconds=${2:?seconds of training}
device=${DEVICE:-cuda}
python=${PYTHON:-python3}
metarun=("$python" -m metarun.cli)
quiet="device=$device trainer.progress=false trainer.val_every=0 trainer.ckpt_every=250 ${EXTRA:-}"
mkdir -p "$work"
declare -A recipe=(
  [paper20]=""
  [paper5]="algo.inner_steps=1 algo.inner_lr=0.4 algo.eval_inner_steps=3"
)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
"$python" -c "import torch; print('torch', torch.__version__)"
for name in "${!recipe[@]}"; do
  timeout "$seconds" "${metarun[@]}" +experiment=maml_omniglot_lake_20way ${recipe[$name]} $quiet \
    hydra.run.dir="$work/$name" > "$work/$name.log" 2>&1 &
done
wait
for name in "${!recipe[@]}"; do
  echo "=== $name: ${recipe[$name]:-as in the experiment file}"
  grep -h "stopped\|Error\|error:" "$work/$name.log" | tail -3
  tail -1 "$work/$name/metrics.jsonl"
  "${metarun[@]}" mode=eval +experiment=maml_omniglot_lake_20way ${recipe[$name]} $quiet \
    trainer.ckpt_path="$work/$name/checkpoints/last.pt" hydra.run.dir="$work/${name}_lake" 2>&1 | tail -1
done
