"""Implicit linear model (Akyürek et al.): exact on linear learners, < 1 R² on kNN, batched, JSON-ready."""

import json

import numpy as np
import pytest
import torch

from iclab.algorithms.construct import construct_gd
from iclab.algorithms.gd import GD
from iclab.algorithms.least_squares import OLS, Ridge, ols_weights, ridge_weights
from iclab.algorithms.local import KNN
from iclab.analysis.compare import implicit_linear_map
from iclab.analysis.implicit import (
    fit_implicit,
    implicit_summary,
    make_references,
    mean_se,
    plot_implicit,
    probe_queries,
)
from iclab.config import task_config
from iclab.tasks.linear import LinearRegressionTask


def _prompts(batch=128, *, d=4, n=10, noise_var=0.1, seed=0, dtype=torch.float64):
    task = LinearRegressionTask(task_config("linear", d=d, n_points=n, noise_var=noise_var))
    return task.sample(batch, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _gen(seed=1):
    return torch.Generator().manual_seed(seed)


def _gd_weights_numpy(x, y, etas):
    """GD from w = 0 on 1/(2N) Σ (wᵀx_i − y_i)², one prompt at a time (x [B, N, d], y [B, N] numpy)."""
    out = []
    for xb, yb in zip(x, y):
        w = np.zeros(xb.shape[1])
        for eta in etas:
            w = w - eta * xb.T @ (xb @ w - yb) / xb.shape[0]
        out.append(w)
    return np.stack(out)


@pytest.mark.parametrize(("d", "n"), [(4, 10), (6, 4)])
def test_ols_is_linear_and_its_implicit_w_is_the_ols_solution(d, n):
    p = _prompts(d=d, n=n)
    fit = fit_implicit(OLS(), p.x_ctx, p.y_ctx, generator=_gen())
    assert fit.probes.shape == (128, 2 * d + 1, d) and fit.preds.shape == (128, 2 * d + 1)
    assert fit.w.shape == (128, d) and fit.bias.shape == (128,) and fit.r2.shape == (128,)
    assert torch.all(fit.r2 > 1 - 1e-10)
    torch.testing.assert_close(fit.w, ols_weights(p.x_ctx, p.y_ctx), atol=1e-6, rtol=0)
    assert fit.bias.abs().max() < 1e-6


@pytest.mark.parametrize("etas", [[0.7], [1.2, 0.8, 0.5]])
def test_gd_is_linear_and_its_implicit_w_is_the_gd_solution(etas):
    p = _prompts()
    fit = fit_implicit(GD(etas), p.x_ctx, p.y_ctx, generator=_gen())
    assert torch.all(fit.r2 > 1 - 1e-10)
    expected = _gd_weights_numpy(p.x_ctx.numpy(), p.y_ctx.numpy(), etas)
    np.testing.assert_allclose(fit.w.numpy(), expected, atol=1e-6, rtol=0)


def test_ridge_implicit_w_is_the_ridge_solution():
    p = _prompts()
    fit = fit_implicit(Ridge(0.3), p.x_ctx, p.y_ctx, generator=_gen())
    torch.testing.assert_close(fit.w, ridge_weights(p.x_ctx, p.y_ctx, 0.3), atol=1e-6, rtol=0)


def test_knn_is_not_linear():
    p = _prompts(batch=256)
    fit = fit_implicit(KNN(3), p.x_ctx, p.y_ctx, generator=_gen())
    assert fit.r2.max() < 1 - 1e-3
    assert fit.r2.mean() < 0.95


def test_implicit_w_of_a_linear_learner_is_its_gradient():
    """For a linear predictor the global fit and compare.py's autograd map ∂ŷ/∂x_q agree."""
    p = _prompts()
    learner = GD([0.9, 0.4])
    fit = fit_implicit(learner, p.x_ctx, p.y_ctx, generator=_gen())
    grad = implicit_linear_map(learner, p)[:, 0]  # [B, d] at the first query
    torch.testing.assert_close(fit.w, grad, atol=1e-8, rtol=0)


def test_constructed_lsa_matches_gd_in_the_summary():
    d, n, eta = 4, 10, 0.8
    p = _prompts(d=d, n=n)
    model = construct_gd(d, n, [eta])
    summary, fits = implicit_summary(model, p, {"gd": GD([eta]), "ols": OLS()}, generator=_gen())
    assert summary["r2"]["mean"] > 1 - 1e-10 and summary["frac_r2_above_0.99"] == 1.0
    assert summary["references"]["gd"]["cos"]["mean"] > 1 - 1e-10
    assert summary["references"]["gd"]["rel_distance"]["mean"] < 1e-8
    assert summary["references"]["ols"]["rel_distance"]["mean"] > 0.05  # one GD step is not OLS
    torch.testing.assert_close(fits["model"].probes, fits["gd"].probes)


def test_float32_model_gives_float64_fit():
    d, n = 3, 8
    p = _prompts(d=d, n=n, dtype=torch.float32)
    model = construct_gd(d, n, [1.0]).float()
    fit = fit_implicit(model, p.x_ctx, p.y_ctx, generator=_gen())
    assert fit.w.dtype == torch.float64 and fit.probes.dtype == torch.float32
    assert fit.r2.min() > 1 - 1e-4


def test_one_batched_predict_call_with_all_probes():
    calls = []

    class Spy:
        def predict(self, x_ctx, y_ctx, x_q):
            calls.append(tuple(x_q.shape))
            return OLS().predict(x_ctx, y_ctx, x_q)

    p = _prompts(batch=50, d=5)
    fit_implicit(Spy(), p.x_ctx, p.y_ctx, generator=_gen())
    assert calls == [(50, 11, 5)]


def test_given_probes_shared_by_every_prompt_and_errors():
    p = _prompts(d=3)
    probes = torch.randn(9, 3, generator=_gen(), dtype=torch.float64)
    fit = fit_implicit(OLS(), p.x_ctx, p.y_ctx, probes=probes)
    assert fit.probes.shape == (128, 9, 3)
    torch.testing.assert_close(fit.probes[5], probes)
    with pytest.raises(ValueError, match="at least d \\+ 1 = 4"):
        fit_implicit(OLS(), p.x_ctx, p.y_ctx, probes=probes[:3])
    with pytest.raises(ValueError, match="probes: must be"):
        fit_implicit(OLS(), p.x_ctx, p.y_ctx, probes=torch.randn(9, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="generator"):
        fit_implicit(OLS(), p.x_ctx, p.y_ctx)


def test_probe_queries_are_scaled_like_the_inputs():
    p = _prompts(batch=2000, d=3)  # x ~ U(−0.5, 0.5): RMS 0.5/√3
    q = probe_queries(p.x_ctx, generator=_gen())
    assert q.shape == (2000, 7, 3)
    np.testing.assert_allclose(q.std(dim=(0, 1)).numpy(), 0.5 / 3**0.5, rtol=0.03)
    assert probe_queries(p.x_ctx, 4, generator=_gen()).shape == (2000, 4, 3)


def test_constant_learner_has_r2_one_and_zero_weights():
    class Zero:
        def predict(self, x_ctx, y_ctx, x_q):
            return x_q.new_zeros(x_q.shape[:2])

    p = _prompts(batch=8)
    fit = fit_implicit(Zero(), p.x_ctx, p.y_ctx, generator=_gen())
    assert torch.all(fit.r2 == 1) and torch.all(fit.w == 0)


def test_summary_is_json_ready_with_task_w_and_registry_references(tmp_path):
    p = _prompts(noise_var=0.0)
    refs = make_references(["ols", "ridge:0.5", "gd:2:eta=0.5"])
    assert list(refs) == ["ols", "ridge:0.5", "gd:2:eta=0.5"]
    summary, fits = implicit_summary(KNN(3), p, refs, generator=_gen())
    text = json.dumps(summary)
    assert "NaN" not in text
    assert set(summary["references"]) == {"ols", "ridge:0.5", "gd:2:eta=0.5", "task_w"}
    for row in summary["references"].values():
        assert set(row["cos"]) == {"mean", "se"} and 0 < row["cos"]["mean"] < 1
    assert summary["references"]["ols"]["reference_r2"] == pytest.approx(1.0)
    assert summary["n_probes"] == 9 and summary["d"] == 4 and summary["n_prompts"] == 128
    # noiseless, n > d: OLS recovers w, so the task-w and OLS comparisons agree
    assert summary["references"]["task_w"]["cos"]["mean"] == pytest.approx(
        summary["references"]["ols"]["cos"]["mean"], abs=1e-8
    )
    path = plot_implicit(fits["model"].w, fits["ols"].w, fits["model"].r2, tmp_path / "f" / "implicit.png")
    assert path.stat().st_size > 10_000


def test_mean_se():
    out = mean_se(torch.tensor([1.0, 2.0, 3.0, float("inf")]))
    assert out["mean"] == pytest.approx(2.0) and out["se"] == pytest.approx(1 / 3**0.5)
