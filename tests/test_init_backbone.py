"""trainer.init_backbone: a run starts from the backbone of another run's checkpoint (the second
stage of a two-stage recipe), whichever learner wrote it, and refuses one that does not fit."""
from __future__ import annotations

import pytest
import torch

from metarun.algorithms import build_learner
from metarun.cli import run
from metarun.config_check import validate_config
from metarun.engine.checkpoint import load_checkpoint
from metarun.engine.init_backbone import load_backbone
from metarun.errors import ConfigError

SMALL = ("backbone.channels=8", "trainer.val_every=0", "eval.episodes=5")


@pytest.fixture(scope="module")
def protonet_checkpoint(tmp_path_factory, cache_dir):
    """A ProtoNet run of two updates: the first stage."""
    from hydra import compose, initialize_config_module
    run_dir = tmp_path_factory.mktemp("stage1")
    with initialize_config_module(config_module="metarun.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"paths.cache_dir={cache_dir}", "trainer.progress=false", "algo=protonet", "trainer.max_steps=2", *SMALL])
    run(cfg, run_dir)
    return run_dir / "checkpoints" / "last.pt"


def test_a_maml_head_learner_takes_the_backbone_a_metric_learner_trained(make_cfg, protonet_checkpoint):
    source = load_checkpoint(protonet_checkpoint)["model"]
    learner = build_learner(make_cfg("algo=maml", *SMALL), "image", (1, 28, 28), None)
    head = learner.model[1].weight.detach().clone()
    load_backbone(learner, protonet_checkpoint)
    for name, value in learner.model[0].state_dict().items():
        assert torch.equal(value, source[f"backbone.{name}"]), name
    assert torch.equal(learner.model[1].weight, head)  # the head is this run's own


def test_a_fresh_run_starts_from_the_checkpoints_backbone(make_cfg, tmp_path, protonet_checkpoint):
    # a step of 1e-12 leaves the weights where they started, so the run's checkpoint shows its start
    run(make_cfg("algo=anil", *SMALL, "trainer.max_steps=1", "algo.optimizer.lr=1e-12", "algo.first_order=true",
                 f"trainer.init_backbone={protonet_checkpoint}"), tmp_path)
    source = load_checkpoint(protonet_checkpoint)["model"]
    trained = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"]
    weights = [k for k in source if k.startswith("backbone.") and k.endswith("weight")]
    assert weights
    for key in weights:
        torch.testing.assert_close(trained[key.replace("backbone.", "body.", 1)], source[key], rtol=0, atol=1e-9)


@pytest.mark.parametrize("overrides, says", [
    (("backbone.channels=16",), "has shape"),
    (("backbone=mlp", "data=sinusoid"), "no backbone with this run's parameter names"),
])
def test_a_checkpoint_of_another_backbone_is_refused_naming_the_key(make_cfg, protonet_checkpoint, overrides, says):
    cfg = make_cfg("algo=maml", *overrides)
    kind, shape = ("regression", (1,)) if cfg.data.name == "sinusoid" else ("image", (1, 28, 28))
    learner = build_learner(cfg, kind, shape, None)
    with pytest.raises(ConfigError) as error:
        load_backbone(learner, protonet_checkpoint)
    assert error.value.key == "trainer.init_backbone" and says in str(error.value)


def test_a_missing_checkpoint_is_a_one_line_error_before_the_data(make_cfg, tmp_path):
    """The start checks name the key (a run fails before it loads any data); a resumed run does
    not need the file (its own checkpoint holds the weights)."""
    missing = tmp_path / "nothing.pt"
    cfg = make_cfg("algo=protonet", *SMALL, f"trainer.init_backbone={missing}")
    with pytest.raises(ConfigError, match=r"trainer.init_backbone='.*nothing.pt' is not allowed: .*no such file"):
        validate_config(cfg)
    validate_config(make_cfg("algo=protonet", *SMALL, f"trainer.init_backbone={missing}", "trainer.resume=true"))
    learner = build_learner(make_cfg("algo=protonet", *SMALL), "image", (1, 28, 28), None)
    with pytest.raises(ConfigError, match="no such file"):
        load_backbone(learner, missing)
