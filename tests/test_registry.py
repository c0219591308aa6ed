"""The results registry: recording a run, the tables generated from it, rerunning an entry."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from metarun.errors import MetarunError
from metarun.registry import (HEADLINE_SHAPES, REGISTRY, TABLE_END, TABLE_START, encode_scores, episode_scores,
                              load_entries, paired_against_best, recipe_variant, record,
                              shapes_a_recipe_tests, summary, table, trained_settings, variant_of, variants, verify,
                              with_table)

README = Path(__file__).resolve().parents[1] / "README.md"
SHORT = ("algo=maml", "data=sinusoid", "backbone=mlp", "trainer.max_steps=20", "trainer.val_every=0",
         "eval.episodes=20")


def test_a_recorded_run_carries_its_command_config_machine_and_results_and_verifies(cli, tmp_path):
    run_dir = tmp_path / "run"
    cli(*SHORT, f"hydra.run.dir={run_dir}")
    registry = tmp_path / "results"
    path = record(run_dir, registry)
    assert path.name == "maml_sinusoid_5shot_seed0.json"
    entry = json.loads(path.read_text())
    assert entry["command"] == "metarun trainer.progress=false " + " ".join(SHORT)
    assert entry["config"]["algo"]["inner_lr"] == 0.01 and entry["steps"] == 20 and entry["mode"] == "train"
    assert entry["results"] == json.loads((run_dir / "results.json").read_text())
    kept = episode_scores(entry)  # per-episode test scores, for paired tests without the run dir
    np.testing.assert_allclose(kept, np.load(run_dir / "episode_scores.npy"), rtol=1e-5)
    assert len(kept) == 20
    environment = entry["environment"]
    assert environment["cpu_cores"] >= 1 and environment["torch"] and "git_commit" in environment
    with pytest.raises(MetarunError, match="exists already"):
        record(run_dir, registry)
    other = tmp_path / "other_version"  # the same recipe name, trained with another setting
    shutil.copytree(run_dir, other)
    config = other / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("inner_lr: 0.01", "inner_lr: 0.02"))
    assert record(other, registry).name.startswith("maml_sinusoid_5shot_seed0_config")

    ok, message = verify(path, tmp_path / "verify")  # CPU runs repeat exactly
    assert ok and "reproduced" in message
    rerun = json.loads((tmp_path / "verify" / path.stem / "results.json").read_text())
    assert rerun["mean"] == entry["results"]["mean"]


def fake_entry(algo: str, seed: int, mean: float, recipe: str, lr: float = 0.001, precision: str | None = None) -> dict:
    """A registry entry's shape, for the table's formatting only (not a result)."""
    config = {"algo": {"name": algo, "optimizer": {"lr": lr}, "scheduler": {"name": "cosine", "total_steps": 900 + seed}},
              "backbone": {"name": "conv4"}, "data": {"name": "omniglot", "root": f"/home/user{seed}", "ways": 5},
              "trainer": {"max_time_s": 900, "fit_max_steps": 0.95, "precision": "auto", "max_steps": 900 + seed}}
    return {"recipe": recipe, "command": f"metarun +experiment={recipe} seed={seed}", "steps": 1000, "config": config,
            "train_time_s": 100.0 + seed, "environment": {"gpu": None, "cpu": "CPU", "cpu_cores": 2},
            "results": {"algo": algo, "data": "omniglot", "split": "vinyals", "ways": 5, "shots": 1,
                        "n_episodes": 1000, "metric": "accuracy", "mean": mean, "ci95": 0.0015, "seed": seed}
            | ({"training_precision": precision} if precision else {})}


def test_the_table_groups_seeds_and_stands_each_row_beside_its_paper():
    rows = table([fake_entry("protonet", 1, 0.9880, "p"), fake_entry("protonet", 0, 0.9884, "p"),
                  fake_entry("maml", 0, 0.9700, "m")]).splitlines()
    maml, protonet = rows[2], rows[3]
    assert "**98.82%** (2 seeds: 98.84 ± 0.15, 98.80 ± 0.15)" in protonet
    assert "98.8% (Snell et al. 2017, Table 1): reached" in protonet and "100-101 s, 1,000 steps" in protonet
    assert "98.7% ± 0.4% (Finn et al. 2017, Table 1): 1.70 points below" in maml


def test_runs_of_a_recipe_whose_settings_changed_are_never_averaged_together():
    """Seeds differ in paths and the fitted horizon, and share one row; a changed learning rate
    (the recipe file edited between runs) is a row of its own, labelled by the setting that differs."""
    rows = table([fake_entry("protonet", 0, 0.9880, "p"), fake_entry("protonet", 1, 0.9884, "p"),
                  fake_entry("protonet", 2, 0.9600, "p", lr=0.01)]).splitlines()[2:]
    assert len(rows) == 2
    assert any("(p, algo.optimizer.lr=0.001)" in row and "2 seeds: 98.80 ± 0.15, 98.84 ± 0.15" in row for row in rows)
    assert any("(p, algo.optimizer.lr=0.01)" in row and "(seed: 96.00 ± 0.15)" in row for row in rows)


def test_a_setting_added_later_keeps_earlier_runs_current_at_its_old_behaviour():
    """A run recorded before backbone.downsample existed trained with max-pools: the same variant
    as a run with the key at max_pool, another than a run with stride."""
    before = fake_entry("maml", 0, 0.95, "m")
    before["config"]["backbone"].pop("downsample", None)
    at_default = fake_entry("maml", 1, 0.95, "m")
    at_default["config"]["backbone"]["downsample"] = "max_pool"
    strided = fake_entry("maml", 2, 0.96, "m")
    strided["config"]["backbone"]["downsample"] = "stride"
    assert variant_of(before) == variant_of(at_default) != variant_of(strided)
    rows = table([before, at_default, strided]).splitlines()[2:]
    assert len(rows) == 2 and any("backbone.downsample=stride" in row for row in rows)


def test_rl2_runs_from_before_trpo_are_the_a2c_variant_whatever_trpo_settings_say():
    """RL²'s algo.outer_step arrived with TRPO's settings: a run recorded before them trained with
    A2C, the same variant as an A2C run that carries TRPO's (unused) settings; a TRPO run is another."""
    def rl2_run(seed: int, outer_step: str | None) -> dict:
        entry = fake_entry("rl2", seed, 6.5, "rl2_bandits")
        if outer_step is not None:
            entry["config"]["algo"] |= {"outer_step": outer_step, "trpo": {"max_kl": 0.01, "cg_iterations": 10}}
        return entry
    assert variant_of(rl2_run(0, None)) == variant_of(rl2_run(1, "a2c")) != variant_of(rl2_run(2, "trpo"))


def test_random_cells_drawn_per_seed_are_one_row_and_a_fixed_draw_another():
    """backbone.genotype=random draws a cell per seed (random_seed: ${seed}): its seeds are one
    row, as seeds are; a draw fixed for every seed is a variant; a genotype file's runs carry no
    random keys in their fingerprint."""
    def cell_run(seed: int, genotype: str, random_seed: int | None = None) -> dict:
        entry = fake_entry("protonet", seed, 0.9, "cells")
        entry["config"]["seed"] = seed
        entry["config"]["backbone"] = {"name": "genotype", "genotype": genotype, "random_nodes": 3,
                                       "random_seed": seed if random_seed is None else random_seed}
        return entry
    assert variant_of(cell_run(0, "random")) == variant_of(cell_run(1, "random")) != variant_of(cell_run(1, "random", 0))
    assert variant_of(cell_run(0, "found.json")) == variant_of(cell_run(1, "found.json"))
    assert "random_seed" not in json.dumps(trained_settings(cell_run(0, "found.json")))


def test_a_checkpoint_tested_with_other_test_time_settings_is_a_row_of_its_own():
    """A mode=eval run of a recipe's checkpoint after 1 inner step instead of the recipe's 10 is
    another variant (the MAML paper's sinusoid figures after 1, 5 and 10 steps): never averaged
    with the recipe's runs as if it were a seed, labelled by the setting that differs."""
    trained = fake_entry("maml", 0, 0.9, "s")
    trained["config"]["algo"]["eval_inner_steps"] = 10
    tested = fake_entry("maml", 1, 0.5, "s")
    tested["trained_config"] = trained["config"]
    tested["config"] = json.loads(json.dumps(trained["config"]))
    tested["config"]["algo"]["eval_inner_steps"] = 1
    assert variant_of(tested) != variant_of(trained)
    rows = table([trained, tested]).splitlines()[2:]
    assert len(rows) == 2 and any("algo.eval_inner_steps=1.0" in row for row in rows)
    tested["config"]["algo"]["eval_inner_steps"] = 10  # tested as trained: the recipe's variant
    assert variant_of(tested) == variant_of(trained)


def test_the_table_says_which_arithmetic_auto_resolved_to():
    """trainer.precision=auto is one setting of a recipe, bf16 on one machine and fp32 on another:
    shown beside the figure, as steps and machines are."""
    rows = table([fake_entry("protonet", 0, 0.9880, "p", precision="bf16"), fake_entry("protonet", 1, 0.9700, "p", precision="fp32"),
                  fake_entry("maml", 0, 0.9700, "m")]).splitlines()[2:]
    assert ", 1,000 steps, bf16 and fp32, CPU, 2 cores" in rows[1] and "2 seeds" in rows[1]
    assert ", 1,000 steps, CPU, 2 cores" in rows[0]  # recorded before results.json said


def test_recipes_are_compared_episode_by_episode_against_the_best():
    """The headline table's paired tests: seeds averaged episode by episode, each recipe against
    the one with the highest mean; a recipe whose entries lack per-episode scores, or that was
    tested on other episodes (another evaluation seed), gets no test."""
    rng = np.random.default_rng(0)
    hard = rng.uniform(0.5, 1.0, 400)  # episodes differ in difficulty, which pairing removes

    def entry(recipe, seed, scores, eval_seed=0):
        made = fake_entry("protonet", seed, float(scores.mean()), recipe)
        made["results"]["eval_seed"] = eval_seed
        return made | {"episode_scores": encode_scores(scores)}

    strong = [hard, np.minimum(hard + 0.02, 1)]
    close = np.mean(strong, axis=0) - np.tile([0.03, -0.01], 200) - rng.normal(0, 0.01, 400)
    runs = {"strong": [entry("strong", 0, strong[0]), entry("strong", 1, strong[1])],
            "close": [entry("close", 0, close)],
            "weak": [entry("weak", 0, hard - 0.05)],
            "old": [fake_entry("protonet", 0, 0.5, "old")],
            "elsewhere": [entry("elsewhere", 0, hard - 0.05, eval_seed=1)]}
    cells = paired_against_best(runs)
    assert cells["strong"] == "best" and set(cells) == {"strong", "close", "weak"}
    assert cells["weak"] == "p < 1e-300"  # 5 points below on every episode
    expected = stats.ttest_rel(episode_scores(runs["close"][0]), np.mean(strong, axis=0)).pvalue
    assert cells["close"] == f"p = {expected:.3g}" and 1e-30 < expected < 1e-3
    assert paired_against_best({"alone": runs["weak"]}) == {}


def test_a_recipes_variants_stand_side_by_side_with_paired_tests_against_the_best():
    """metarun-results variants: one recipe run three ways (a searched cell, a random cell per
    seed, Conv4), seeds averaged within a variant, each variant tested against the best on the
    same episodes; test shapes are separate tables; a recipe without runs is an error."""
    rng = np.random.default_rng(1)
    hard = rng.uniform(0.4, 1.0, 300)

    def entry(seed, overrides, offset, params, ways=20):
        scores = np.clip(hard + offset + rng.normal(0, 0.01, 300), 0, 1)
        made = fake_entry("protonet", seed, float(scores.mean()), "cells")
        made["results"] |= {"eval_seed": 0, "params": params, "ways": ways}
        made["config"]["backbone"]["genotype"] = overrides[0] if overrides else "found.json"
        return made | {"episode_scores": encode_scores(scores),
                       "overrides": ["+experiment=cells", *overrides, f"seed={seed}", "trainer.progress=false"]}

    entries = [entry(s, [], 0.0, 18300) for s in (0, 1)] + \
              [entry(s, ["backbone.genotype=random"], -0.05, 10000 + s) for s in (0, 1)] + \
              [entry(s, ["backbone=conv4", "backbone.channels=26"], 0.002, 18798) for s in (0, 1)] + \
              [entry(0, [], 0.0, 18300, ways=5)]
    tables = variants(entries, "cells").split("**omniglot (vinyals) ")
    twenty = [line for line in tables[2].splitlines() if line.startswith("| `")]
    assert tables[1].startswith("5-way") and tables[2].startswith("20-way")
    assert [row.split("`")[1] for row in twenty] == ["backbone=conv4 backbone.channels=26", "no override",
                                                   "backbone.genotype=random"]
    assert "| 18,798 |" in twenty[0] and "| best | 100-101 s, 1,000 steps, CPU, 2 cores |" in twenty[0] and "(2 seeds: " in twenty[0]
    assert "| 10,000-10,001 |" in twenty[2]
    assert float(twenty[2].split("| p ")[1].split(" |")[0].strip(" =<")) < 1e-6  # 5 points below on every episode
    with pytest.raises(MetarunError, match="no recorded run of the recipe 'other'"):
        variants(entries, "other")


def test_a_searched_cells_runs_are_labelled_by_their_overrides_and_stand_beside_no_paper():
    """In the full table a searched-cell recipe's rows (backbone=genotype: a 4-channel cell, not
    the paper's network) carry no paper figure, and its variants read as their overrides."""
    recipe = "protonet_cell_omniglot_20way"
    found, control = fake_entry("protonet", 0, 0.95, recipe), fake_entry("protonet", 0, 0.93, recipe)
    found["overrides"] = [f"+experiment={recipe}", "seed=0"]
    control["overrides"] = [f"+experiment={recipe}", "backbone=conv4", "backbone.channels=26", "seed=0"]
    control["config"]["backbone"]["channels"] = 26
    rows = table([found, control]).splitlines()[2:]
    assert any(f"protonet ({recipe}, backbone=conv4 backbone.channels=26)" in row for row in rows)
    assert any(f"protonet ({recipe}, no override)" in row for row in rows)
    assert not any("Snell" in row for row in rows)


def test_a_fixed_ways_recipe_fills_only_the_column_of_the_ways_it_trains():
    """MAML's head has one meta-learned output per way: its 5-way recipe cannot be tested 20-way
    (that figure is the 20-way recipe's row); ProtoNet's and a zero-head FOMAML's checkpoints can."""
    assert shapes_a_recipe_tests(recipe_variant("maml_omniglot_15min")[1]) == ((5, 1),)
    assert shapes_a_recipe_tests(recipe_variant("maml_omniglot_20way_15min")[1]) == ((20, 1),)
    assert shapes_a_recipe_tests(recipe_variant("fomaml_omniglot_15min")[1]) == HEADLINE_SHAPES
    assert shapes_a_recipe_tests(recipe_variant("protonet_omniglot_15min")[1]) == HEADLINE_SHAPES
    rows = {line.split(" | ")[1]: line for line in summary([]).splitlines()[2:]}
    assert "| — |  | not recorded | 95.8% |" in rows["`maml_omniglot_20way_15min`"]
    assert rows["`maml_omniglot_15min`"].endswith("| 98.7% | — |  |")


def test_the_readme_results_table_is_the_one_the_registry_generates():
    text = README.read_text()
    assert TABLE_START in text and TABLE_END in text
    assert with_table(text, summary(load_entries(REGISTRY)), README) == text, \
        "the README's results table is stale: run `metarun-results table --update README.md`"


def test_a_run_is_dirty_only_when_the_package_differs_from_its_commit(tmp_path):
    """git_dirty (kept with every recorded run): a changed, deleted or new file of the package
    counts; a results file or doc beside it does not (it changes nothing that a run computes)."""
    import subprocess
    from metarun.engine.environment import git_state

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    package = tmp_path / "pkg"
    package.mkdir()
    (package / "code.py").write_text("x = 1\n")
    (tmp_path / "results.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    assert git_state(package)["git_dirty"] is False
    (tmp_path / "results.json").unlink()  # outside the package
    (tmp_path / "notes.md").write_text("new\n")
    assert git_state(package)["git_dirty"] is False
    (package / "recipe.yaml").write_text("new: 1\n")  # an uncommitted new config
    assert git_state(package)["git_dirty"] is True
    (package / "recipe.yaml").unlink()
    (package / "code.py").write_text("x = 2\n")
    state = git_state(package)
    assert state["git_dirty"] is True and len(state["git_commit"]) == 40
    assert git_state(tmp_path.parent / "elsewhere")["git_commit"] is None


def test_pages_quote_the_registry_and_a_searched_cells_test_stays_on_its_page():
    """The docs hook's markers: a learner's table leaves out the runs of a recipe that tests a
    MetaNAS cell (its Conv4 control included), which MetaNAS's page shows with paired tests."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("docs_hooks", README.parent / "scripts" / "docs_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    protonet = hooks.replacement("results", "protonet")
    assert "protonet_omniglot_15min" in protonet and "protonet_cell_omniglot_20way" not in protonet
    cells = hooks.replacement("results-variants", "protonet_cell_omniglot_20way")
    assert "| `backbone.genotype=random` |" in cells and "| `backbone=conv4 backbone.channels=26` |" in cells
    assert hooks.replacement("results-variants", "no_such_recipe").startswith("No recorded run")
