"""dMMSE against a naive per-prompt numpy loop, and its Bayes optimality for a pool prior by Monte Carlo.

Reference, written from the formula: for each prompt, the squared residuals of every pool vector on the present
points, weights scipy.special.softmax(−SSE/(2σ²)), ŵ = Σ_m p_m w_m, ŷ = x_qᵀŵ. Tolerance: 1e-9 relative to the
largest reference value, in float64 (float32 inputs computed in float64: 1e-6).
"""

from functools import partial

import numpy as np
import pytest
import torch
from reference_checks import as_tensor as _t
from reference_checks import assert_rel_close
from scipy.special import softmax

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.bayes import DMMSE
from iclab.algorithms.least_squares import Ridge
from iclab.algorithms.registry import make_learner
from iclab.config import task_config
from iclab.tasks.linear import LinearRegressionTask

_close = partial(assert_rel_close, rtol=1e-9)

SHAPES = [(0, 3, 5), (1, 4, 6), (3, 6, 9), (6, 6, 1), (12, 5, 32), (7, 1, 4)]  # (n, d, M): n < d, = d, > d
PREFIX_SHAPES = [(1, 3, 4), (5, 1, 3), (6, 4, 16), (9, 8, 7)]  # (T, d, M)


def naive_dmmse(pool, sigma2):
    """One prompt: X [k, d], y [k] (present points only), Xq [m, d] → [m]."""

    def fn(X, y, Xq):
        sse = np.array([np.sum((y - X @ w) ** 2) for w in pool])  # [M]
        return Xq @ (softmax(-sse / (2 * sigma2)) @ pool)

    return fn


def _case(n, d, M, seed, batch=4, m=2):
    """Targets from pool members plus noise (so the posterior is peaked), a random mask: prompt 0 full, 1 empty."""
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal((M, d))
    X = rng.standard_normal((batch, n, d))
    w = pool[rng.integers(M, size=batch)]
    y = np.einsum("bnd,bd->bn", X, w) + 0.3 * rng.standard_normal((batch, n))
    Xq = rng.standard_normal((batch, m, d))
    mask = rng.random((batch, n)) < 0.7
    mask[0] = True
    mask[1] = False
    return pool, X, y, Xq, mask


@pytest.mark.parametrize("sigma2", [0.09, 1.0])
@pytest.mark.parametrize("n,d,M", SHAPES)
def test_dmmse_matches_naive_softmax_on_masked_contexts(n, d, M, sigma2):
    pool, X, y, Xq, mask = _case(n, d, M, seed=100 * n + 10 * d + M)
    naive = naive_dmmse(pool, sigma2)
    expected = np.stack([naive(X[b][mask[b]], y[b][mask[b]], Xq[b]) for b in range(X.shape[0])])
    learner = DMMSE(_t(pool), sigma2)
    _close(learner.predict(_t(X), _t(y), _t(Xq), _t(mask)), expected)
    _close(expected[1], Xq[1] @ pool.mean(0))  # the empty prompt: the pool mean
    # float32 inputs computed in float64 against the reference on the same rounded inputs
    X32, y32, q32 = (_t(a).float() for a in (X, y, Xq))
    out = DMMSE(_t(pool), sigma2, dtype=torch.float64).predict(X32, y32, q32, _t(mask))
    assert out.dtype == torch.float32
    X64, y64, q64 = (a.double().numpy() for a in (X32, y32, q32))
    ref32 = np.stack([naive(X64[b][mask[b]], y64[b][mask[b]], q64[b]) for b in range(X.shape[0])])
    _close(out, ref32, rtol=1e-6)


@pytest.mark.parametrize("T,d,M", PREFIX_SHAPES)
def test_dmmse_prefix_fast_path_matches_generic_path_and_naive_loop(T, d, M):
    pool, x, y, _, _ = _case(T, d, M, seed=T * d + M, batch=3)
    naive = naive_dmmse(pool, 0.25)
    expected = np.array([[naive(x[b, :t], y[b, :t], x[b, t : t + 1])[0] for t in range(T)] for b in range(3)])
    learner = DMMSE(_t(pool), 0.25)
    _close(learner.predict_prefixes(_t(x), _t(y)), expected)
    if T > 1:  # the generic path answers T = 1 with 0 without asking the learner
        _close(MaskedLearner.scalar_prefixes(learner, _t(x), _t(y)), expected)
    _close(expected[:, 0], x[:, 0] @ pool.mean(0))  # t = 0: the pool mean
    learner.chunk_elements = 1  # one prompt per chunk: the same numbers
    _close(learner.predict_prefixes(_t(x), _t(y)), expected)


def test_dmmse_is_stable_when_every_weight_underflows():
    # σ² tiny and residuals large: exp(−SSE/2σ²) is 0 for every pool member; logsumexp keeps the arg-min.
    pool, X, y, Xq, mask = _case(8, 3, 6, seed=3)
    y = y * 50
    sigma2 = 1e-4
    expected = np.stack([naive_dmmse(pool, sigma2)(X[b][mask[b]], y[b][mask[b]], Xq[b]) for b in range(4)])
    learner = DMMSE(_t(pool), sigma2)
    _close(learner.predict(_t(X), _t(y), _t(Xq), _t(mask)), expected)
    log_p = learner.log_posterior(_t(X), _t(y), _t(mask))
    assert log_p.shape == (4, 6) and torch.allclose(log_p.exp().sum(-1), torch.ones(4, dtype=torch.float64))


def test_dmmse_is_bayes_optimal_for_the_pool_prior_monte_carlo():
    # Prompts drawn from the pool prior: the posterior mean minimises E(ŷ − f)², so its MSE is at most ridge's
    # (Bayes for a Gaussian prior) at every context length. Paired differences: the mean of (err_dmmse −
    # err_ridge) must be below 4 standard errors above 0 at every t; the small pool makes dMMSE far better once
    # the context identifies w, which we also require (mean difference < 0 at t ≥ 2).
    config = task_config(
        "linear", d=4, n_points=8, noise_var=0.25, x_dist="gaussian", x_scale=1.0, pool_size=16, pool_seed=3
    )
    task = LinearRegressionTask(config)
    prompts = task.sample(4000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x, y, f = prompts.x, prompts.y, prompts.f  # [B, T, d], [B, T], [B, T] with T = n_points + 1
    dmmse = make_learner("dmmse", task)
    err_d = (dmmse.predict_prefixes(x, y) - f).square()  # [B, T]
    err_r = (Ridge(0.25).predict_prefixes(x, y) - f).square()
    diff = err_d - err_r
    mean, se = diff.mean(0), diff.std(0) / diff.shape[0] ** 0.5
    assert (mean <= 4 * se).all(), f"dMMSE − ridge MSE per t: {mean.tolist()} ± {se.tolist()}"
    assert (mean[2:] < 0).all()
    # at t = 0 dMMSE predicts with the pool mean, ridge with 0
    pool_mean = task.pool_params(dtype=torch.float64)["w"].mean(0)
    assert torch.allclose(dmmse.predict_prefixes(x, y)[:, 0], x[:, 0] @ pool_mean)


# ----------------------------------------------------------------------------------------------------------------
# registry


def _pool_task(noise_var=0.2, pool_size=8):
    return LinearRegressionTask(task_config("linear", d=3, n_points=5, noise_var=noise_var, pool_size=pool_size))


def test_registry_takes_pool_and_noise_from_the_task():
    task = _pool_task()
    learner = make_learner("dmmse", task)
    assert learner.name == "dmmse" and learner.noise_var == 0.2 and learner.dtype is None
    assert torch.equal(learner.pool, task.pool_params(dtype=torch.float64)["w"])
    explicit = make_learner("dmmse:0.5:float64=1", task)
    assert explicit.name == "dmmse:0.5:float64=1" and explicit.noise_var == 0.5 and explicit.dtype == torch.float64


def test_dmmse_rejects_bad_parameters():
    with pytest.raises(ValueError, match="noise_var"):
        DMMSE(torch.ones(3, 2), 0.0)
    with pytest.raises(ValueError, match="pool"):
        DMMSE(torch.ones(3), 0.1)
    with pytest.raises(ValueError, match="d = 2"):
        DMMSE(torch.ones(3, 2), 0.1).predict(torch.ones(1, 2, 4), torch.ones(1, 2), torch.ones(1, 1, 4))
