"""The distribution-shift suite: each shift does what its definition says, to the same tasks and noise draws."""

import math

import pytest
import torch

from iclab.config import task_config
from iclab.shifts import SHIFTS, apply_shift, parse_shift
from iclab.tasks import make_task

D, T, B = 6, 10, 400


@pytest.fixture(scope="module")
def setting():
    task = make_task(task_config("linear", d=D, n_points=T - 1, x_dist="gaussian", x_scale=1.0, noise_var=0.1))
    prompts = task.sample(B, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return task, prompts


def _shift(setting, spec, seed=1):
    task, prompts = setting
    return apply_shift(spec, prompts, task, generator=torch.Generator().manual_seed(seed))


def _linear_targets_hold(p):
    torch.testing.assert_close(p.f, torch.einsum("btd,bd->bt", p.x, p.w))


@pytest.mark.parametrize("spec", ["scale_x:3", "skewed", "covariance:10", "half_subspace", "orthant"])
def test_input_shifts_keep_tasks_and_noise(setting, spec):
    _, prompts = setting
    shifted = _shift(setting, spec).prompts
    _linear_targets_hold(shifted)
    torch.testing.assert_close(shifted.w, prompts.w)
    torch.testing.assert_close(shifted.y - shifted.f, prompts.y - prompts.f)  # same noise draws


def test_scales(setting):
    _, prompts = setting
    torch.testing.assert_close(_shift(setting, "scale_x:0.5").prompts.x, prompts.x * 0.5)
    sy = _shift(setting, "scale_y:3").prompts
    torch.testing.assert_close(sy.f, 3 * prompts.f)
    noisy = _shift(setting, "noisy_labels:2").prompts
    extra = noisy.y - prompts.y
    assert extra.std().item() == pytest.approx(2.0, rel=0.05)  # 4 000 draws: SE of the std ≈ 1.1 %
    torch.testing.assert_close(noisy.f, prompts.f)


def test_skewed_covariance_keeps_the_mean_squared_norm(setting):
    # E‖xA‖² = tr(AᵀA) for isotropic x; the normalisation makes it d. Monte Carlo over B·T points, 4 SE.
    x = _shift(setting, "skewed").prompts.x.reshape(-1, D)
    sq = (x**2).sum(-1)
    assert abs(sq.mean().item() - D) < 4 * sq.std().item() / math.sqrt(sq.numel())
    eig = torch.linalg.eigvalsh(x.T @ x / x.shape[0])
    assert eig.max() / eig.min() > 50  # strongly skewed (1/i² spectrum squared: 1296 in expectation)


def test_half_subspace_has_rank_d_over_2(setting):
    x = _shift(setting, "half_subspace").prompts.x.reshape(-1, D)
    assert torch.linalg.matrix_rank(x).item() == D // 2


def test_orthants(setting):
    same = _shift(setting, "orthant").prompts.x
    signs = torch.sign(same[:, :1])
    assert torch.all(torch.sign(same) == signs)
    opp = _shift(setting, "opposite_orthant")
    assert torch.all(torch.sign(opp.prompts.x) == signs)
    assert torch.all(torch.sign(opp.x_query) == -signs)
    torch.testing.assert_close(opp.f_query, torch.einsum("btd,bd->bt", opp.x_query, opp.prompts.w))


def test_orthogonal_queries(setting):
    _, prompts = setting
    sh = _shift(setting, "orthogonal_query")
    q, x = sh.x_query, prompts.x
    for t in range(1, T):
        inner = torch.einsum("bd,bkd->bk", q[:, t], x[:, :t])
        assert inner.abs().max().item() < 1e-9
    live = slice(0, D)  # before the span is all of R^d the query keeps the norm of x_t
    torch.testing.assert_close(q[:, live].norm(dim=-1), x[:, live].norm(dim=-1))
    assert q[:, D:].abs().max().item() < 1e-9  # nothing is orthogonal to R^d
    torch.testing.assert_close(sh.f_query, torch.einsum("btd,bd->bt", q, prompts.w))


def test_repeated_queries_come_from_the_prefix(setting):
    _, prompts = setting
    sh = _shift(setting, "repeated_query")
    for t in range(1, T):
        dist = (sh.x_query[:, t : t + 1] - prompts.x[:, :t]).norm(dim=-1).min(dim=1).values
        assert dist.max().item() == 0.0
    # the query's target is the repeated point's noiseless value plus the query position's own noise draw
    torch.testing.assert_close(sh.y_query - sh.f_query, prompts.y - prompts.f)


def test_length_shift_draws_longer_prompts(setting):
    p = _shift(setting, "length:25").prompts
    assert p.x.shape[1] == 25 + 1  # n_points context + one query


def test_every_shift_is_named_and_bad_values_are_one_line():
    for name in SHIFTS:
        assert name in parse_shift.__globals__["__doc__"]
    with pytest.raises(ValueError, match="shift: unknown value 'skew'; choose one of: none"):
        parse_shift("skew")
    with pytest.raises(ValueError, match="needs a positive factor"):
        parse_shift("scale_x:-1")
    with pytest.raises(ValueError, match="takes no value"):
        parse_shift("skewed:2")
    with pytest.raises(ValueError, match="needs a number of points"):
        parse_shift("length:2.5")
