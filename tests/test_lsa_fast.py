"""iclab.models.lsa_fast against its references: the hand-written backwards against autograd's (gradcheck), the
member dimension against members run one by one on LSA's naive path, and a 200-step training trajectory.

tests/test_fast_paths.py compares one model's `predict` (fast, query-only) with the naive path over odd shapes;
this file covers what only the functional form has: E > 1 members, inputs that need no gradient (the first layer's
data), and the loss the trainer sees over many steps.
"""

import pytest
import torch

from iclab.config import ExperimentConfig, config_to_dict
from iclab.models import make_model
from iclab.models.lsa import LSAConfig
from iclab.models.lsa_fast import gram_attention, gram_readout
from iclab.runs import RunDir
from iclab.tasks import make_task
from iclab.tasks.linear import LinearConfig
from iclab.training.ensemble import Ensemble
from iclab.training.trainer import train


def _rand(*shape, seed, grad=True):
    t = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return t.requires_grad_(grad)


@pytest.mark.parametrize("need_h", [True, False])
@pytest.mark.parametrize("E,H", [(1, 1), (2, 3)])
def test_gram_attention_backward_is_autograds(E, H, need_h):
    """GramAttention's backward = numerical derivatives (torch.autograd.gradcheck, float64), with and without a
    gradient for the tokens (the first layer's tokens are data)."""
    B, T, N, D = 3, 6, 4, 5
    h, KQ, OV = _rand(E, B, T, D, seed=0, grad=need_h), _rand(E, H, D, D, seed=1), _rand(E, H, D, D, seed=2)
    assert torch.autograd.gradcheck(lambda h, KQ, OV: gram_attention(h, N, KQ, OV), (h, KQ, OV))


@pytest.mark.parametrize("need_h", [True, False])
@pytest.mark.parametrize("E,H,k", [(1, 1, 1), (2, 3, 2)])
def test_gram_readout_backward_is_autograds(E, H, k, need_h):
    """GramReadout (queries only, k y-slots) against numerical derivatives."""
    B, T, N, D = 3, 7, 4, 5
    h, KQ, OV = _rand(E, B, T, D, seed=3, grad=need_h), _rand(E, H, D, D, seed=4), _rand(E, H, k, D, seed=5)
    assert torch.autograd.gradcheck(lambda h, KQ, OV: gram_readout(h, N, KQ, OV), (h, KQ, OV))


@pytest.mark.parametrize(
    "config",
    [LSAConfig(layers=1), LSAConfig(layers=3, heads=2), LSAConfig(layers=3, tied=True, layernorm=True)],
    ids=["1-layer", "3-layer-2-heads", "tied-layernorm"],
)
def test_members_training_loss_equals_each_member_on_the_naive_path(config):
    """E = 3 members through the member dimension = each member's own training_loss on its naive path (the
    attention written out), losses and gradients, float64: ≤ 1e-12 relative (the same sums in another order)."""
    d, E, B = 4, 3, 5
    seeds = [0, 7, 9]
    ensemble = Ensemble(config, d, seeds).double()
    task = LinearConfig(d=d, n_points=6, n_queries=2)
    prompts = make_task(task).sample(E * B, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    losses = ensemble.training_loss(prompts)  # the batched form
    losses.sum().backward()
    for e, seed in enumerate(seeds):
        model = make_model(config, d, generator=torch.Generator().manual_seed(seed)).double().set_impl("naive")
        loss = model.training_loss(prompts[e * B : (e + 1) * B])
        loss.backward()
        torch.testing.assert_close(losses[e], loss, rtol=1e-12, atol=0)
        for name, p in model.named_parameters():
            stacked = ensemble.stacked[ensemble.names.index(name)]
            torch.testing.assert_close(stacked.grad[e], p.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("layers", [1, 3])
def test_fast_and_naive_training_follow_the_same_loss_trajectory(tmp_path, layers):
    """200 training steps (von Oswald's setting at a small batch, float64) on the fast and on the naive path: the
    logged training losses agree to 1e-9 relative. The two paths sum in different orders (rounding ~1e-16 per
    step), and Adam's normalised steps pass such differences on without amplifying them over 200 steps at this
    learning rate."""
    curves = {}
    for impl in ("fast", "naive"):
        config = ExperimentConfig(task=LinearConfig(), model=LSAConfig(layers=layers)).replace(
            train={"steps": 200, "batch_size": 64, "eval_every": 20, "checkpoint_every": 200, "dtype": "float64",
                   "progress": False, "impl": impl},
            eval={"n_prompts": 64},
        )  # fmt: skip
        run = RunDir.create(tmp_path / impl, config_to_dict(config))
        train(config, run)
        curves[impl] = torch.tensor(run.metrics()["train_half_mse"].to_numpy())
    assert len(curves["fast"]) == 11  # steps 0, 20, …, 200
    torch.testing.assert_close(curves["fast"][1:], curves["naive"][1:], rtol=1e-9, atol=0)  # row 0: no step yet
