"""Each recipe of conf/experiment/ (the settings behind a recorded figure) composes and trains.

The recipes themselves run 15 to 60 minutes and are recorded in results/ (docs/results-registry.md);
here each one trains two outer updates with its own settings, the clock off, and is tested on a
few episodes, so a renamed key or a broken learner fails the suite before a long run does."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import metarun
from metarun.registry import EXPERIMENTS
from tests.conftest import needs_omniglot_files

# the zoo sweeps compare learners with the papers' settings; every other experiment is a recipe.
# The mini-ImageNet ones need a copy of the data: tests/test_miniimagenet.py trains them on a tiny one
RECIPES = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml") if "zoo" not in p.stem and "miniimagenet" not in p.stem)
# recipes whose two updates would take most of a minute: fewer tasks and trajectories, still their
# own settings otherwise (the meta-RL ones roll out every trajectory through the simulator)
SMALLER = {
    "maml_navigation2d": ("algo.meta_batch=2", "algo.trajectories=4", "data.reference_trajectories=4"),
    "maml_halfcheetah_vel": ("algo.meta_batch=2", "algo.trajectories=2", "data.reference_trajectories=2"),
    "maml_halfcheetah_dir": ("algo.meta_batch=2", "algo.trajectories=2", "data.reference_trajectories=2"),
    "metanas_omniglot_20way_60min": ("algo.meta_batch=1", "algo.inner_steps=2", "algo.eval_inner_steps=2"),
    "imaml_omniglot_15min": ("algo.meta_batch=2",),  # 32 tasks of 16 inner steps and 5 CG steps: 21 s
}


@needs_omniglot_files  # maml_omniglot_lake_20way tests on the runs of Lake et al.
@pytest.mark.parametrize("recipe", RECIPES)
def test_each_recipe_trains_two_updates(recipe, tmp_path, cache_dir):
    run_dir = tmp_path / recipe
    results = metarun.run([f"+experiment={recipe}", "trainer.max_time_s=null", "trainer.fit_max_steps=null",
                           "trainer.max_steps=2", "algo.scheduler.total_steps=2", "eval.episodes=3",
                           "trainer.progress=false", f"paths.cache_dir={cache_dir}", "device=cpu",
                           *SMALLER.get(recipe, ())], run_dir=run_dir)
    assert results["step"] == 2 and results["n_episodes"] in (3, 20)  # the Lake protocol scores its 20 runs
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert f"name: {recipe.split('_')[0]}" in config
    assert json.loads((run_dir / "results.json").read_text()) == results
    # what trainer.precision resolved to is recorded; bf16 never for the learners it breaks
    assert results["training_precision"] in ("fp32", "bf16")
    if recipe.startswith(("reptile", "metalstm")):
        assert results["training_precision"] == "fp32"


def test_the_gpu_forms_name_recipes_that_exist():
    """scripts/gpu_recipes.sh runs its default list when a GPU is lent: a renamed recipe must fail
    here, not on the lent machine."""
    script = (Path(__file__).parents[1] / "scripts" / "gpu_recipes.sh").read_text()
    listed = script.split("default_recipes=(")[1].split(")")[0].split()
    assert listed and all((EXPERIMENTS / f"{recipe}.yaml").is_file() for recipe in listed), listed
