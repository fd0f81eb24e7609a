"""`iclab.algorithms.gd_per_k`: one GD step with its step tuned per context length k — the tuned steps against the
closed form and a direct grid search of the Monte Carlo loss, the predictions against numpy, and the fast prefix
path against the generic masked one."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.gd_per_k import PerKGD, per_k_etas
from iclab.tasks import make_task
from iclab.tasks.linear import LinearConfig


def _grid_best_eta(task, k: int, n_prompts: int = 40_000) -> tuple[float, float]:
    """argmin over a fine η grid of the Monte Carlo ½·MSE of one GD step at context length k, and the grid spacing."""
    prompts = make_task(replace(task.config, n_points=k)).sample(
        n_prompts, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    x, y, xq, yq = prompts.x_ctx.numpy(), prompts.y_ctx.numpy(), prompts.x_q.numpy()[:, 0], prompts.y_q.numpy()[:, 0]
    base = np.einsum("bn,bnd,bd->b", y, x, xq) / k  # ŷ = η · base
    grid = np.linspace(0.01, 1.5, 1491)
    loss = [0.5 * np.mean((eta * base - yq) ** 2) for eta in grid]
    return float(grid[int(np.argmin(loss))]), float(grid[1] - grid[0])


@pytest.mark.parametrize("noise_var", [0.0, 0.5])
def test_gaussian_steps_are_the_closed_form_and_the_grid_optimum(noise_var):
    """x ~ N(0, I), w ~ N(0, I): η_k = k / (k + d + 1 + σ²) (Mahankali et al.'s optimal one-layer LSA), and a grid
    search of the sampled loss at k = 1, 3, 8 lands within Monte Carlo error of it."""
    d, n = 3, 8
    task = make_task(LinearConfig(d=d, n_points=n, x_dist="gaussian", x_scale=1.0, noise_var=noise_var))
    etas = per_k_etas(task)
    assert etas == pytest.approx([k / (k + d + 1 + noise_var) for k in range(1, n + 1)], rel=1e-12)
    for k in (1, 3, 8):
        best, spacing = _grid_best_eta(task, k)
        # the loss is flat near its minimum: 40 000 prompts pin the argmin to a few percent
        assert best == pytest.approx(etas[k - 1], rel=0.05, abs=2 * spacing), (k, best, etas[k - 1])


def test_anisotropic_steps_are_tuned_numerically_per_k():
    """Inputs with an anisotropic covariance have no closed form: each η_k is tuned by L-BFGS on that k and matches
    the grid optimum; the steps grow with k (more points, a longer step on the mean gradient)."""
    task = make_task(
        LinearConfig(d=3, n_points=3, x_dist="gaussian", x_scale=1.0, x_cov_diag=(2.0, 1.0, 0.25), noise_var=0.1)
    )
    etas = per_k_etas(task)
    assert len(etas) == 3 and etas[0] < etas[1] < etas[2]
    for k in (1, 3):
        best, spacing = _grid_best_eta(task, k)
        assert best == pytest.approx(etas[k - 1], rel=0.05, abs=2 * spacing), (k, best, etas[k - 1])


def test_predictions_match_numpy_and_the_fast_prefix_path():
    """predict with k present points is x_qᵀ (η_k / k) Xᵀy (masked points ignored); predict_prefixes (cumulative
    sums) equals the generic one-masked-problem-per-prefix path, with 0 at t = 0."""
    gen = torch.Generator().manual_seed(0)
    B, T, d = 7, 6, 4
    x = torch.randn(B, T, d, generator=gen, dtype=torch.float64)
    y = torch.randn(B, T, generator=gen, dtype=torch.float64)
    learner = PerKGD([0.3, 0.5, 0.7, 0.8, 0.9])
    mask = torch.tensor([[True] * (i % 5 + 1) + [False] * (4 - i % 5) for i in range(B)])  # 1 … 5 present
    pred = learner.predict(x[:, :5], y[:, :5], x[:, 5:], mask)  # [B, 1]
    for b in range(B):
        k = int(mask[b].sum())
        X, Y = x[b, :k].numpy(), y[b, :k].numpy()
        w = learner.etas[k - 1] / k * X.T @ Y
        assert pred[b, 0].item() == pytest.approx(float(x[b, 5].numpy() @ w), rel=1e-12)
    fast = learner.predict_prefixes(x, y)
    naive = MaskedLearner.scalar_prefixes(learner, x, y)
    assert torch.allclose(fast, naive, rtol=1e-12, atol=1e-14) and (fast[:, 0] == 0).all()


def test_errors():
    with pytest.raises(ValueError, match="etas"):
        PerKGD([])
    learner = PerKGD([0.2, 0.3])
    x = torch.randn(2, 3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="k = 1 … 2"):
        learner.predict(x, x[..., 0], x[:, :1])
    with pytest.raises(ValueError, match="linear-regression task"):
        per_k_etas(object())
