"""Exact Wishart spectra (iclab.theory_wishart) and the risks built on them in iclab.theory: k GD steps, ridge at
any λ and the Bayes risk. Exact identities are checked to rounding; the risks against Monte Carlo written here in
numpy, within 3 standard errors (the closed forms are exact at finite n, d: no bias allowance).

The MC samples average out x_q and ε_q analytically (E over them of the squared error given ŵ, w is m₂‖ŵ − w‖²),
which keeps the estimator unbiased for the same quantity and cuts its variance.
"""

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from iclab import theory
from iclab.theory_wishart import (
    iid_trace_moments,
    sample_cov_trace_moments,
    wishart_spectrum_rule,
    wishart_trace_moments,
)

DN = [(1, 1), (5, 5), (3, 8), (8, 3), (7, 4), (10, 11), (30, 30)]


def _assert_close_mc(exact: float, values: np.ndarray, k: float = 3.0) -> None:
    mean, se = float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))
    assert abs(mean - exact) < k * se, f"closed form {exact:.6g} vs MC {mean:.6g} ± {se:.2g}"


def test_wishart_trace_moments_known_values():
    for d, n in DN:
        m = wishart_trace_moments(3, d, n)
        assert m == (d, n * d, n * d * (n + d + 1), n * d * (n * n + d * d + 3 * n * d + 3 * n + 3 * d + 4))


@pytest.mark.parametrize(("d", "n"), DN)
def test_moments_agree_three_ways(d, n):
    exact = wishart_trace_moments(8, d, n)
    # index enumeration with Gaussian coordinate moments (m − 1)!! is an independent exact route
    gauss = [math.prod(range(1, m, 2)) if m % 2 == 0 else 0 for m in range(13)]
    assert iid_trace_moments(6, d, n, gauss) == exact[:7]
    # the quadrature of the one-point density integrates polynomials to rounding
    y, w = wishart_spectrum_rule(d, n)
    p = min(d, n)
    assert w.sum() == pytest.approx(p, rel=1e-13)
    for j in range(1, 9):
        assert (w * y**j).sum() == pytest.approx(exact[j], rel=1e-12)
    if max(d, n) > p + 1:  # inverse-Wishart mean: E tr S⁻¹ over the non-zero spectrum = p/(q − p − 1)
        assert (w / y).sum() == pytest.approx(p / (max(d, n) - p - 1), rel=1e-12)


def test_uniform_moments_small_cases():
    # d = n = 1, x ~ U(−a, a): E tr Ŝ^j = E x^{2j} = a^{2j}/(2j + 1)
    assert sample_cov_trace_moments(3, 1, 1, "uniform", 0.5) == [1, Fraction(1, 12), Fraction(1, 80), Fraction(1, 448)]
    # E tr Ŝ² = d(m₄ + (n + d − 2)m₂²)/n (docs/papers.md §6)
    d, n, a = 4, 3, 0.75
    m2, m4 = theory.input_moments("uniform", a)
    assert float(sample_cov_trace_moments(2, d, n, "uniform", a)[2]) == pytest.approx(
        d * (m4 + (n + d - 2) * m2**2) / n, rel=1e-14
    )


def test_resolvent_matches_one_dimensional_quadrature():
    # d = 1: S = χ²_n, E 1/(S + λ) by adaptive quadrature against the χ² density
    from scipy.integrate import quad
    from scipy.stats import chi2

    for n in (1, 2, 5):
        y, w = wishart_spectrum_rule(1, n)
        for lam in (1e-6, 1e-2, 1.0):

            def integrand(u, n=n, lam=lam):  # in u = √s, smooth at 0
                return 2 * u * chi2.pdf(u * u, n) / (u * u + lam)

            pieces = [(0, 1e-3), (1e-3, 1.0), (1.0, 40.0)]
            ref = sum(quad(integrand, lo, hi, epsabs=0, epsrel=1e-12, limit=200)[0] for lo, hi in pieces)
            assert (w / (y + lam)).sum() == pytest.approx(ref, rel=1e-10)


# ---------------------------------------------------------------------------------------------------------- ridge


def _ridge_mc(rng, lams, *, d, n, sigma2, tau2, n_mc=120_000, chunk=20_000) -> np.ndarray:
    """[len(lams), n_mc] per-prompt ‖ŵ_λ − w‖², ŵ_λ = (XᵀX + λI)⁻¹Xᵀy, the same prompts for every λ."""
    out = []
    for _ in range(n_mc // chunk):
        w = np.sqrt(tau2) * rng.standard_normal((chunk, d))
        x = rng.standard_normal((chunk, n, d))
        y = np.einsum("bnd,bd->bn", x, w) + np.sqrt(sigma2) * rng.standard_normal((chunk, n))
        s, v = np.linalg.eigh(x.transpose(0, 2, 1) @ x)  # (B, d), (B, d, d)
        b = np.einsum("bdk,bnd,bn->bk", v, x, y)  # Vᵀ Xᵀy
        wv = np.einsum("bdk,bd->bk", v, w)  # Vᵀ w
        out.append(np.stack([((b / (s + lam) - wv) ** 2).sum(-1) for lam in lams]))
    return np.concatenate(out, axis=1)


# (d, n, σ², τ²): square, n < d, n > d, n ≈ d with small noise
@pytest.mark.parametrize(
    ("d", "n", "sigma2", "tau2"), [(5, 5, 0.5, 1.0), (12, 5, 0.2, 1.0), (4, 12, 1.0, 2.0), (8, 9, 0.05, 1.0)]
)
def test_ridge_and_bayes_risk_match_mc(d, n, sigma2, tau2):
    lam_bayes = theory.ridge_bayes_lambda(sigma2, tau2)
    lams = [lam_bayes, 0.2 * lam_bayes, 3.0]
    exact = [theory.ridge_excess_risk(lam, d, n, sigma2, tau2) for lam in lams]
    assert exact[0] == pytest.approx(theory.bayes_ridge_excess_risk(d, n, sigma2, tau2), rel=1e-14)
    assert exact[0] < min(exact[1:])  # the posterior mean is optimal
    err2 = _ridge_mc(np.random.default_rng(60 + d + n), lams, d=d, n=n, sigma2=sigma2, tau2=tau2)
    for e, v in zip(exact, err2):
        _assert_close_mc(e, v)


def test_ridge_limits():
    # λ → 0 is OLS for n > d + 1 and min-norm for n < d − 1; σ² = 0 Bayes is the unseen-directions term.
    assert theory.ridge_excess_risk(0.0, 5, 20, 0.5) == pytest.approx(theory.ols_excess_risk(5, 20, 0.5), rel=1e-12)
    assert theory.ridge_excess_risk(0.0, 20, 5, 0.5, 2.0) == pytest.approx(
        theory.min_norm_excess_risk(20, 5, 0.5, 2.0), rel=1e-12
    )
    assert theory.ridge_excess_risk(1e-9, 5, 20, 0.5) == pytest.approx(theory.ols_excess_risk(5, 20, 0.5), rel=1e-7)
    assert theory.bayes_ridge_excess_risk(8, 5, 0.0, 1.5) == pytest.approx(1.5 * 3, rel=1e-14)
    assert theory.bayes_ridge_excess_risk(5, 8, 0.0) == 0.0
    # λ → ∞ predicts 0: risk τ²d
    assert theory.ridge_excess_risk(1e9, 6, 4, 1.0, 2.0) == pytest.approx(12.0, rel=1e-6)


# ------------------------------------------------------------------------------------------------------ k GD steps


def _gdk_mc(rng, etas, k, *, d, n, tau2, sigma2, x_dist, scale, n_mc=100_000, chunk=25_000) -> np.ndarray:
    """[len(etas), n_mc] per-prompt ½(m₂‖ŵ_k − w‖² + σ²) after k GD steps of size η from 0, same prompts for all η."""
    m2 = scale**2 if x_dist == "gaussian" else scale**2 / 3
    out = []
    for _ in range(n_mc // chunk):
        w = np.sqrt(tau2) * rng.standard_normal((chunk, d))
        shape = (chunk, n, d)
        x = scale * rng.standard_normal(shape) if x_dist == "gaussian" else rng.uniform(-scale, scale, shape)
        y = np.einsum("bnd,bd->bn", x, w) + np.sqrt(sigma2) * rng.standard_normal((chunk, n))
        rows = []
        for eta in etas:
            w_hat = np.zeros_like(w)
            for _ in range(k):
                grad = np.einsum("bn,bnd->bd", np.einsum("bnd,bd->bn", x, w_hat) - y, x) / n
                w_hat = w_hat - eta * grad
            rows.append(0.5 * (m2 * ((w_hat - w) ** 2).sum(-1) + sigma2))
        out.append(np.stack(rows))
    return np.concatenate(out, axis=1)


# (k, d, n, τ², σ², x_dist, scale)
GDK_SETTINGS = [
    (2, 5, 10, 1.0, 0.0, "gaussian", 1.0),
    (3, 8, 4, 1.0, 0.5, "gaussian", 1.0),
    (2, 3, 20, 2.0, 1.0, "gaussian", 0.7),
    (3, 4, 6, 0.5, 0.25, "gaussian", 1.2),
    (2, 10, 10, 1.0, 0.0, "uniform", 0.5),  # von Oswald's setting
    (3, 4, 6, 1.0, 0.3, "uniform", 1.0),
    (3, 6, 3, 2.0, 0.1, "uniform", 0.8),
]


@pytest.mark.parametrize("setting", GDK_SETTINGS)
def test_gdk_half_mse_matches_mc(setting):
    k, d, n, tau2, sigma2, x_dist, scale = setting
    kw = dict(tau2=tau2, sigma2=sigma2, x_dist=x_dist, scale=scale)
    eta_star = theory.gdk_optimal_eta(k, d, n, **kw)
    etas = [eta_star, 0.5 * eta_star, 1.3 * eta_star]
    exact = theory.gdk_half_mse(np.array(etas), k, d, n, **kw)
    assert exact[0] < min(exact[1:])
    mc = _gdk_mc(np.random.default_rng(70 + d + n + k), etas, k, d=d, n=n, **kw)
    for e, v in zip(exact, mc):
        _assert_close_mc(e, v)


@pytest.mark.parametrize(("d", "n", "tau2", "sigma2"), [(10, 10, 1.0, 0.0), (5, 20, 1.0, 0.25), (20, 7, 2.0, 0.1)])
def test_gdk_one_step_is_gd1(d, n, tau2, sigma2):
    eta = np.linspace(0.0, 1.5, 7)
    for x_dist, scale in [("gaussian", 1.0), ("gaussian", 0.6), ("uniform", 0.5), ("uniform", 2.0)]:
        m2, m4 = theory.input_moments(x_dist, scale)
        gd1 = dict(d=d, n=n, m2=m2, m4=m4, tau2=tau2, sigma2=sigma2)
        gdk = dict(tau2=tau2, sigma2=sigma2, x_dist=x_dist, scale=scale)
        np.testing.assert_allclose(theory.gdk_half_mse(eta / m2, 1, d, n, **gdk), theory.gd1_half_mse(eta / m2, **gd1))
        assert theory.gdk_optimal_eta(1, d, n, **gdk) == pytest.approx(theory.gd1_optimal_eta(**gd1), rel=1e-12)


def test_gdk_spectral_form():
    # Gaussian: E tr(I − ηŜ)^{2k} through the eigenvalue density, including the d − n zero eigenvalues.
    d, n, k, eta = 9, 6, 3, 0.4
    y, w = wishart_spectrum_rule(d, n)
    signal = (d - n) + (w * (1 - eta * y / n) ** (2 * k)).sum()
    assert theory.gdk_half_mse(eta, k, d, n) == pytest.approx(0.5 * signal, rel=1e-12)
    # more steps with the best fixed step never hurt; at τ² = 0 the best step is 0
    risks = [
        theory.gdk_half_mse(theory.gdk_optimal_eta(k, 5, 8, sigma2=0.2), k, 5, 8, sigma2=0.2) for k in (1, 2, 3, 4)
    ]
    assert all(a > b for a, b in itertools.pairwise(risks))
    assert theory.gdk_optimal_eta(2, 5, 8, tau2=0.0, sigma2=0.2) == 0.0


@pytest.mark.parametrize(
    ("fn", "kwargs", "match"),
    [
        (theory.gdk_half_mse, dict(eta=0.1, k=0, d=3, n=3), "k must"),
        (theory.gdk_half_mse, dict(eta=0.1, k=4, d=3, n=3, x_dist="uniform"), "k must be <= 3"),
        (theory.gdk_half_mse, dict(eta=0.1, k=2, d=3, n=3, x_dist="laplace"), "x_dist"),
        (theory.gdk_optimal_eta, dict(k=2, d=3, n=3, sigma2=-1.0), "sigma2"),
        (theory.ridge_excess_risk, dict(lam=-1.0, d=3, n=3, sigma2=1.0), "lam"),
        (theory.ridge_excess_risk, dict(lam=0.0, d=3, n=4, sigma2=1.0), "infinite"),
        (theory.bayes_ridge_excess_risk, dict(d=3, n=3, sigma2=1.0, tau2=0.0), "tau2"),
        (wishart_trace_moments, dict(j_max=2, d=0, n=3), "d must"),
        (iid_trace_moments, dict(j_max=7, d=2, n=2, coord_moments=[1] * 15), "j_max"),
        (wishart_spectrum_rule, dict(d=2, n=1.5), "n must"),
    ],
)
def test_bad_arguments_raise(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(**kwargs)
