"""Configs compose, every supported (algo, data, backbone) builds, bad input fails clearly."""
from __future__ import annotations

from pathlib import Path

import pytest

from metarun.algorithms import SUPPORTED_KINDS, build_learner
from metarun.config_check import check_episode_shapes, validate_config
from metarun.data import build_sources
from metarun.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "metarun" / "conf"
BACKBONE_FOR = {"omniglot": "conv4", "sinusoid": "mlp", "bandits": "gru", "navigation2d": "mlp", "gym": "mlp"}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["algo", "data", "backbone", "device", "trainer", "eval", "paths"])
def test_every_group_option_composes(make_cfg, group):
    assert options(group), f"conf/{group} is empty"
    for option in options(group):
        cfg = make_cfg(f"{group}={option}")
        assert cfg[group] is not None


@pytest.mark.parametrize("algo", sorted(SUPPORTED_KINDS))
@pytest.mark.parametrize("data", sorted(BACKBONE_FOR))
def test_supported_pairs_build_and_unsupported_fail(make_cfg, algo, data):
    cfg = make_cfg(f"algo={algo}", f"data={data}", f"backbone={BACKBONE_FOR[data]}")
    sources = build_sources(cfg.data, cfg.paths)
    kind = sources["train"].kind
    if kind in SUPPORTED_KINDS[algo]:
        validate_config(cfg)
        check_episode_shapes(cfg, sources)
        train = sources["train"]
        learner = build_learner(cfg, kind, train.image_shape, train.n_classes, train.action_size)
        assert sum(p.numel() for p in learner.parameters()) > 0
    else:
        with pytest.raises(ConfigError, match=f"algo={algo} supports data of kind"):
            build_learner(cfg, kind, sources["train"].image_shape, sources["train"].n_classes)


def test_algo_data_specialisation_applies_paper_values(make_cfg):
    cfg = make_cfg("algo=maml", "data=sinusoid", "backbone=mlp")
    assert (cfg.algo.inner_lr, cfg.algo.meta_batch) == (0.01, 25)
    cfg = make_cfg("algo=maml", "data=omniglot")
    assert (cfg.algo.inner_lr, cfg.algo.meta_batch, cfg.algo.eval_inner_steps) == (0.4, 32, 3)



# (the mini-ImageNet recipes are checked on a tiny copy of the data: tests/test_miniimagenet.py)
@pytest.mark.parametrize("experiment", [e for e in options("experiment") if "miniimagenet" not in e])
def test_every_experiment_passes_the_start_checks(make_cfg, experiment):
    cfg = make_cfg(f"+experiment={experiment}")
    validate_config(cfg)
    check_episode_shapes(cfg, build_sources(cfg.data, cfg.paths))


def test_maml_lake_experiment_is_the_measured_recipe(make_cfg):
    cfg = make_cfg("+experiment=maml_omniglot_lake_20way")
    assert (cfg.algo.name, cfg.data.split, cfg.data.ways, cfg.eval.protocol) == ("maml", "lake", 20, "lake_runs")
    assert (cfg.algo.meta_batch, cfg.algo.inner_steps, cfg.algo.eval_inner_steps, cfg.algo.inner_lr) == (16, 1, 3, 0.4)
    assert (cfg.data.train_task_classes, cfg.data.queries, cfg.algo.episode.queries) == ("same_alphabet", 5, 5)
    assert (cfg.algo.scheduler.name, cfg.algo.scheduler.total_steps, cfg.eval.checkpoint) == ("cosine", 5530, "last")
    validate_config(cfg)

@pytest.mark.parametrize("override, key", [
    ("data.shots=-1", "data.shots"),
    ("data.ways=0", "data.ways"),
    ("trainer.max_steps=1.5", "trainer.max_steps"),
    ("data.split=random", "data.split"),
    ("eval.checkpoint=newest", "eval.checkpoint"),
    ("algo.episode.ways=20", "algo.episode.ways"),  # MAML trains and tests with the same ways
    ("device.cache_host_memory=sometimes", "device.cache_host_memory"),
    ("trainer.max_time_s=0", "trainer.max_time_s"),
    ("trainer.max_time_s=15min", "trainer.max_time_s"),
    ("trainer.fit_max_steps=0.9", "trainer.fit_max_steps"),  # no budget to fit to
    ("trainer.max_time_s=60 trainer.fit_max_steps=1.5", "trainer.fit_max_steps"),
    ("trainer.max_time_s=60 trainer.fit_max_steps=0.9 trainer.calibration_steps=1", "trainer.calibration_steps"),
    ("trainer.cuda_graph=yes", "trainer.cuda_graph"),
    ("algo.scheduler.name=step", "algo.scheduler.step_size"),  # MAML declares no decay of its own
    ("algo.scheduler.name=cosine", "algo.scheduler.total_steps"),
    ("algo.scheduler.name=linear algo.scheduler.total_steps=10", "algo.scheduler.end_factor"),
    ("algo=protonet algo.scheduler.gamma=0", "algo.scheduler.gamma"),
    ("trainer.trust_checkpoint=maybe", "trainer.trust_checkpoint"),
    ("data.augment.rotate_degrees=-5", "data.augment.rotate_degrees"),
    ("data.train_task_classes=same_drawer", "data.train_task_classes"),
    ("algo.head_init=random", "algo.head_init"),
    ("data=sinusoid backbone=mlp algo.head_init=zero", "algo.head_init"),  # one output, no ways
    ("algo=metasgd algo.head_init=zero algo.episode.ways=20", "algo.episode.ways"),  # learned head rates
    ("algo=boil algo.head_init=prototypes", "algo.head_init"),  # BOIL's inner loop holds the head
    ("data.augment.scale=1.5", "data.augment.scale"),
    ("data.augment.translate=2px", "data.augment.translate"),
    ("trainer.cuda_graph=true algo.optimizer.name=sgd", "trainer.cuda_graph"),
    ("trainer.cuda_graph=true trainer.precision=bf16", "trainer.cuda_graph"),
    ("algo=metaoptnet trainer.cuda_graph=true", "trainer.cuda_graph"),  # the solver decides on the host
    ("algo=metaoptnet algo.svm_c=0", "algo.svm_c"),
    ("algo=metabaseline algo.pretrain_fraction=1.5", "algo.pretrain_fraction"),
    ("backbone.downsample=avg_pool", "backbone.downsample"),
    ("algo.optimizer.momentum=0.9", "algo.optimizer.momentum"),  # MAML's optimiser is Adam
    ("algo=protonet algo.optimizer.name=sgd algo.optimizer.nesterov=true", "algo.optimizer.nesterov"),  # no momentum
    ("algo=protonet algo.optimizer.name=sgd algo.optimizer.momentum=1.5", "algo.optimizer.momentum"),
    ("algo.scheduler.name=piecewise algo.scheduler.total_steps=10", "algo.scheduler.milestones"),
    ("algo.scheduler.name=piecewise algo.scheduler.total_steps=10 algo.scheduler.milestones=[0.5,0.2] "
     "algo.scheduler.factors=[0.1,0.01]", "algo.scheduler.milestones"),
    ("algo.scheduler.name=piecewise algo.scheduler.total_steps=10 algo.scheduler.milestones=[0.5] "
     "algo.scheduler.factors=[0.1,0.01]", "algo.scheduler.factors"),
    ("backbone.readout=sum", "backbone.readout"),
    ("algo=metaoptnet algo.label_smoothing=0.9", "algo.label_smoothing"),
    ("algo=imaml algo.inner_form=newton", "algo.inner_form"),
    ("algo=imaml algo.cg_damping=-1", "algo.cg_damping"),
    ("algo=imaml algo.eval_proximal_lambda=off", "algo.eval_proximal_lambda"),
])
def test_bad_values_name_the_key(make_cfg, override, key):
    with pytest.raises(ConfigError) as error:
        validate_config(make_cfg(*override.split()))
    assert error.value.key == key
    assert key in str(error.value)


def test_zero_head_maml_may_meta_train_with_other_ways(make_cfg):
    validate_config(make_cfg("algo.head_init=zero", "algo.episode.ways=20"))
    with pytest.raises(ConfigError, match=r"equal to data.ways \(5\) \(or algo.head_init=zero\)"):
        validate_config(make_cfg("algo.episode.ways=20"))


def test_zero_head_tested_with_more_steps_than_trained_is_warned_about(make_cfg):
    from metarun.config_check import config_warnings
    (warning,) = config_warnings(make_cfg("algo.head_init=zero"))  # maml.yaml: 1 step, 3 at test
    assert "algo.eval_inner_steps=3 > algo.inner_steps=1" in warning and "algo.eval_inner_steps=1" in warning
    assert config_warnings(make_cfg("algo.head_init=zero", "algo.eval_inner_steps=1")) == []
    assert config_warnings(make_cfg()) == []  # the learned head takes more steps at test well


def test_protonet_rotate_support_must_be_a_boolean(make_cfg):
    with pytest.raises(ConfigError, match="algo.rotate_support=3 is not allowed") as error:
        validate_config(make_cfg("algo=protonet", "algo.rotate_support=3"))
    assert error.value.key == "algo.rotate_support"


def test_wrong_backbone_for_data_says_which_fits(make_cfg):
    with pytest.raises(ConfigError, match="backbone=mlp"):
        validate_config(make_cfg("algo=maml", "data=sinusoid"))


@pytest.mark.parametrize("overrides, message", [
    (("data.ways=500",), "data.ways=500 is not allowed: at most 400: the val split"),
    (("data.ways=2000", "data.val_characters=0"), "data.ways=2000 is not allowed: at most 1692: the test split"),
    (("data.shots=10", "data.queries=15"), "data.shots + data.queries=25 is not allowed: at most 20"),
    (("data.split=lake", "data.train_task_classes=same_alphabet", "algo.episode.ways=60"),
     "algo.episode.ways=60 is not allowed: at most 47 with data.train_task_classes=same_alphabet: "
     "the train split's largest alphabet has 47 classes"),
])
def test_episode_shapes_beyond_the_data_fail_at_start(make_cfg, overrides, message):
    cfg = make_cfg("algo=protonet", *overrides)
    validate_config(cfg)
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        check_episode_shapes(cfg, build_sources(cfg.data, cfg.paths))


def test_cli_prints_one_line_errors(cli):
    stderr = {}
    for args, expected in [
        (["data.shots=-1"], "data.shots=-1 is not allowed: a positive integer"),
        (["algo=nosuchalgo"], "Could not find 'algo/nosuchalgo'"),
        (["data.nosuchkey=1"], "nosuchkey"),
        (["trainer.cuda_graph=true", "device=cpu"], "trainer.cuda_graph=True is not allowed: false on this cpu"),
    ]:
        done = cli(*args, check=False)
        assert done.returncode != 0
        assert expected in done.stderr
        assert "Traceback" not in done.stderr
        stderr[args[0]] = done.stderr
    listing = stderr["algo=nosuchalgo"]
    assert "maml" in listing and "protonet" in listing  # the allowed choices are listed


def test_piecewise_schedule_and_nesterov_sgd_are_metaoptnets(make_cfg):
    """MetaOptNet's outer optimiser: SGD 0.1 with Nesterov momentum 0.9 and weight decay 5e-4, the
    rate at 0.06 / 0.012 / 0.0024 of its start from epochs 20 / 40 / 50 of 60 (milestones in
    fractions of the horizon)."""
    import torch
    from metarun.engine.trainer import build_optimizer, build_scheduler
    cfg = make_cfg("algo=metaoptnet", "algo.optimizer.name=sgd", "algo.optimizer.lr=0.1", "algo.optimizer.momentum=0.9",
                   "algo.optimizer.nesterov=true", "algo.optimizer.weight_decay=5e-4", "algo.scheduler.name=piecewise",
                   "algo.scheduler.total_steps=60", "algo.scheduler.milestones=[0.3333,0.6667,0.8333]",
                   "algo.scheduler.factors=[0.06,0.012,0.0024]")
    validate_config(cfg)

    class OneWeight(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

    optimizer = build_optimizer(OneWeight(), cfg.algo.optimizer)
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 5e-4)
    scheduler = build_scheduler(optimizer, cfg.algo.scheduler)
    rates = []
    for _ in range(60):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.1] * 20 + [0.1 * 0.06] * 20 + [0.1 * 0.012] * 10 + [0.1 * 0.0024] * 10
    assert rates == pytest.approx(expected)


def test_lr_factors_give_named_modules_their_own_rate(make_cfg):
    """FEAT's second stage: the set function at 10x the rate of its pre-trained backbone; the
    schedule scales every group alike."""
    import torch
    from metarun.algorithms import build_learner
    from metarun.engine.trainer import build_optimizer, build_scheduler
    cfg = make_cfg("algo=feat", "algo.optimizer.lr=0.0002", "+algo.optimizer.lr_factors.set_function=10",
                   "algo.scheduler.step_size=2")
    validate_config(cfg)
    learner = build_learner(cfg, "image", (1, 28, 28), None)
    optimizer = build_optimizer(learner, cfg.algo.optimizer)
    rest, set_function = optimizer.param_groups
    assert {id(p) for p in set_function["params"]} == {id(p) for p in learner.set_function.parameters()}
    assert {id(p) for p in rest["params"]} == {id(p) for p in learner.backbone.parameters()}
    scheduler = build_scheduler(optimizer, cfg.algo.scheduler)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    assert (rest["lr"], set_function["lr"]) == pytest.approx((0.0001, 0.001))


@pytest.mark.parametrize("overrides, message", [
    (("+algo.optimizer.lr_factors.attention=10",), "algo.optimizer.lr_factors.attention=10 is not allowed: a key "
     "naming a module of the learner with trained parameters: backbone, set_function"),
    (("+algo.optimizer.lr_factors.set_function=-1",), "algo.optimizer.lr_factors.set_function=-1 is not allowed: a positive number"),
    (("+algo.optimizer.lr_factors.set_function=10", "algo.scheduler.name=cosine", "algo.scheduler.total_steps=10",
      "algo.scheduler.end_factor=0.1"), "algo.scheduler.end_factor=0.1 is not allowed: null with algo.optimizer.lr_factors"),
])
def test_lr_factors_errors_name_the_key(make_cfg, overrides, message):
    from metarun.algorithms import build_learner
    from metarun.engine.trainer import build_optimizer
    cfg = make_cfg("algo=feat", *overrides)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)
        build_optimizer(build_learner(cfg, "image", (1, 28, 28), None), cfg.algo.optimizer)


def test_lr_factors_may_be_added_from_the_command_line_where_other_keys_may_not(make_cfg):
    """The keys of algo.optimizer.lr_factors name the learner's modules, so a command may add any
    of them with + (the optimiser then checks the name); a misspelt key beside them is refused."""
    from metarun.config_check import check_added_keys
    compose_without = lambda kept: make_cfg(*kept)
    check_added_keys(["algo=mann", "+algo.optimizer.lr_factors.backbone=0.1"], compose_without)
    with pytest.raises(ConfigError, match="algo.optimizer.lr_factor=0.1 is not allowed: a key that conf/ declares "
                                          r"\(did you mean algo.optimizer.lr_factors\?\)"):
        check_added_keys(["algo=mann", "+algo.optimizer.lr_factor=0.1"], compose_without)


def test_cosine_schedule_decays_to_zero_at_total_steps(make_cfg):
    import torch
    from metarun.engine.trainer import build_scheduler
    cfg = make_cfg("algo=protonet", "algo.scheduler.name=cosine", "algo.scheduler.total_steps=8")
    validate_config(cfg)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.algo.optimizer.lr)
    scheduler = build_scheduler(optimizer, cfg.algo.scheduler)
    rates = []
    for _ in range(8):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[3] == pytest.approx(cfg.algo.optimizer.lr / 2) and rates[-1] == pytest.approx(0.0)
    assert all(a > b for a, b in zip(rates, rates[1:]))
