"""Closed forms in iclab.theory against Monte Carlo estimates written independently here in numpy.

Each MC check draws whole prompts (w, X, ε, x_q) from a seeded generator and asserts agreement within 3
standard errors of the mean; samples are drawn in chunks so memory stays small.
"""

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from iclab import theory

N_MC = 200_000
CHUNK = 25_000


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))


def _assert_close_mc(exact: float, values: np.ndarray, k: float = 3.0) -> None:
    mean, se = _mean_se(values)
    assert abs(mean - exact) < k * se, f"closed form {exact:.6g} vs MC {mean:.6g} ± {se:.2g}"


def _sample_x(rng, shape, x_dist: str, scale: float) -> np.ndarray:
    if x_dist == "uniform":
        return rng.uniform(-scale, scale, size=shape)
    return scale * rng.standard_normal(shape)


def _random_spd(rng, d: int, lo: float, hi: float) -> np.ndarray:
    """SPD matrix with a random eigenbasis and eigenvalues spread over [lo, hi]."""
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * np.linspace(lo, hi, d)) @ q.T


def _gd1_mc_parts(rng, *, d, n, tau2, sigma2, x_dist, scale):
    """Per-prompt (u, y_q) with u = (1/n) Σ_i y_i x_iᵀx_q, so the one-step GD prediction is η·u."""
    us, yqs = [], []
    for _ in range(N_MC // CHUNK):
        w = np.sqrt(tau2) * rng.standard_normal((CHUNK, d))
        x = _sample_x(rng, (CHUNK, n, d), x_dist, scale)  # (B, n, d)
        xq = _sample_x(rng, (CHUNK, d), x_dist, scale)  # (B, d)
        y = np.einsum("bnd,bd->bn", x, w) + np.sqrt(sigma2) * rng.standard_normal((CHUNK, n))
        yq = np.einsum("bd,bd->b", xq, w) + np.sqrt(sigma2) * rng.standard_normal(CHUNK)
        us.append(np.einsum("bn,bnd,bd->b", y, x, xq) / n)
        yqs.append(yq)
    return np.concatenate(us), np.concatenate(yqs)


# (d, n, tau2, sigma2, x_dist, scale)
GD1_SETTINGS = [
    (10, 10, 1.0, 0.0, "uniform", 0.5),  # von Oswald's code setting
    (5, 20, 1.0, 0.25, "gaussian", 1.0),
    (20, 7, 2.0, 0.1, "uniform", 1.0),
    (3, 4, 0.5, 1.0, "gaussian", 0.7),
]


@pytest.mark.parametrize(("x_dist", "scale"), [("uniform", 0.5), ("uniform", 2.0), ("gaussian", 1.3)])
def test_input_moments_match_mc(x_dist, scale):
    x = _sample_x(np.random.default_rng(0), 400_000, x_dist, scale)
    m2, m4 = theory.input_moments(x_dist, scale)
    _assert_close_mc(m2, x**2)
    _assert_close_mc(m4, x**4)


@pytest.mark.parametrize("setting", GD1_SETTINGS)
@pytest.mark.parametrize("eta_factor", [0.5, 1.0, 1.7])
def test_gd1_half_mse_matches_mc(setting, eta_factor):
    d, n, tau2, sigma2, x_dist, scale = setting
    m2, m4 = theory.input_moments(x_dist, scale)
    kw = dict(d=d, n=n, m2=m2, m4=m4, tau2=tau2, sigma2=sigma2)
    eta = eta_factor * theory.gd1_optimal_eta(**kw)
    u, yq = _gd1_mc_parts(np.random.default_rng(1), d=d, n=n, tau2=tau2, sigma2=sigma2, x_dist=x_dist, scale=scale)
    _assert_close_mc(theory.gd1_half_mse(eta, **kw), 0.5 * (eta * u - yq) ** 2)


def test_gd1_matches_reference_formula():
    # docs/papers.md §6 (τ = 1, σ = 0): ½ m₂ d [η² N⁻¹(m₄ + (N + d − 2)m₂²) − 2η m₂ + 1].
    d, n = 10, 10
    m2, m4 = theory.input_moments("uniform", 0.5)
    eta = np.linspace(0.0, 20.0, 11)
    ref = 0.5 * m2 * d * (eta**2 / n * (m4 + (n + d - 2) * m2**2) - 2 * eta * m2 + 1)
    np.testing.assert_allclose(theory.gd1_half_mse(eta, d=d, n=n, m2=m2, m4=m4), ref, rtol=1e-13)


@pytest.mark.parametrize("setting", GD1_SETTINGS[1:])
def test_gd1_optimal_eta_is_minimiser(setting):
    d, n, tau2, sigma2, x_dist, scale = setting
    m2, m4 = theory.input_moments(x_dist, scale)
    kw = dict(d=d, n=n, m2=m2, m4=m4, tau2=tau2, sigma2=sigma2)
    eta_star = theory.gd1_optimal_eta(**kw)
    res = minimize_scalar(lambda e: theory.gd1_half_mse(e, **kw), bracket=(0.0, 1.0), tol=1e-12)
    assert eta_star == pytest.approx(res.x, rel=1e-6)
    assert theory.gd1_optimal_half_mse(**kw) == pytest.approx(res.fun, rel=1e-12)
    assert res.fun == pytest.approx(0.5 * (tau2 * d * m2 * (1 - eta_star * m2) + sigma2), rel=1e-10)

    # The MC loss curve L(η) = E ½(ηu − y_q)² has derivative E[(ηu − y_q)u]: zero at η*, negative below,
    # positive above.
    u, yq = _gd1_mc_parts(np.random.default_rng(2), d=d, n=n, tau2=tau2, sigma2=sigma2, x_dist=x_dist, scale=scale)
    mean, se = _mean_se((eta_star * u - yq) * u)
    assert abs(mean) < 3 * se
    for factor, sign in [(0.6, -1.0), (1.5, 1.0)]:
        mean, se = _mean_se((factor * eta_star * u - yq) * u)
        assert sign * mean > 3 * se


@pytest.mark.parametrize("eta", [0.0, 0.3, 0.9])
def test_gd1_gaussian_equals_linear_family_with_scalar_a(eta):
    # For x ~ N(0, I) one GD step is the linear family with A = ηI; ½·MSE = ½(excess + σ²).
    d, n, tau2, sigma2 = 6, 9, 1.5, 0.4
    lam = theory.linear_family_mse(eta * np.eye(d), np.eye(d), tau2 * np.eye(d), n, sigma2)
    gd = theory.gd1_half_mse(eta, d=d, n=n, m2=1.0, m4=3.0, tau2=tau2, sigma2=sigma2)
    assert gd == pytest.approx(0.5 * (lam + sigma2), rel=1e-12)


def _linear_family_mc_err2(rng, As, Lambda, Sigma_w, n, sigma2) -> np.ndarray:
    """[len(As), N_MC] per-prompt (x_qᵀ A (1/n)Xᵀy − wᵀx_q)² (no query noise), x ~ N(0, Λ), w ~ N(0, Σ_w).

    Every A sees the same prompts (common random numbers), so differences between As have small variance."""
    d = Lambda.shape[0]
    L, Lw = np.linalg.cholesky(Lambda), np.linalg.cholesky(Sigma_w)
    out = []
    for _ in range(N_MC // CHUNK):
        w = rng.standard_normal((CHUNK, d)) @ Lw.T
        x = rng.standard_normal((CHUNK, n, d)) @ L.T  # (B, n, d)
        xq = rng.standard_normal((CHUNK, d)) @ L.T
        y = np.einsum("bnd,bd->bn", x, w) + np.sqrt(sigma2) * rng.standard_normal((CHUNK, n))
        v = np.einsum("bnd,bn->bd", x, y) / n  # (1/n) Xᵀy, (B, d)
        pred = np.einsum("bj,ajk,bk->ab", xq, np.stack(As), v)  # (len(As), B)
        out.append((pred - np.einsum("bd,bd->b", xq, w)) ** 2)
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize(("d", "n", "tau2", "sigma2"), [(10, 10, 1.0, 0.0), (5, 20, 1.0, 0.5), (8, 4, 2.0, 1.0)])
def test_mahankali_matches_mc(d, n, tau2, sigma2):
    alpha = theory.mahankali_preconditioner(d, n, sigma2, tau2)
    As = [alpha * np.eye(d)]
    err2 = _linear_family_mc_err2(np.random.default_rng(3), As, np.eye(d), tau2 * np.eye(d), n, sigma2)
    _assert_close_mc(theory.mahankali_excess_risk(d, n, sigma2, tau2), err2[0])


@pytest.mark.parametrize(("d", "n", "tau2", "sigma2"), [(10, 10, 1.0, 0.0), (5, 20, 0.5, 0.5), (3, 2, 2.0, 3.0)])
def test_optimal_preconditioner_reduces_to_mahankali(d, n, tau2, sigma2):
    A, risk = theory.optimal_preconditioner(np.eye(d), tau2 * np.eye(d), n, sigma2)
    np.testing.assert_allclose(A, theory.mahankali_preconditioner(d, n, sigma2, tau2) * np.eye(d), rtol=1e-12)
    assert risk == pytest.approx(theory.mahankali_excess_risk(d, n, sigma2, tau2), rel=1e-12)
    # x ~ N(0, Σ), w ~ N(0, Σ⁻¹): A* = n/(n + d + 1 + σ²)·Σ⁻¹ (pre-conditioned GD), same risk as τ² = 1.
    Sigma = _random_spd(np.random.default_rng(d), d, 0.3, 3.0)
    A, risk = theory.optimal_preconditioner(Sigma, np.linalg.inv(Sigma), n, sigma2)
    np.testing.assert_allclose(A, n / (n + d + 1 + sigma2) * np.linalg.inv(Sigma), rtol=1e-10, atol=1e-12)
    assert risk == pytest.approx(theory.mahankali_excess_risk(d, n, sigma2, 1.0), rel=1e-10)


@pytest.mark.parametrize(("d", "n", "sigma2"), [(3, 3, 0.0), (4, 8, 0.5), (6, 5, 2.0)])
def test_linear_family_mse_matches_mc_and_orientation(d, n, sigma2):
    rng = np.random.default_rng(10 + d)
    Lambda, Sigma_w = _random_spd(rng, d, 0.2, 3.0), _random_spd(rng, d, 0.1, 4.0)
    A_star, risk = theory.optimal_preconditioner(Lambda, Sigma_w, n, sigma2)
    assert theory.linear_family_mse(A_star, Lambda, Sigma_w, n, sigma2) == pytest.approx(risk, rel=1e-10)
    # A* = Σ_wΛG⁻¹ (docs/papers.md §6, computed here directly) is symmetric even though Σ_wΛ is not, so the
    # orientation of the optimum is moot ...
    G = (1 + 1 / n) * Lambda @ Sigma_w @ Lambda + (np.trace(Sigma_w @ Lambda) + sigma2) / n * Lambda
    assert np.abs(Sigma_w @ Lambda - Lambda @ Sigma_w).max() > 0.1
    np.testing.assert_allclose(A_star, Sigma_w @ Lambda @ np.linalg.inv(G), rtol=1e-9, atol=1e-12)
    # ... but for a non-symmetric A the formula must pick ŷ = x_qᵀ A (1/n)Xᵀy, not x_qᵀ Aᵀ (1/n)Xᵀy. Pick the
    # candidate B whose risk differs most from that of Bᵀ so the MC check has power.
    candidates = [A_star + rng.standard_normal((d, d)) / d for _ in range(10)]

    def risk_of(A):
        return theory.linear_family_mse(A, Lambda, Sigma_w, n, sigma2)

    B = max(candidates, key=lambda B: abs(risk_of(B) - risk_of(B.T)) / risk_of(B))
    As = [A_star, B, B.T]
    exact = [risk_of(A) for A in As]
    err2 = _linear_family_mc_err2(np.random.default_rng(4), As, Lambda, Sigma_w, n, sigma2)
    for e, v in zip(exact, err2):
        _assert_close_mc(e, v)
    # Paired differences have a much smaller standard error and single out the orientation.
    _assert_close_mc(exact[1] - exact[2], err2[1] - err2[2])
    assert abs(exact[1] - exact[2]) > 10 * _mean_se(err2[1] - err2[2])[1]


@pytest.mark.parametrize(("d", "n", "sigma2"), [(2, 1, 0.0), (5, 10, 0.3), (7, 3, 1.0)])
def test_optimal_preconditioner_beats_perturbations(d, n, sigma2):
    rng = np.random.default_rng(20 + d)
    Lambda, Sigma_w = _random_spd(rng, d, 0.5, 2.0), _random_spd(rng, d, 0.2, 1.5)
    A_star, risk = theory.optimal_preconditioner(Lambda, Sigma_w, n, sigma2)
    for _ in range(20):
        E = rng.standard_normal((d, d))
        for eps in (1e-3, 1e-1):
            assert theory.linear_family_mse(A_star + eps * E, Lambda, Sigma_w, n, sigma2) > risk
    res = minimize_scalar(
        lambda t: theory.linear_family_mse(t * np.eye(d), Lambda, Sigma_w, n, sigma2), bracket=(0.0, 1.0)
    )
    assert res.fun >= risk


@pytest.mark.parametrize("d", [2, 5])
def test_zfb_gamma_is_the_noiseless_optimum(d):
    rng = np.random.default_rng(30 + d)
    Lambda, n = _random_spd(rng, d, 0.3, 2.5), 7
    gamma = theory.zfb_gamma(Lambda, n)
    np.testing.assert_allclose(gamma, (1 + 1 / n) * Lambda + np.trace(Lambda) / n * np.eye(d), rtol=1e-14)
    A_star, risk = theory.optimal_preconditioner(Lambda, np.eye(d), n, 0.0)
    np.testing.assert_allclose(np.linalg.inv(gamma), A_star, rtol=1e-10, atol=1e-13)
    assert theory.zfb_excess_risk(Lambda, n, n) == pytest.approx(risk, rel=1e-10)
    # isotropic: Mahankali's noiseless optimum
    assert theory.zfb_excess_risk(np.eye(d), n, n) == pytest.approx(theory.mahankali_excess_risk(d, n, 0.0), rel=1e-12)


# (d, N train, M test, test covariance = factor·Λ_train or a fresh one (None), σ²)
@pytest.mark.parametrize(
    ("d", "n_train", "n_test", "test_factor", "sigma2"),
    [(3, 5, 12, None, 0.5), (4, 20, 4, 1.0, 0.0), (2, 8, 8, 2.0, 0.2)],
)
def test_zfb_excess_risk_matches_mc(d, n_train, n_test, test_factor, sigma2):
    rng = np.random.default_rng(40 + d)
    Lambda = _random_spd(rng, d, 0.3, 2.0)
    Lambda_test = _random_spd(rng, d, 0.5, 3.0) if test_factor is None else test_factor * Lambda
    exact = theory.zfb_excess_risk(Lambda, n_train, n_test, Lambda_test, sigma2)
    # The MC side builds Γ from its definition, independently of zfb_gamma.
    gamma = (1 + 1 / n_train) * Lambda + np.trace(Lambda) / n_train * np.eye(d)
    err2 = _linear_family_mc_err2(rng, [np.linalg.inv(gamma)], Lambda_test, np.eye(d), n_test, sigma2)
    _assert_close_mc(exact, err2[0])


def _debiased_mc_err2(rng, steps, *, L, d, sigma2, tau2, m2, n_mc=120_000) -> np.ndarray:
    """[len(steps), n_mc] per-prompt (c Σ_i y_i (x_i − x̄)ᵀx_q − wᵀx_q)², x ~ N(0, m₂I), same prompts for all c."""
    w = np.sqrt(tau2) * rng.standard_normal((n_mc, d))
    x = np.sqrt(m2) * rng.standard_normal((n_mc, L, d))  # (B, L, d)
    xq = np.sqrt(m2) * rng.standard_normal((n_mc, d))
    y = np.einsum("bld,bd->bl", x, w) + np.sqrt(sigma2) * rng.standard_normal((n_mc, L))
    centred = np.einsum("bl,bld->bd", y, x - x.mean(1, keepdims=True))  # Σ_i y_i (x_i − x̄), (B, d)
    u, target = np.einsum("bd,bd->b", centred, xq), np.einsum("bd,bd->b", w, xq)
    return (np.asarray(steps)[:, None] * u - target) ** 2


# (L, d, σ², τ², m₂): He et al.'s d = 5, σ² = 0.1, τ² = 1/d at L = 10; a noisy small case; a scaled-input case.
@pytest.mark.parametrize(
    ("L", "d", "sigma2", "tau2", "m2"), [(10, 5, 0.1, 0.2, 1.0), (4, 3, 1.0, 2.0, 0.5), (8, 6, 0.0, 1.0, 2.0)]
)
def test_debiased_gd_matches_mc(L, d, sigma2, tau2, m2):
    c_star = theory.debiased_gd_step(L, d, sigma2, tau2, m2)
    assert c_star == pytest.approx(1 / (m2 * (L + d) + sigma2 / tau2), rel=1e-14)
    steps = [c_star, 0.6 * c_star, 1.5 * c_star]
    exact = [theory.debiased_gd_excess_risk(L, d, sigma2, tau2, m2, step=c) for c in steps]
    assert exact[0] == pytest.approx(theory.debiased_gd_excess_risk(L, d, sigma2, tau2, m2), rel=1e-14)
    rho = sigma2 / (m2 * tau2)
    assert exact[0] == pytest.approx(m2 * tau2 * d * (d + 1 + rho) / (L + d + rho), rel=1e-12)
    assert exact[0] < min(exact[1:])
    err2 = _debiased_mc_err2(np.random.default_rng(50 + L), steps, L=L, d=d, sigma2=sigma2, tau2=tau2, m2=m2)
    for e, v in zip(exact, err2):
        _assert_close_mc(e, v)


def test_debiased_gd_is_mahankali_at_one_point_less():
    for L, d, sigma2, tau2 in [(2, 3, 0.0, 1.0), (11, 4, 0.3, 2.0), (40, 5, 0.1, 0.2)]:
        risk = theory.debiased_gd_excess_risk(L, d, sigma2, tau2)
        assert risk == pytest.approx(theory.mahankali_excess_risk(d, L - 1, sigma2, tau2), rel=1e-12)
        alpha = theory.mahankali_preconditioner(d, L - 1, sigma2, tau2)
        assert theory.debiased_gd_step(L, d, sigma2, tau2) * (L - 1) == pytest.approx(alpha, rel=1e-14)
    assert theory.debiased_gd_excess_risk(1, 3, 0.5, 2.0, m2=0.5) == 3.0  # one point: centred sum 0, ŷ = 0
    np.testing.assert_allclose(theory.debiased_gd_step(np.arange(1, 4), 2), 1 / np.arange(3.0, 6.0), rtol=1e-15)


@pytest.mark.parametrize(("d", "n", "sigma2"), [(5, 20, 0.5), (10, 30, 1.0), (3, 15, 0.2)])
def test_ols_excess_risk_matches_mc(d, n, sigma2):
    rng = np.random.default_rng(5)
    out = []
    for _ in range(N_MC // CHUNK):
        w = rng.standard_normal((CHUNK, d))
        x = rng.standard_normal((CHUNK, n, d))
        y = np.einsum("bnd,bd->bn", x, w) + np.sqrt(sigma2) * rng.standard_normal((CHUNK, n))
        w_hat = np.linalg.solve(x.transpose(0, 2, 1) @ x, np.einsum("bnd,bn->bd", x, y)[..., None])[..., 0]
        out.append(np.einsum("bd,bd->b", rng.standard_normal((CHUNK, d)), w_hat - w) ** 2)
    _assert_close_mc(theory.ols_excess_risk(d, n, sigma2), np.concatenate(out))


@pytest.mark.parametrize(("d", "n", "tau2", "sigma2"), [(20, 5, 1.0, 0.5), (30, 10, 1.0, 0.2), (15, 3, 2.0, 1.0)])
def test_min_norm_excess_risk_matches_mc(d, n, tau2, sigma2):
    rng = np.random.default_rng(6)
    out = []
    for _ in range(N_MC // CHUNK):
        w = np.sqrt(tau2) * rng.standard_normal((CHUNK, d))
        x = rng.standard_normal((CHUNK, n, d))
        y = np.einsum("bnd,bd->bn", x, w) + np.sqrt(sigma2) * rng.standard_normal((CHUNK, n))
        coef = np.linalg.solve(x @ x.transpose(0, 2, 1), y[..., None])  # (XXᵀ)⁻¹y, (B, n, 1)
        w_hat = np.einsum("bnd,bn->bd", x, coef[..., 0])
        out.append(np.einsum("bd,bd->b", rng.standard_normal((CHUNK, d)), w_hat - w) ** 2)
    _assert_close_mc(theory.min_norm_excess_risk(d, n, sigma2, tau2), np.concatenate(out))


@pytest.mark.parametrize(("sigma2", "tau2"), [(0.5, 1.0), (0.1, 3.0)])
def test_ridge_bayes_lambda_gives_posterior_mean(sigma2, tau2):
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((12, 5)), rng.standard_normal(12)
    posterior_mean = np.linalg.solve(x.T @ x / sigma2 + np.eye(5) / tau2, x.T @ y / sigma2)
    lam = theory.ridge_bayes_lambda(sigma2, tau2)
    np.testing.assert_allclose(np.linalg.solve(x.T @ x + lam * np.eye(5), x.T @ y), posterior_mean, rtol=1e-10)


@pytest.mark.parametrize(
    ("fn", "kwargs", "match"),
    [
        (theory.input_moments, dict(x_dist="laplace", scale=1.0), "uniform, gaussian"),
        (theory.input_moments, dict(x_dist="uniform", scale=0.0), "scale"),
        (theory.gd1_half_mse, dict(eta=0.1, d=0, n=3, m2=1.0, m4=3.0), "d must"),
        (theory.gd1_half_mse, dict(eta=0.1, d=3, n=2.5, m2=1.0, m4=3.0), "n must"),
        (theory.gd1_optimal_eta, dict(d=3, n=3, m2=1.0, m4=0.5), "Jensen"),
        (theory.gd1_optimal_eta, dict(d=3, n=3, m2=1.0, m4=3.0, sigma2=-1.0), "sigma2"),
        (theory.mahankali_preconditioner, dict(d=3, n=3, sigma2=0.1, tau2=0.0), "tau2"),
        (theory.ols_excess_risk, dict(d=5, n=6, sigma2=1.0), "n > d"),
        (theory.min_norm_excess_risk, dict(d=5, n=4, sigma2=1.0), "n < d"),
        (theory.ridge_bayes_lambda, dict(sigma2=1.0, tau2=-1.0), "tau2"),
        (
            theory.optimal_preconditioner,
            dict(Lambda=np.eye(3), Sigma_w=np.eye(2), n=3, sigma2=0.0),
            r"\[d, d\]",
        ),
        (
            theory.optimal_preconditioner,
            dict(Lambda=-np.eye(2), Sigma_w=np.eye(2), n=3, sigma2=0.0),
            "definite",
        ),
        (
            theory.optimal_preconditioner,
            dict(Lambda=np.eye(2), Sigma_w=np.diag([1.0, -1.0]), n=3, sigma2=0.0),
            "semi-definite",
        ),
        (
            theory.optimal_preconditioner,
            dict(Lambda=np.eye(2), Sigma_w=np.triu(np.ones((2, 2))), n=3, sigma2=0.0),
            "symmetric",
        ),
        (theory.zfb_gamma, dict(Lambda=np.eye(2), n_train=0), "n must"),
        (
            theory.zfb_excess_risk,
            dict(Lambda_train=np.eye(2), n_train=3, n_test=3, Lambda_test=np.eye(3)),
            "Lambda_test",
        ),
        (theory.debiased_gd_step, dict(L=3, d=2, tau2=0.0), "tau2"),
        (theory.debiased_gd_step, dict(L=3, d=2, m2=-1.0), "m2"),
        (theory.debiased_gd_excess_risk, dict(L=0, d=2), "L must"),
        (
            theory.linear_family_mse,
            dict(A=np.eye(3), Lambda=np.eye(2), Sigma_w=np.eye(2), n=3, sigma2=0.0),
            "A must",
        ),
    ],
)
def test_bad_arguments_raise(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(**kwargs)
