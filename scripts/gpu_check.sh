#!/usr/bin/env bash
# metarun on a GPU in one sitting, sized for a machine lent for ten minutes:
#   1. throughput and peak memory of every learner (scripts/bench.py)
#   2. second-order MAML against learn2learn 0.2.0's MAML wrapper (when its source is given)
#   3. every few-shot learner meta-trained, checkpointed and tested end to end (a short zoo
#      sweep with its comparison report), then the regression and meta-RL families
#   4. determinism: two runs of one seed and a run resumed halfway, compared parameter by
#      parameter, with trainer.deterministic true and false, and with trainer.cuda_graph=true;
#      then updates/s with and without CUDA graphs (scripts/bench_cuda_graph.py)
#   5. MAML on Omniglot 5-way 1-shot for the time that is left, then tested on the test episodes
#
#   bash scripts/gpu_check.sh WORK_DIR SECONDS [LEARN2LEARN_SRC]
#
# Everything goes to WORK_DIR; the log is the report. On a machine whose Python has torch but not
# hydra-core/omegaconf (a bare GPU image), copy hydra/, omegaconf/ and antlr4/ from a venv's
# site-packages into a folder and put it on PYTHONPATH with the repository:
#   PYTHONPATH=$PWD/.devsite:$PWD PYTHONUNBUFFERED=1 bash scripts/gpu_check.sh /tmp/gc 480 .l2l/learn2learn-0.2.0/learn2learn
# Sizes can be shrunk for a dry run on a CPU:
#   DEVICE=cpu BENCH=0 ZOO_STEPS=2 EVAL_EPISODES=5 DET_STEPS=4 bash scripts/gpu_check.sh /tmp/dry 600
set -u
work=${1:?work dir}
budget=${2:?seconds}
l2l=${3:-}
device=${DEVICE:-cuda}
zoo_steps=${ZOO_STEPS:-50}
eval_episodes=${EVAL_EPISODES:-100}
det_steps=${DET_STEPS:-40}
python=${PYTHON:-python3}
mkdir -p "$work"
deadline=$(( $(date +%s) + budget ))

left() { echo $(( deadline - $(date +%s) )); }
section() { echo; echo "=== $* ($(left) s left)"; }
metarun=("$python" -m metarun.cli)  # the metarun command, whether or not its script is installed
quiet="device=$device trainer.progress=false ${EXTRA:-}"

section machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

if [ "${BENCH:-1}" = 1 ]; then
  section throughput
  timeout 150 "$python" scripts/bench.py --device "$device"
  if [ -n "$l2l" ]; then
    section learn2learn
    timeout 90 "$python" scripts/bench_learn2learn.py --device "$device" --repeat 20 --learn2learn-src "$l2l"
  fi
fi

section "zoo: every few-shot learner, $zoo_steps updates, $eval_episodes test episodes"
timeout 240 "${metarun[@]}" -m +experiment=omniglot_5w1s_zoo_quick trainer.max_steps="$zoo_steps" \
  eval.episodes="$eval_episodes" $quiet hydra.sweep.dir="$work/zoo"
cat "$work/zoo/comparison.md"
for error in "$work"/zoo/*/error.txt; do [ -e "$error" ] && { echo "--- $error"; tail -5 "$error"; }; done

section "regression and meta-RL"
timeout 90 "${metarun[@]}" -m algo=maml,metasgd data=sinusoid backbone=mlp trainer.max_steps=200 trainer.val_every=100 \
  eval.episodes="$eval_episodes" $quiet hydra.sweep.dir="$work/sinusoid"
timeout 90 "${metarun[@]}" algo=rl2 data=bandits backbone=gru trainer.max_steps=100 trainer.val_every=50 \
  trainer.val_episodes=50 eval.episodes="$eval_episodes" $quiet hydra.run.dir="$work/rl2"
timeout 90 "${metarun[@]}" algo=maml data=navigation2d backbone=mlp trainer.max_steps=5 trainer.val_every=5 \
  trainer.val_episodes=10 eval.episodes=20 $quiet hydra.run.dir="$work/navigation"

section "determinism: MAML, $det_steps updates of 8 tasks, straight twice and resumed halfway"
short="algo=maml algo.meta_batch=8 trainer.max_steps=$det_steps trainer.val_every=0 trainer.ckpt_every=$(( det_steps / 2 ))
  eval.episodes=20 $quiet"
graphs=$([ "$device" = cuda ] && echo graph)  # trainer.cuda_graph: deterministic kernels, updates replayed
for variant in true false $graphs; do
  runs="$work/det_$variant"
  mkdir -p "$runs"
  keys=$([ "$variant" = graph ] && echo "trainer.deterministic=true trainer.cuda_graph=true" || echo "trainer.deterministic=$variant")
  for name in a b; do
    "${metarun[@]}" $short $keys hydra.run.dir="$runs/$name" > "$runs/$name.log" 2>&1
  done
  "${metarun[@]}" $short $keys trainer.max_steps=$(( det_steps / 2 )) hydra.run.dir="$runs/r" > "$runs/r.log" 2>&1
  rm -f "$runs/r/results.json"
  "${metarun[@]}" $short $keys trainer.resume=true hydra.run.dir="$runs/r" >> "$runs/r.log" 2>&1
done
"$python" - "$work" <<'EOF'
import json, sys
from pathlib import Path
import torch
work = Path(sys.argv[1])
for variant in ("true", "false", "graph"):
    runs = work / f"det_{variant}"
    if not runs.exists():
        continue
    label = "cuda_graph=true" if variant == "graph" else f"deterministic={variant}"
    model = {name: torch.load(runs / name / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]
             for name in "abr"}
    for other, what in (("b", "a second straight run"), ("r", "the run resumed halfway")):
        gap = max((model["a"][key].float() - model[other][key].float()).abs().max().item() for key in model["a"])
        print(f"{label}: largest parameter difference, straight run vs {what}: {gap:.3g}")
    times = [json.loads((runs / name / "results.json").read_text())["wall_time_s"] for name in "ab"]
    print(f"{label}: training time of the straight runs {times[0]:.1f} s, {times[1]:.1f} s")
EOF

if [ "$device" = cuda ]; then
  section "CUDA graphs: 20-way MAML updates/s, eager against replayed, and the parameters after 100 updates"
  timeout 120 "$python" scripts/bench_cuda_graph.py --updates 100 algo.inner_steps=1 data.queries=5
fi

section "MAML, Omniglot 5-way 1-shot, for the time left"
timeout $(( $(left) > 105 ? $(left) - 75 : 30 )) "${metarun[@]}" algo=maml trainer.max_steps=60000 trainer.val_every=0 \
  trainer.ckpt_every=250 $quiet hydra.run.dir="$work/maml" > "$work/maml.log" 2>&1
tail -1 "$work/maml/metrics.jsonl"
"${metarun[@]}" mode=eval algo=maml trainer.ckpt_path="$work/maml/checkpoints/last.pt" $quiet hydra.run.dir="$work/maml_test" \
  2>&1 | tail -3
echo "=== done ($(left) s left)"
