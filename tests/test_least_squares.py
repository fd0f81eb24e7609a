"""OLS, ridge and Bayes learners against naive numpy references, one prompt (and one prefix) at a time.

References, written from the math: OLS = numpy.linalg.lstsq on the present rows (the min-norm solution); ridge =
numpy.linalg.solve(XᵀX + λI, Xᵀy); Bayes = the Gaussian posterior Σ_post = (XᵀX/σ² + Σ_w⁻¹)⁻¹ by numpy inverses
(σ² = 0: the min-Σ_w⁻¹-norm interpolant through numpy.linalg.pinv). Tolerance: 1e-5 relative to the largest
reference value, in float64.
"""

from functools import partial

import numpy as np
import pytest
import torch
from reference_checks import as_tensor as _t
from reference_checks import assert_rel_close
from reference_checks import per_prefix as _per_prefix
from reference_checks import per_prompt as _per_prompt

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.least_squares import (
    OLS,
    Bayes,
    Ridge,
    ols_prefix_weights_eigh,
    ols_weights,
    posterior_cholesky,
    posterior_from_stats,
    prefix_stats,
    ridge_weights,
)
from iclab.algorithms.ls_prefix import prefix_conditioning
from iclab.algorithms.registry import make_learner
from iclab.config import task_config
from iclab.tasks.linear import LinearRegressionTask

_close = partial(assert_rel_close, rtol=1e-5)

SHAPES = [(0, 4), (1, 4), (3, 6), (6, 6), (12, 5), (7, 1)]  # (n, d): empty, n < d, n = d, n > d, d = 1
PREFIX_SHAPES = [(1, 3), (5, 1), (6, 4), (9, 8)]  # (T, d): every prefix length t < d, = d, > d


def _case(n, d, seed, batch=4, m=2):
    """Gaussian data, a random mask with prompt 0 complete and prompt 1 empty."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, n, d))
    y = rng.standard_normal((batch, n))
    Xq = rng.standard_normal((batch, m, d))
    mask = rng.random((batch, n)) < 0.7
    mask[0] = True
    if batch > 1:
        mask[1] = False
    return X, y, Xq, mask


def naive_ols(X, y, Xq):
    if X.shape[0] == 0:
        return np.zeros(Xq.shape[0])
    return Xq @ np.linalg.lstsq(X, y, rcond=None)[0]


def naive_ridge(lam):
    def fn(X, y, Xq):
        d = Xq.shape[1]
        return Xq @ np.linalg.solve(X.T @ X + lam * np.eye(d), X.T @ y)

    return fn


def naive_bayes(sigma2, prior):
    """Posterior predictive (mean, variance of a new noisy y) for prior covariance `prior` [d, d]."""

    def fn(X, y, Xq):
        if sigma2 > 0:
            post = np.linalg.inv(X.T @ X / sigma2 + np.linalg.inv(prior))
            mean_w = post @ X.T @ y / sigma2
        else:  # noiseless: w = L z with z the min-norm solution of (XL) z = y; Σ_post = L (I − Z⁺Z) Lᵀ
            L = np.linalg.cholesky(prior)
            Z = X @ L
            Zp = np.linalg.pinv(Z) if X.shape[0] else np.zeros((L.shape[0], 0))
            mean_w = L @ Zp @ y
            post = L @ (np.eye(L.shape[0]) - Zp @ Z) @ L.T
        return Xq @ mean_w, sigma2 + np.einsum("md,de,me->m", Xq, post, Xq)

    return fn


# ----------------------------------------------------------------------------------------------------------------
# OLS


@pytest.mark.parametrize("n,d", SHAPES)
def test_ols_matches_lstsq_on_masked_contexts(n, d):
    X, y, Xq, mask = _case(n, d, seed=10 * n + d)
    expected = _per_prompt(naive_ols, X, y, Xq, mask)
    _close(OLS().predict(_t(X), _t(y), _t(Xq), _t(mask)), expected)
    # float32 inputs computed in float64: the reference sees the same rounded inputs
    X32, y32, q32 = (_t(a).float() for a in (X, y, Xq))
    out = OLS(dtype=torch.float64).predict(X32, y32, q32, _t(mask))
    assert out.dtype == torch.float32
    ref32 = _per_prompt(naive_ols, X32.double().numpy(), y32.double().numpy(), q32.double().numpy(), mask)
    _close(out, ref32, rtol=1e-6)


@pytest.mark.parametrize("T,d", PREFIX_SHAPES)
def test_ols_prefix_fast_path_matches_generic_path_and_naive_loop(T, d):
    rng = np.random.default_rng(T * 10 + d)
    x, y = rng.standard_normal((3, T, d)), rng.standard_normal((3, T))
    expected = _per_prefix(naive_ols, x, y)
    learner = OLS()
    _close(learner.predict_prefixes(_t(x), _t(y)), expected)
    _close(MaskedLearner.scalar_prefixes(learner, _t(x), _t(y)), expected)
    _close(np.einsum("btd,btd->bt", x, ols_prefix_weights_eigh(_t(x), _t(y)).numpy()), expected)  # eigh reference


def _near_singular(kind, rng):
    if kind == "duplicate rows":  # n > d with rank 3 < d = 5 and repeated points
        base = rng.standard_normal((3, 5))
        return np.concatenate([base, base, base[:1]])
    if kind == "n=d, tiny singular value":
        U, _ = np.linalg.qr(rng.standard_normal((6, 6)))
        V, _ = np.linalg.qr(rng.standard_normal((6, 6)))
        return U @ np.diag([3.0, 2.0, 1.0, 0.5, 0.2, 1e-7]) @ V.T
    if kind == "n<d, nearly collinear":
        row = rng.standard_normal(6)
        return np.stack([row, row + 1e-9 * rng.standard_normal(6), rng.standard_normal(6)])
    return np.zeros((4, 3))  # all-zero context


@pytest.mark.parametrize("kind", ["duplicate rows", "n=d, tiny singular value", "n<d, nearly collinear", "zeros"])
def test_ols_near_singular_is_finite_and_the_min_norm_solution(kind):
    rng = np.random.default_rng(7)
    X = np.stack([_near_singular(kind, rng) for _ in range(2)])
    y = rng.standard_normal(X.shape[:2])
    Xq = rng.standard_normal((2, 3, X.shape[2]))
    mask = np.ones(X.shape[:2], dtype=bool)
    expected = _per_prompt(naive_ols, X, y, Xq, mask)
    learner = make_learner("ols:float64=1")
    # float32 inputs: the reference sees the same rounded inputs (rounding X moves a 1e-7 singular value by ~10%)
    X32, y32, q32 = (_t(a).float() for a in (X, y, Xq))
    ref32 = _per_prompt(naive_ols, X32.double().numpy(), y32.double().numpy(), q32.double().numpy(), mask)
    _close(learner.predict(X32, y32, q32), ref32, rtol=1e-5)
    _close(learner.predict(_t(X), _t(y), _t(Xq)), expected)
    _close(ols_weights(_t(X), _t(y)), np.stack([np.linalg.lstsq(X[b], y[b], rcond=None)[0] for b in range(2)]))
    # the prefix fast path sees the same near-singular prefixes and must recompute them exactly
    xs, ys = np.concatenate([X, Xq], axis=1), np.concatenate([y, rng.standard_normal((2, 3))], axis=1)
    _close(learner.predict_prefixes(_t(xs), _t(ys)), _per_prefix(naive_ols, xs, ys))
    _close(
        np.einsum("btd,btd->bt", xs, ols_prefix_weights_eigh(_t(xs), _t(ys)).numpy()), _per_prefix(naive_ols, xs, ys)
    )


def test_ols_empty_context_and_vector_targets():
    X, y, Xq, _ = _case(0, 3, seed=1)
    assert torch.equal(OLS().predict(_t(X), _t(y), _t(Xq)), torch.zeros(4, 2, dtype=torch.float64))
    # vector targets: each output column is its own least-squares problem
    rng = np.random.default_rng(2)
    X, Y, Xq = rng.standard_normal((2, 7, 3)), rng.standard_normal((2, 7, 2)), rng.standard_normal((2, 4, 3))
    expected = np.stack([Xq[b] @ np.linalg.lstsq(X[b], Y[b], rcond=None)[0] for b in range(2)])
    _close(OLS().predict(_t(X), _t(Y), _t(Xq)), expected)
    x, Yp = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 2))
    cols = np.stack([_per_prefix(naive_ols, x, Yp[..., k]) for k in range(2)], axis=-1)
    _close(OLS().predict_prefixes(_t(x), _t(Yp)), cols)


# ----------------------------------------------------------------------------------------------------------------
# ridge


@pytest.mark.parametrize("lam", [1e-3, 0.5, 10.0])
@pytest.mark.parametrize("n,d", SHAPES)
def test_ridge_matches_numpy_solve(n, d, lam):
    X, y, Xq, mask = _case(n, d, seed=n + 100 * d)
    _close(Ridge(lam).predict(_t(X), _t(y), _t(Xq), _t(mask)), _per_prompt(naive_ridge(lam), X, y, Xq, mask))
    ref_w = np.stack([np.linalg.solve(X[b].T @ X[b] + lam * np.eye(d), X[b].T @ y[b]) for b in range(len(X))])
    _close(ridge_weights(_t(X), _t(y), lam), ref_w)


@pytest.mark.parametrize("T,d", PREFIX_SHAPES)
def test_ridge_prefix_fast_path_matches_generic_path_and_naive_loop(T, d):
    rng = np.random.default_rng(T + d)
    x, y = rng.standard_normal((3, T, d)), rng.standard_normal((3, T))
    learner = Ridge(0.3)
    expected = _per_prefix(naive_ridge(0.3), x, y)
    _close(learner.predict_prefixes(_t(x), _t(y)), expected)
    _close(MaskedLearner.scalar_prefixes(learner, _t(x), _t(y)), expected)


def test_prefix_stats_are_exclusive_cumulative_sums():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5))
    S, b = prefix_stats(_t(x), _t(y))
    for t in range(5):
        _close(S[:, t], np.einsum("bnd,bne->bde", x[:, :t], x[:, :t]) if t else np.zeros((2, 3, 3)))
        _close(b[:, t], np.einsum("bnd,bn->bd", x[:, :t], y[:, :t]) if t else np.zeros((2, 3)))
    assert torch.count_nonzero(S[:, 0]) == 0


@pytest.mark.parametrize("lam", [0.0, -1.0, float("inf"), float("nan")])
def test_ridge_rejects_bad_lambda(lam):
    with pytest.raises(ValueError, match="lambda"):
        Ridge(lam)


# ----------------------------------------------------------------------------------------------------------------
# Bayes


def _prior(kind, d, rng):
    if kind == "isotropic":
        return 0.7, 0.7 * np.eye(d)
    if kind == "diagonal":
        diag = rng.uniform(0.2, 2.0, d)
        return diag, np.diag(diag)
    A = rng.standard_normal((d, d))
    full = A @ A.T + 0.5 * np.eye(d)
    return full, full


@pytest.mark.parametrize("sigma2", [0.0, 0.25])
@pytest.mark.parametrize("prior_kind", ["isotropic", "diagonal", "full"])
@pytest.mark.parametrize("n,d", SHAPES)
def test_bayes_mean_and_variance_match_numpy(n, d, prior_kind, sigma2):
    X, y, Xq, mask = _case(n, d, seed=3 * n + d)
    arg, prior = _prior(prior_kind, d, np.random.default_rng(d))
    learner = Bayes(sigma2, torch.as_tensor(arg) if prior_kind != "isotropic" else arg)
    mean, var = learner.predict_with_variance(_t(X), _t(y), _t(Xq), _t(mask))
    ref_mean, ref_var = _per_prompt(naive_bayes(sigma2, prior), X, y, Xq, mask)
    _close(mean, ref_mean)
    _close(var, ref_var)
    assert (var >= 0).all()
    _close(learner.predict(_t(X), _t(y), _t(Xq), _t(mask)), ref_mean)
    # empty context (prompt 1): the prior predictive
    _close(var[1], sigma2 + np.einsum("md,de,me->m", Xq[1], prior, Xq[1]))


@pytest.mark.parametrize("sigma2", [0.0, 0.25])
@pytest.mark.parametrize("T,d", PREFIX_SHAPES)
def test_bayes_prefix_fast_path_matches_generic_path_and_naive_loop(T, d, sigma2):
    rng = np.random.default_rng(T * d)
    x, y = rng.standard_normal((3, T, d)), rng.standard_normal((3, T))
    diag = rng.uniform(0.5, 2.0, d)
    learner = Bayes(sigma2, torch.as_tensor(diag))
    naive = naive_bayes(sigma2, np.diag(diag))
    B = x.shape[0]
    ref = [[naive(x[b, :t], y[b, :t], x[b, t : t + 1]) for t in range(T)] for b in range(B)]
    ref_mean = np.array([[r[0][0] for r in row] for row in ref])
    ref_var = np.array([[r[1][0] for r in row] for row in ref])
    mean, var = learner.predict_prefixes_with_variance(_t(x), _t(y))
    _close(mean, ref_mean)
    _close(var, ref_var)
    _close(learner.predict_prefixes(_t(x), _t(y)), ref_mean)
    _close(MaskedLearner.scalar_prefixes(learner, _t(x), _t(y)), ref_mean)


def test_bayes_isotropic_mean_is_ridge_and_vector_targets():
    X, y, Xq, mask = _case(5, 4, seed=4)
    args = (_t(X), _t(y), _t(Xq), _t(mask))
    _close(Bayes(0.3, 1.5).predict(*args), Ridge(0.3 / 1.5).predict(*args).numpy(), rtol=1e-10)
    Y = np.stack([y, 2 * y - 1], axis=-1)
    mean, var = Bayes(0.3, 1.5).predict_with_variance(_t(X), _t(Y), _t(Xq), _t(mask))
    assert mean.shape == var.shape == (4, 2, 2)
    ref = _per_prompt(naive_bayes(0.3, 1.5 * np.eye(4)), X, y, Xq, mask)
    _close(mean[..., 0], ref[0])
    _close(var[..., 1], ref[1])


@pytest.mark.parametrize("sigma2,n", [(0.5, 3), (0.5, 10), (0.0, 3)])
def test_bayes_predictive_variance_is_calibrated_monte_carlo(sigma2, n):
    # Draw from the model the posterior assumes: w ~ N(0, Σ_w), x ~ N(0, I), y = wᵀx + ε, and a fresh y_q.
    # E[(y_q − mean)² / var] = 1 exactly; the MC mean of the ratio must be within 4 standard errors of 1.
    d, batch = 4, 20_000
    gen = torch.Generator().manual_seed(11)
    diag = torch.tensor([0.5, 1.0, 2.0, 0.25], dtype=torch.float64)
    w = torch.randn(batch, d, generator=gen, dtype=torch.float64) * diag.sqrt()
    x = torch.randn(batch, n + 1, d, generator=gen, dtype=torch.float64)
    y = torch.einsum("btd,bd->bt", x, w) + sigma2**0.5 * torch.randn(batch, n + 1, generator=gen, dtype=torch.float64)
    mean, var = Bayes(sigma2, diag).predict_with_variance(x[:, :n], y[:, :n], x[:, n:])
    z = ((y[:, n:] - mean) ** 2 / var).squeeze(-1)
    se = z.std().item() / batch**0.5
    assert abs(z.mean().item() - 1) < 4 * se, f"mean ratio {z.mean().item():.4f} ± {se:.4f}"


def test_bayes_rejects_bad_parameters():
    for noise in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="noise_var"):
            Bayes(noise, 1.0)
    for prior in (0.0, [1.0, -1.0], [[1.0, 2.0], [2.0, 1.0]], np.ones((2, 3))):
        with pytest.raises(ValueError, match="prior_var"):
            Bayes(0.1, prior if isinstance(prior, float) else torch.as_tensor(prior))
    with pytest.raises(ValueError, match="prior_var"):  # prior dimension ≠ d
        Bayes(0.1, torch.ones(3)).predict(torch.ones(1, 2, 4), torch.ones(1, 2), torch.ones(1, 1, 4))


# ----------------------------------------------------------------------------------------------------------------
# prefix fast path (one QR per prompt, `ls_prefix`) against the eigh references it replaced

REFERENCE_SHAPES = [(1, 3), (4, 6), (7, 6), (12, 5), (21, 20), (41, 20)]  # (T, d): t < d only, t = d, t > d


def _eigh_prefix_reference(learner, x, y):
    """The replaced path: cumulative sums and the eigendecomposition for every prefix → (mean, var) [B, T]."""
    S, b = prefix_stats(x, y)
    n = torch.arange(x.shape[1]).expand(x.shape[0], -1)
    mean, var = learner._posterior(S, b, x.unsqueeze(-2), n, exact=True)
    return mean.squeeze(-1).numpy(), var.squeeze(-1).numpy()


@pytest.mark.parametrize("T,d", REFERENCE_SHAPES)
def test_prefix_fast_paths_match_eigh_references_over_shapes(T, d):
    rng = np.random.default_rng(T + 7 * d)
    x, y = _t(rng.standard_normal((6, T, d))), _t(rng.standard_normal((6, T)))
    ref = np.einsum("btd,btd->bt", x.numpy(), ols_prefix_weights_eigh(x, y).numpy())
    _close(OLS().predict_prefixes(x, y), ref, rtol=1e-9)
    for sigma2 in (0.0, 0.25):
        for kind in ("isotropic", "diagonal", "full"):
            arg, _ = _prior(kind, d, np.random.default_rng(d))
            learner = Bayes(sigma2, torch.as_tensor(arg) if kind != "isotropic" else arg)
            ref_mean, ref_var = _eigh_prefix_reference(learner, x, y)
            mean, var = learner.predict_prefixes_with_variance(x, y)
            _close(mean, ref_mean, rtol=1e-9)
            _close(var, ref_var, rtol=1e-9)
    _close(Ridge(0.1).predict_prefixes(x, y), _eigh_prefix_reference(Ridge(0.1), x, y)[0], rtol=1e-9)


@pytest.mark.parametrize("sigma2", [0.0, 0.25])
@pytest.mark.parametrize("kind", ["duplicate rows", "n=d, tiny singular value", "n<d, nearly collinear", "zeros"])
def test_bayes_prefix_near_singular_is_finite_and_matches_eigh_reference(kind, sigma2):
    rng = np.random.default_rng(3)
    X = np.stack([_near_singular(kind, rng) for _ in range(2)])
    xs = _t(np.concatenate([X, rng.standard_normal((2, 3, X.shape[2]))], axis=1))
    ys = _t(rng.standard_normal(xs.shape[:2]))
    learner = Bayes(sigma2, torch.as_tensor(rng.uniform(0.5, 2.0, X.shape[2])))
    mean, var = learner.predict_prefixes_with_variance(xs, ys)
    ref_mean, ref_var = _eigh_prefix_reference(learner, xs, ys)
    _close(mean, ref_mean)
    _close(var, ref_var)


def test_prefix_conditioning_flags_what_it_cannot_vouch_for():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 9, 4))
    x[1, 2] = x[1, 0]  # duplicate: the first t > 2 points of prompt 1 never reach rank min(t, d) before t = 5
    x[2] = 0.0  # all-zero prompt
    x[0, 8] = 0.0  # a zero query after well-conditioned points: its prediction is exactly 0
    mean, var, trusted = prefix_conditioning(_t(x), _t(rng.standard_normal((3, 9))), 0.0)
    assert torch.isfinite(mean).all() and torch.isfinite(var).all()
    assert mean[0, 8] == 0 and var[0, 8] == 0 and (mean[2] == 0).all()
    assert trusted[0].all() and trusted[:, 0].all()  # well-conditioned prompt; t = 0 always
    assert not trusted[1, 3:].any() and trusted[1, :3].all()  # t > d bounded through the rank-deficient first d
    assert not trusted[2, 1:].any()
    # σ² > 0 and tiny: the prefixes before d stay trusted (their factor is well conditioned), the ones after are not
    _, _, trusted = prefix_conditioning(_t(x[:1]), _t(rng.standard_normal((1, 9))), 1e-14)
    assert trusted[0, :5].all() and not trusted[0, 5:].any()


def naive_posterior_svd(sigma2):
    """Isotropic N(0, I) prior, σ² > 0, through the SVD of X (no Gram matrix: accurate however small σ² is)."""

    def fn(X, y, Xq):
        d = Xq.shape[1]
        if X.shape[0] == 0:
            return np.zeros(len(Xq)), sigma2 + (Xq**2).sum(-1)
        U, s, Vt = np.linalg.svd(X, full_matrices=True)
        sp, uy = np.zeros(d), np.zeros(d)
        sp[: len(s)], uy[: len(s)] = s, (U.T @ y)[: len(s)]
        qv = Xq @ Vt.T  # [m, d]
        return qv @ (sp * uy / (sp**2 + sigma2)), sigma2 + sigma2 * (qv**2 / (sp**2 + sigma2)).sum(-1)

    return fn


def test_bayes_prefix_tiny_noise_is_accurate():
    # σ² far below ‖X‖²·eps^(1/2): the QR path keeps t ≤ d accurate, the prefixes after d go to the eigh path
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((3, 14, 6)), rng.standard_normal((3, 14))
    learner = Bayes(1e-12, 1.0)
    mean, var = learner.predict_prefixes_with_variance(_t(x), _t(y))
    ref = [[naive_posterior_svd(1e-12)(x[b, :t], y[b, :t], x[b, t : t + 1]) for t in range(14)] for b in range(3)]
    _close(mean, np.array([[r[0][0] for r in row] for row in ref]))
    _close(var, np.array([[r[1][0] for r in row] for row in ref]))


def test_noiseless_bayes_float32_prefixes_are_min_norm_least_squares():
    # Garg's d = 20, 41 points: float32 inputs are computed in float64 (the eigh path in float32 was off by O(1)
    # on square, ill-conditioned prefixes)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 41, 20, generator=g)
    y = torch.einsum("btd,bd->bt", x, torch.randn(64, 20, generator=g))
    expected = _per_prefix(naive_ols, x.double().numpy(), y.double().numpy())
    for learner in (Bayes(0.0, torch.ones(20)), Bayes(0.0, 2.0), OLS()):
        out = learner.predict_prefixes(x, y)
        assert out.dtype == torch.float32
        _close(out, expected, rtol=1e-6)


@pytest.mark.parametrize("prior_kind", ["isotropic", "full"])
@pytest.mark.parametrize("n,d", SHAPES)
def test_posterior_cholesky_matches_eigh_reference(n, d, prior_kind):
    X, y, Xq, mask = _case(n, d, seed=n + d)
    Xm, ym = X * mask[..., None], y * mask
    S, b = _t(np.einsum("bnd,bne->bde", Xm, Xm)), _t(np.einsum("bnd,bn->bd", Xm, ym))
    full = _prior("full", d, np.random.default_rng(1))[1]
    sqrt = None if prior_kind == "isotropic" else torch.linalg.cholesky(_t(full))
    for sigma2 in (1e-3, 0.25):
        mean, var = posterior_cholesky(S, b, _t(Xq), sigma2, sqrt)
        ref_mean, ref_var = posterior_from_stats(S, b, _t(Xq), sigma2, sqrt)
        _close(mean, ref_mean.numpy(), rtol=1e-9)
        _close(var, ref_var.numpy(), rtol=1e-9)


def test_posterior_cholesky_falls_back_where_the_factorisation_fails():
    # a rank-one S that round-off made slightly indefinite, and σ² = 1e-30 below that round-off: the second pivot is
    # negative, so that problem takes the eigh path (which clamps the eigenvalue at 0)
    S = torch.tensor([[[1.0, 1.0], [1.0, 1.0 - 1e-12]], [[2.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    b, x_q = torch.ones(2, 2, dtype=torch.float64), torch.randn(2, 3, 2, dtype=torch.float64)
    assert (torch.linalg.cholesky_ex(S + 1e-30 * torch.eye(2, dtype=torch.float64))[1] != 0).tolist() == [True, False]
    mean, var = posterior_cholesky(S, b, x_q, 1e-30)
    ref_mean, ref_var = posterior_from_stats(S, b, x_q, 1e-30)
    assert torch.isfinite(mean).all() and torch.isfinite(var).all()
    assert torch.equal(mean[0], ref_mean[0]) and torch.equal(var[0], ref_var[0])
    _close(mean[1], ref_mean[1].numpy(), rtol=1e-9)


# ----------------------------------------------------------------------------------------------------------------
# registry


def test_registry_names_and_parameters():
    task = LinearRegressionTask(task_config("linear", d=3, n_points=5, noise_var=0.2, w_scale=1.5, x_dist="gaussian"))
    for spec in ("ols", "ols:float64=1", "ridge:0.25", "ridge:0.25:float64=true", "bayes", "bayes:0.1:2"):
        assert make_learner(spec, task).name == spec
    assert make_learner("ols:float64=1").dtype == torch.float64 and make_learner("ols").dtype is None
    assert make_learner("ridge:0.25").lam == 0.25
    bayes = make_learner("bayes", task)
    assert bayes.noise_var == 0.2 and torch.allclose(bayes.prior_var, torch.full((3,), 2.25, dtype=torch.float64))
    explicit = make_learner("bayes:0.1:2")
    assert (explicit.noise_var, explicit.prior_var) == (0.1, 2.0)


def test_bare_ridge_is_the_tasks_bayes_ridge_and_ols_when_noiseless():
    noisy = LinearRegressionTask(task_config("linear", d=3, noise_var=0.5, w_scale=2.0, x_dist="gaussian"))
    assert make_learner("ridge", noisy).lam == 0.5 / 4.0
    assert make_learner("ridge", noisy).name == "ridge"
    noiseless = LinearRegressionTask(task_config("linear", d=3))
    assert isinstance(make_learner("ridge", noiseless), OLS)
