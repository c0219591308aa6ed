#!/bin/bash
# Runs a recipe of conf/experiment/ for the given seeds, tests each checkpoint 20-way as well, and
# records both runs in results/ (metarun-results record). Run dirs: outputs/recipes/<recipe>_seed<S>.
#   bash scripts/run_recipe.sh protonet_omniglot_15min 0 1 2 > outputs/protonet.log 2>&1 &
set -euo pipefail
recipe=$1; shift
for seed in "$@"; do
  run=outputs/recipes/${recipe}_seed${seed}
  metarun +experiment="$recipe" trainer.progress=false seed="$seed" hydra.run.dir="$run"
  metarun mode=eval +experiment="$recipe" data.ways=20 seed="$seed" trainer.progress=false \
    trainer.ckpt_path="$run/checkpoints/last.pt" hydra.run.dir="${run}_eval20way"
  metarun-results record "$run"
  metarun-results record "${run}_eval20way"
done
