#!/bin/bash
# Runs a recipe of conf/experiment/ for the given seeds, tests each checkpoint at the other of the
# table's two shapes as well (a 5-way recipe 20-way, a 20-way recipe 5-way) where the learner takes
# any number of ways on images (not meta-RL, not the fixed-ways learners: MAML's family with a
# learned head, SNAIL, MANN, Meta-LSTM, whose other figure needs another training run) and the
# recipe tests on episodes (not on the Lake et al. runs), and records the runs in results/
# (metarun-results record). Run dirs: outputs/recipes/<name>_seed<S>.
#   bash scripts/run_recipe.sh protonet_omniglot_15min 0 1 2 > outputs/protonet.log 2>&1 &
# A variant: EXTRA="algo.similarity_scale=25" NAME=matchingnet_scale25 bash scripts/run_recipe.sh ...
# (EXTRA applies to training and testing alike; the registry groups runs by recipe and EXTRA).
# RECORD=0: run and test without recording (a dry run of a script that calls this one).
set -euo pipefail
recipe=$1; shift
name=${NAME:-$recipe}
read -r -a extra <<< "${EXTRA:-}"
other_ways=$(python - "$recipe" "${extra[@]}" <<'EOF'
import sys
from hydra import compose, initialize_config_module
from metarun.config_check import ways_fixed_by_training
with initialize_config_module(config_module="metarun.conf", version_base="1.3"):
    cfg = compose(config_name="config", overrides=[f"+experiment={sys.argv[1]}", *sys.argv[2:]])
print("none" if ways_fixed_by_training(cfg) or cfg.eval.protocol != "episodes" or cfg.data.kind != "image"
      else 5 if cfg.data.ways == 20 else 20)
EOF
)
for seed in "$@"; do
  run=outputs/recipes/${name}_seed${seed}
  metarun +experiment="$recipe" "${extra[@]}" trainer.progress=false seed="$seed" hydra.run.dir="$run"
  [ "${RECORD:-1}" = 0 ] || metarun-results record "$run"
  if [ "$other_ways" != none ]; then
    metarun mode=eval +experiment="$recipe" "${extra[@]}" data.ways="$other_ways" seed="$seed" trainer.progress=false \
      trainer.ckpt_path="$run/checkpoints/last.pt" hydra.run.dir="${run}_eval${other_ways}way"
    [ "${RECORD:-1}" = 0 ] || metarun-results record "${run}_eval${other_ways}way"
  fi
done
