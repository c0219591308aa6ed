"""trainer.cuda_graph: what can be checked without a GPU. Recording and replaying itself needs
CUDA: scripts/bench_cuda_graph.py compares a graphed run with an eager one on a GPU, and
scripts/gpu_check.sh checks that a graphed run repeats itself and resumes to the same parameters."""
import pytest
import torch

from metarun.engine.cuda_graph import GraphedUpdate, make_capturable, portable_optimizer_state


def adam_after_steps(steps: int) -> tuple[torch.nn.Parameter, torch.optim.Adam]:
    weight = torch.nn.Parameter(torch.arange(4.0))
    optimizer = torch.optim.Adam([weight], lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        (weight ** 2).sum().backward()
        optimizer.step()
    return weight, optimizer


def test_a_graphed_runs_optimiser_state_resumes_in_an_eager_run():
    """Checkpoints hold the eager form (lr a number, not capturable, step counts on the CPU), so
    a run recorded on a GPU resumes without graphs (on a CPU, say) as if it had run eagerly."""
    trained, optimizer = adam_after_steps(3)
    make_capturable(optimizer, torch.device("cpu"))  # as a graphed run holds it (capturable Adam steps on GPUs only)
    state = portable_optimizer_state(optimizer.state_dict())
    group = state["param_groups"][0]
    assert isinstance(group["lr"], float) and group["lr"] == pytest.approx(0.1) and group["capturable"] is False
    assert state["state"][0]["step"].device.type == "cpu" and float(state["state"][0]["step"]) == 3
    assert torch.is_tensor(optimizer.param_groups[0]["lr"])  # the live optimiser is left as it was

    weight, resumed = adam_after_steps(0)
    with torch.no_grad():
        weight.copy_(trained)
    resumed.load_state_dict(state)
    reference, eager = adam_after_steps(3)
    for optimizer_, parameter in ((resumed, weight), (eager, reference)):
        optimizer_.zero_grad()
        (parameter ** 2).sum().backward()
        optimizer_.step()
    torch.testing.assert_close(weight, reference)


def test_the_schedulers_rate_reaches_the_recorded_optimiser_step():
    """The recorded Adam step reads its rate from a device tensor: each call puts the
    scheduler's current rate into that same tensor (a scheduler that assigns a number instead
    of filling the tensor included)."""
    _, optimizer = adam_after_steps(0)
    graphed = GraphedUpdate(update=None, optimizer=optimizer, device=torch.device("cpu"))
    recorded = optimizer.param_groups[0]["lr"]
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    for expected in (0.1, 0.085355, 0.05, 0.014645, 0.0):
        graphed.pin_learning_rates()
        assert optimizer.param_groups[0]["lr"] is recorded
        assert float(recorded) == pytest.approx(expected, abs=1e-6)
        optimizer.step()  # no gradients: changes nothing, but schedulers expect a step before theirs
        scheduler.step()
    optimizer.param_groups[0]["lr"] = 0.02  # assigned, as older torch versions' schedulers do
    graphed.pin_learning_rates()
    assert optimizer.param_groups[0]["lr"] is recorded and float(recorded) == pytest.approx(0.02)

