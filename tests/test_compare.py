"""Comparison metrics (docs/metrics.md) against closed forms and numpy recomputations."""

import numpy as np
import pytest
import torch

from iclab.algorithms.construct import construct_gd, construct_gdpp
from iclab.algorithms.gd import GD
from iclab.algorithms.least_squares import OLS, Ridge
from iclab.analysis.compare import (
    compare_learners,
    effective_preconditioner,
    half_mse,
    implicit_linear_map,
    interpolation_curve,
    ood_curves,
    weight_match,
)
from iclab.config import ModelConfig, TaskConfig
from iclab.models.lsa import LSA
from iclab.tasks.linear import LinearRegressionTask

D, N = 4, 6


def _prompts(batch=64, *, noise_var=0.0, n_queries=3, seed=0, d=D, n=N, dtype=torch.float64):
    task = LinearRegressionTask(TaskConfig(d=d, n_points=n, n_queries=n_queries, noise_var=noise_var))
    return task.sample(batch, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _perturbed(model: LSA, scale: float = 0.05, seed: int = 0) -> LSA:
    """A copy of `model` with every weight perturbed (a stand-in for a trained model)."""
    g = torch.Generator().manual_seed(seed)
    out = LSA(model.config, model.d).double()
    out.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in out.weights.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return out


def _rescale(model: LSA, scales) -> None:
    """The symmetry W_Q → s·W_Q, P → P/s per layer (so W_KQ → s·W_KQ, W_PV → W_PV/s)."""
    with torch.no_grad():
        for w, s in zip(model.weights, scales):
            w.W_Q.mul_(s)
            w.P.div_(s)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


# ----------------------------------------------------------------------------------------------------------------
# compare_learners and the implicit linear map


@pytest.mark.parametrize("etas", [[2.0], [1.5, 1.0, 0.5]])
def test_constructed_model_vs_gd_is_identical(etas):
    p = _prompts()
    model, gd = construct_gd(D, N, etas), GD(etas)
    out = compare_learners(model, gd, p, chunk=10)
    assert out["preds_diff"] < 1e-12 and out["preds_diff_normalised"] < 1e-12
    assert abs(out["model_cos"] - 1) < 1e-12
    assert abs(out["model_half_mse"] - out["reference_half_mse"]) <= 1e-12 * out["reference_half_mse"]
    assert abs(out["reference_half_mse"] - half_mse(gd, p)) <= 1e-12 * out["reference_half_mse"]


def test_compare_learners_metrics_recomputed_in_numpy():
    # GD(1 step) vs ridge: ∂ŷ/∂x_q is (η/N) Xᵀy for GD and w_ridge for ridge, so every metric has a numpy form.
    p = _prompts(noise_var=0.1)
    eta, lam = 2.0, 0.3
    out = compare_learners(GD([eta]), Ridge(lam), p, chunk=7)
    X, y, Xq, yq = _np(p.x_ctx), _np(p.y_ctx), _np(p.x_q), _np(p.y_q)
    g_gd = eta / N * np.einsum("bnd,bn->bd", X, y)
    w_r = np.stack([np.linalg.solve(X[b].T @ X[b] + lam * np.eye(D), X[b].T @ y[b]) for b in range(len(X))])
    pred_gd, pred_r = np.einsum("bmd,bd->bm", Xq, g_gd), np.einsum("bmd,bd->bm", Xq, w_r)
    cos = np.sum(g_gd * w_r, -1) / np.linalg.norm(g_gd, axis=-1) / np.linalg.norm(w_r, axis=-1)
    expected = {
        "model_half_mse": 0.5 * np.mean((pred_gd - yq) ** 2),
        "reference_half_mse": 0.5 * np.mean((pred_r - yq) ** 2),
        "preds_diff": np.mean(np.abs(pred_gd - pred_r)),
        "preds_diff_normalised": np.linalg.norm(pred_gd - pred_r) / np.linalg.norm(pred_r),
        "model_cos": cos.mean(),  # every query of a prompt has the same implicit map
    }
    for key, value in expected.items():
        assert abs(out[key] - value) <= 1e-9 * abs(value), (key, out[key], value)
    assert 0.5 < out["model_cos"] < 1 - 1e-6  # distinct learners, so not trivially 1


def test_implicit_linear_map_of_gd_and_ols():
    p = _prompts(batch=8, noise_var=0.2)
    X, y = _np(p.x_ctx), _np(p.y_ctx)
    eta = 1.7
    grad = implicit_linear_map(GD([eta]), p)
    assert grad.shape == p.x_q.shape
    expected = eta / N * np.einsum("bn,bnd->bd", y, X)  # (η/N) Σ_i y_i x_i, the same for every query
    np.testing.assert_allclose(_np(grad), np.broadcast_to(expected[:, None], grad.shape), rtol=1e-12, atol=1e-14)
    ols = np.stack([np.linalg.pinv(X[b]) @ y[b] for b in range(len(X))])
    np.testing.assert_allclose(
        _np(implicit_linear_map(OLS(), p)), np.broadcast_to(ols[:, None], grad.shape), rtol=1e-9, atol=1e-12
    )


# ----------------------------------------------------------------------------------------------------------------
# weight match


def test_weight_match_of_construction_with_itself_is_zero_and_rescaling_invariant():
    construction = construct_gdpp(D, N, [1.0, 0.8], [0.1, 0.05])
    for row in weight_match(construction, construction):
        assert row["scale"] == 1.0
        for key in ("kq_distance", "pv_distance", "kq_distance_functional", "pv_distance_functional"):
            assert row[key] == 0.0, key
    rescaled = construct_gdpp(D, N, [1.0, 0.8], [0.1, 0.05])
    _rescale(rescaled, [2.5, -0.7])
    p = _prompts()
    torch.testing.assert_close(rescaled.predict_prompts(p), construction.predict_prompts(p))  # a true symmetry
    rows = weight_match(rescaled, construction)
    for row, s in zip(rows, [2.5, -0.7]):
        assert abs(row["scale"] - s) < 1e-12
        for key in ("kq_distance", "pv_distance", "kq_distance_functional", "pv_distance_functional"):
            assert row[key] < 1e-12, key
        np.testing.assert_allclose(row["W_KQ"], _np(construction.weights[row["layer"]].W_KQ[0]), atol=1e-12)


def test_weight_match_distances_recomputed_in_numpy():
    construction = construct_gd(D, N, [1.2])
    model = _perturbed(construction, scale=0.1)
    _rescale(model, [3.0])
    (row,) = weight_match(model, construction)
    w, c = model.weights[0], construction.weights[0]
    kq, pv = _np(w.W_K[0]).T @ _np(w.W_Q[0]), _np(w.P[0]) @ _np(w.W_V[0])
    s = np.mean(np.diag(kq)[:D])
    kq, pv = kq / s, pv * s
    kq_c, pv_c = _np(c.W_K[0]).T @ _np(c.W_Q[0]), _np(c.P[0]) @ _np(c.W_V[0])
    rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)  # noqa: E731
    assert abs(row["scale"] - s) < 1e-12
    assert abs(row["kq_distance"] - rel(kq, kq_c)) < 1e-12
    assert abs(row["pv_distance"] - rel(pv, pv_c)) < 1e-12
    assert abs(row["kq_distance_functional"] - rel(kq[:, :D], kq_c[:, :D])) < 1e-12
    assert abs(row["pv_distance_functional"] - rel(pv[D], pv_c[D])) < 1e-12
    assert row["kq_distance"] > 0.01  # the perturbation is visible


def test_weight_match_and_interpolation_need_one_head():
    model = construct_gd(D, N, [1.0], heads=2)
    with pytest.raises(ValueError, match="heads"):
        weight_match(model, model)
    with pytest.raises(ValueError, match="heads"):
        interpolation_curve(model, model, _prompts(batch=4))


# ----------------------------------------------------------------------------------------------------------------
# interpolation


@pytest.mark.parametrize("etas", [[1.5], [1.2, 0.9]])
def test_interpolation_endpoints_are_trained_and_constructed_losses(etas):
    construction = construct_gd(D, N, etas)
    trained = _perturbed(construction, scale=0.3)
    _rescale(trained, [0.4] * len(etas))  # the curve rescales the trained weights first; the loss must not change
    p = _prompts(noise_var=0.05)
    curve = interpolation_curve(trained, construction, p, ts=(0.0, 0.5, 1.0))
    assert len(curve) == 3
    assert abs(curve[0] - half_mse(trained, p)) <= 1e-10 * curve[0]
    assert abs(curve[2] - half_mse(construction, p)) <= 1e-10 * curve[2]
    assert abs(curve[0] - curve[2]) > 1e-3 * curve[2]  # the perturbation matters


def test_interpolation_midpoint_matches_effective_weights_in_numpy():
    # one layer: ŷ = −Σ_i (W_PV e_i)_y · e_iᵀ W_KQ e_q with e_q = [x_q, 0]
    construction = construct_gd(D, N, [1.5])
    trained = _perturbed(construction, scale=0.1, seed=3)
    p = _prompts(batch=16)
    (mid,) = interpolation_curve(trained, construction, p, ts=(0.5,))
    w, c = trained.weights[0], construction.weights[0]
    kq, pv = _np(w.W_KQ[0]), _np(w.W_PV[0])
    s = np.mean(np.diag(kq)[:D])
    kq_t = 0.5 * kq / s + 0.5 * _np(c.W_KQ[0])
    pv_t = 0.5 * pv * s + 0.5 * _np(c.W_PV[0])
    e = np.concatenate([_np(p.x_ctx), _np(p.y_ctx)[..., None]], -1)  # [B, N, D+1]
    eq = np.concatenate([_np(p.x_q), np.zeros((*p.x_q.shape[:2], 1))], -1)  # [B, m, D+1]
    pred = -np.einsum("bn,bnk,bmk->bm", e @ pv_t[D], e, eq @ kq_t.T)
    assert abs(mid - 0.5 * np.mean((pred - _np(p.y_q)) ** 2)) <= 1e-10 * mid


def test_interpolation_of_a_float32_model():
    construction = construct_gd(D, N, [1.5])
    trained = _perturbed(construction, scale=0.1).float()
    p = _prompts(dtype=torch.float32)
    curve = interpolation_curve(trained, construction, p, ts=(0.0, 1.0))
    assert abs(curve[0] - half_mse(trained, p)) <= 1e-4 * curve[0]
    assert abs(curve[1] - half_mse(construction, p.to(dtype=torch.float64))) <= 1e-10 * curve[1]


# ----------------------------------------------------------------------------------------------------------------
# OOD curves


def test_ood_curves_at_alpha_one_equal_half_mse():
    p = _prompts(noise_var=0.1)
    learners = {"gd": GD([1.5]), "ols": OLS(), "lsa": construct_gd(D, N, [1.0, 0.5])}
    for kind in ("input", "target"):
        curves = ood_curves(learners, p, [1.0], kind=kind)
        for name, learner in learners.items():
            assert curves[name] == [half_mse(learner, p)]
    with pytest.raises(ValueError, match="input, target"):
        ood_curves(learners, p, [1.0], kind="output")


def test_ood_curves_closed_forms():
    alphas = [0.25, 1.0, 3.0]
    # noiseless, target scale β: predictions of any learner linear in y scale with β, so the loss scales with β²
    p = _prompts()
    gd = GD([1.5])
    base = half_mse(gd, p)
    target = ood_curves({"gd": gd}, p, alphas, kind="target")["gd"]
    np.testing.assert_allclose(target, [a**2 * base for a in alphas], rtol=1e-10)
    # noisy, input scale α, OLS with N > d: ŷ − y_q = x_qᵀX⁺ε − ε_q does not depend on α
    noisy = _prompts(noise_var=0.3, n=12)
    ols = ood_curves({"ols": OLS()}, noisy, alphas, kind="input")["ols"]
    np.testing.assert_allclose(ols, [half_mse(OLS(), noisy)] * 3, rtol=1e-9)
    # input scale for GD against an explicit numpy rescaling: x → αx, y = α f + ε
    a = 3.0
    (gd_curve,) = ood_curves({"gd": gd}, noisy, [a], kind="input")["gd"]
    X, Xq = a * _np(noisy.x_ctx), a * _np(noisy.x_q)
    y = a * _np(noisy.f) + (_np(noisy.y) - _np(noisy.f))
    pred = 1.5 / 12 * np.einsum("bn,bnd,bmd->bm", y[:, :12], X, Xq)
    assert abs(gd_curve - 0.5 * np.mean((pred - y[:, 12:]) ** 2)) <= 1e-10 * gd_curve


# ----------------------------------------------------------------------------------------------------------------
# effective preconditioner and half_mse


def test_effective_preconditioner_of_construction():
    eta = 1.3
    a = effective_preconditioner(construct_gd(D, N, [eta]))
    np.testing.assert_allclose(_np(a), eta / N * np.eye(D), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(N * _np(a), eta * np.eye(D), rtol=1e-14, atol=1e-15)


def test_effective_preconditioner_predicts_a_gd_like_model():
    # A one-layer model with the neglected blocks zero (W_KQ's y-row, W_PV's y-row on x): ŷ = x_qᵀ (A/N) Xᵀy
    # exactly, with A/N what effective_preconditioner returns, for a non-symmetric x-block (orientation).
    model = LSA(ModelConfig(init_scale=1.0), D, generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        w = model.weights[0]
        w.W_K[0] = torch.eye(D + 1, dtype=torch.float64)
        w.W_Q[0, D, :] = 0.0
        w.P[0] = torch.eye(D + 1, dtype=torch.float64)
        w.W_V[0, D, :D] = 0.0
    p = _prompts(batch=8)
    a_over_n = _np(effective_preconditioner(model))
    expected = np.einsum("bmd,de,bne,bn->bm", _np(p.x_q), a_over_n, _np(p.x_ctx), _np(p.y_ctx))
    np.testing.assert_allclose(_np(model.predict_prompts(p)), expected, rtol=1e-10, atol=1e-12)
    assert not np.allclose(a_over_n, a_over_n.T)
    with pytest.raises(ValueError, match="one layer"):
        effective_preconditioner(construct_gd(D, N, [1.0, 1.0]))


def test_half_mse_noisy_and_noiseless():
    sigma2 = 0.4
    p = _prompts(batch=4000, noise_var=sigma2, n_queries=2, n=12)
    pred = _np(OLS().predict(p.x_ctx, p.y_ctx, p.x_q))
    yq, fq = _np(p.y_q), _np(p.f_q)
    noisy, clean = half_mse(OLS(), p), half_mse(OLS(), p, noiseless=True)
    assert abs(noisy - 0.5 * np.mean((pred - yq) ** 2)) <= 1e-10 * noisy
    assert abs(clean - 0.5 * np.mean((pred - fq) ** 2)) <= 1e-10 * clean
    # ŷ does not depend on the query noise: E[noisy − clean] = σ²/2; per-prompt differences give the SE
    diff = (0.5 * ((pred - yq) ** 2 - (pred - fq) ** 2)).mean(axis=1)
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    assert abs((noisy - clean) - sigma2 / 2) < 4 * se
    quiet = _prompts(batch=16)
    assert half_mse(OLS(), quiet) == half_mse(OLS(), quiet, noiseless=True)
