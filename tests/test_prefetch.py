"""trainer.prefetch: meta-batches drawn on a background thread are the batches drawn without it,
and a run that prefetched resumes to the parameters of one that never stopped."""
from __future__ import annotations

import pytest
import torch

from metarun.cli import run
from metarun.data.omniglot import build_omniglot
from metarun.engine.checkpoint import load_checkpoint
from metarun.engine.prefetch import Prefetcher, prefetching
from metarun.errors import ConfigError
from test_episodes import omniglot_cfg
from test_resume import assert_same_parameters

RUN = ("algo=protonet", "data=omniglot", "algo.episode.ways=10", "algo.episode.queries=2",
       "trainer.val_every=0", "trainer.ckpt_every=5", "eval.episodes=20", "device=cpu")


@pytest.fixture(scope="module")
def source():
    return build_omniglot(omniglot_cfg(), None)["train"]


def test_prefetched_batches_and_generator_states_are_those_of_direct_draws(source):
    direct, prefetched = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    prefetcher = Prefetcher(source, prefetched, 3, (5, 1, 2))
    try:
        for _ in range(6):
            a, b = source.sample(direct, 3, 5, 1, 2), prefetcher.next()
            assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
            # the trainer's generator (checkpointed) stands after the batches used, not those drawn ahead
            assert torch.equal(direct.get_state(), prefetched.get_state())
    finally:
        prefetcher.close()
    assert not prefetcher.thread.is_alive()


def test_a_sampler_error_reaches_the_training_thread(source):
    prefetcher = Prefetcher(source, torch.Generator(), 1, (10_000, 1, 1))  # more ways than classes
    with pytest.raises(RuntimeError):
        prefetcher.next()
    prefetcher.close()


def test_prefetch_setting():
    assert prefetching("auto", torch.device("cuda")) and not prefetching("auto", torch.device("cpu"))
    assert prefetching(True, torch.device("cpu")) and not prefetching(False, torch.device("cuda"))
    with pytest.raises(ConfigError, match="trainer.prefetch"):
        prefetching("yes", torch.device("cpu"))


def test_a_prefetching_run_trains_as_one_without_and_resumes_to_the_same_parameters(make_cfg, tmp_path):
    plain = run(make_cfg(*RUN, "trainer.max_steps=12", "trainer.prefetch=false"), tmp_path / "plain")
    ahead = run(make_cfg(*RUN, "trainer.max_steps=12", "trainer.prefetch=true"), tmp_path / "ahead")
    run(make_cfg(*RUN, "trainer.max_steps=7", "trainer.prefetch=true"), tmp_path / "cut")
    resumed = run(make_cfg(*RUN, "trainer.max_steps=12", "trainer.prefetch=true", "trainer.resume=true"),
                  tmp_path / "cut")
    states = [load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in ("plain", "ahead", "cut")]
    for state in states[1:]:
        assert state["step"] == 12
        assert_same_parameters(states[0]["model"], state["model"])
    assert plain["mean"] == ahead["mean"] == resumed["mean"]
