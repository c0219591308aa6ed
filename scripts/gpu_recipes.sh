#!/bin/bash
# The GPU form of the recipes that stay below their paper's figure in 15 CPU-minutes: each recipe
# as it stands, on device=cuda, for SECONDS of training instead of 900 (the cosine's horizon fitted
# to the GPU's speed, at most the paper-sized trainer.max_steps below), tested and recorded in
# results/ through scripts/run_recipe.sh. The registry keeps such runs apart from the CPU runs: their
# overrides make them variants of the recipe, shown on rows of their own.
#   bash scripts/gpu_recipes.sh SECONDS [RECIPE ...]     (default: the list below, in its order)
#   bash scripts/gpu_recipes.sh 420 maml_omniglot_15min  (one recipe in a 15-minute lease)
# Seeds: SEEDS="0 1 2" (default 0). A dry run on a CPU: DEVICE=cpu RECORD=0 bash scripts/gpu_recipes.sh 90 RECIPE
set -euo pipefail
seconds=${1:?seconds of training per recipe}; shift
device=${DEVICE:-cuda}
read -r -a seeds <<< "${SEEDS:-0}"
# Below their paper's figure in the registry after 15 CPU-minutes, roughly the largest gaps first
# (docs/results.md); each learner's page says what it reached and why.
default_recipes=(
  mann_omniglot_15min
  imaml_omniglot_15min
  reptile_omniglot_20way_15min
  anil_omniglot_20way_15min
  maml_omniglot_20way_15min
  mamlpp_omniglot_15min
  mamlpp_omniglot_20way_15min
  metasgd_omniglot_20way_15min
  fomaml_omniglot_15min
  fomaml_omniglot_20way_15min
  snail_omniglot_15min
  snail_omniglot_20way_15min
  maml_omniglot_15min
  relationnet_omniglot_15min
  metasgd_omniglot_15min
  reptile_omniglot_15min
)
recipes=("$@")
[ ${#recipes[@]} -gt 0 ] || recipes=("${default_recipes[@]}")
# 60,000 updates: MAML's Omniglot budget (Finn et al. 2017), the most any of these papers trains
for recipe in "${recipes[@]}"; do
  EXTRA="device=$device trainer.max_time_s=$seconds trainer.max_steps=60000" NAME="${recipe}_${device}${seconds}s" \
    bash "$(dirname "$0")/run_recipe.sh" "$recipe" "${seeds[@]}"
done
