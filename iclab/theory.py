"""Closed-form risks for in-context linear regression: one and k GD steps, the optimal linear (one-layer LSA)
predictor and Zhang–Frei–Bartlett's trained LSA, debiased GD, ridge (Bayes or any λ), OLS and min-norm.

Setting (docs/papers.md §6): a prompt has n context points x_i ∈ R^d (rows of X ∈ R^{n×d}) and a query x_q;
y_i = wᵀx_i + ε_i with ε_i ~ N(0, σ²); w ~ N(0, τ²I) unless a covariance Σ_w is given. Ŝ = (1/n) XᵀX.

Units differ between functions and every name says which:
  * ``*_half_mse``    E[½(ŷ − y_q)²], the training loss of the models, *including* the query noise σ²/2.
  * ``*_excess_risk`` / ``linear_family_mse``    E[(ŷ − wᵀx_q)²], full MSE *excluding* the query noise, as in
    the papers (Mahankali et al., Zhang–Frei–Bartlett). Convert with half_mse = ½(excess + σ²).
All math is float64 numpy (``np.asarray``: CPU torch tensors work too) and exact at finite n, d; k-step GD and
ridge use the real-Wishart spectra of ``iclab.theory_wishart`` (exact moments; exact eigenvalue density, ~1e-14).
"""

from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np

from iclab.theory_wishart import sample_cov_trace_moments, wishart_spectrum_rule

__all__ = [
    "bayes_ridge_excess_risk",
    "debiased_gd_excess_risk",
    "debiased_gd_step",
    "gd1_half_mse",
    "gd1_optimal_eta",
    "gd1_optimal_half_mse",
    "gdk_half_mse",
    "gdk_optimal_eta",
    "input_moments",
    "linear_family_mse",
    "mahankali_excess_risk",
    "mahankali_preconditioner",
    "min_norm_excess_risk",
    "ols_excess_risk",
    "optimal_preconditioner",
    "ridge_bayes_lambda",
    "ridge_excess_risk",
    "zfb_excess_risk",
    "zfb_gamma",
]

X_DISTS = ("uniform", "gaussian")


def _check_dims(d: int, n: int) -> None:
    if int(d) != d or d < 1:
        raise ValueError(f"d must be a positive integer, got {d!r}")
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")


def _check_noise(sigma2: float, tau2: float, *, tau2_positive: bool = False) -> None:
    if not sigma2 >= 0:  # `not >=` also rejects NaN
        raise ValueError(f"sigma2 must be >= 0, got {sigma2!r}")
    if not (tau2 > 0 if tau2_positive else tau2 >= 0):
        raise ValueError(f"tau2 must be {'> 0' if tau2_positive else '>= 0'}, got {tau2!r}")


def input_moments(x_dist: str, scale: float) -> tuple[float, float]:
    """Second and fourth moments (m₂ = E[x²], m₄ = E[x⁴]) of one input coordinate; coordinates are iid.

    "uniform": x ~ U(−a, a) with a = scale (half-width), m₂ = a²/3, m₄ = a⁴/5.
    "gaussian": x ~ N(0, s²) with s = scale (standard deviation), m₂ = s², m₄ = 3s⁴.
    von Oswald's code samples U(−0.5, 0.5), i.e. ``input_moments("uniform", 0.5)``.
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    if x_dist == "uniform":
        return scale**2 / 3.0, scale**4 / 5.0
    if x_dist == "gaussian":
        return float(scale**2), 3.0 * scale**4
    raise ValueError(f"unknown x_dist {x_dist!r}; choose one of: {', '.join(X_DISTS)}")


def _gd1_coeffs(d, n, m2, m4, tau2, sigma2) -> tuple[float, float]:
    """Validate, then return c = E‖Ŝ‖_F²/d = (m₄ + (n + d − 2)m₂²)/n and the noise coefficient σ²m₂/n."""
    _check_dims(d, n)
    _check_noise(sigma2, tau2)
    if not m2 > 0:
        raise ValueError(f"m2 must be > 0, got {m2!r}")
    # Jensen: E[x⁴] >= E[x²]²; a violation means the moments were mixed up (e.g. a and a² passed).
    if not m4 >= m2**2:
        raise ValueError(f"m4 must be >= m2**2 (Jensen), got m2={m2!r}, m4={m4!r}")
    return (m4 + (n + d - 2) * m2**2) / n, sigma2 * m2 / n


def gd1_half_mse(eta, *, d: int, n: int, m2: float, m4: float, tau2: float = 1.0, sigma2: float = 0.0):
    """Expected ½·MSE at the query of one GD step from w₀ = 0 on L(w) = 1/(2n) Σ_i (wᵀx_i − y_i)².

    The step gives ŷ = (η/n) Σ_i y_i x_iᵀx_q = x_qᵀ η Ŝ w + (η/n) Σ_i ε_i x_iᵀx_q, so the query error is
        ŷ − y_q = −x_qᵀ(I − ηŜ)w + (η/n) Σ_i ε_i x_iᵀx_q − ε_q.
    For iid symmetric coordinates with moments m₂, m₄ (only these enter):
        E‖I − ηŜ‖_F² = d − 2ηd m₂ + η²(d/n)(m₄ + (n + d − 2)m₂²)
    because E‖Ŝ‖_F² = n⁻²[n E‖x‖⁴ + n(n−1) E(x_iᵀx_j)²], E‖x‖⁴ = d m₄ + d(d−1)m₂², E(x_iᵀx_j)² = d m₂². Hence
        E[½(ŷ − y_q)²] = ½[τ² m₂ (d − 2ηd m₂ + η²(d/n)(m₄ + (n+d−2)m₂²)) + η²σ² d m₂²/n + σ²],
    which is docs/papers.md §6's formula for τ = 1, σ = 0.

    Args:
        eta: step size, a float or an array of them (evaluated elementwise).
    Returns:
        float (or array shaped like ``eta``), in ½·MSE units including the query noise σ²/2.
    """
    c, noise = _gd1_coeffs(d, n, m2, m4, tau2, sigma2)
    eta = np.asarray(eta, dtype=np.float64)
    signal = tau2 * m2 * d * (1.0 - 2.0 * eta * m2 + eta**2 * c)
    out = 0.5 * (signal + eta**2 * noise * d * m2 + sigma2)
    return float(out) if out.ndim == 0 else out


def gd1_optimal_eta(*, d: int, n: int, m2: float, m4: float, tau2: float = 1.0, sigma2: float = 0.0) -> float:
    """Step size minimising ``gd1_half_mse``: η* = τ² m₂ / (τ² c + σ² m₂/n), c = (m₄ + (n + d − 2)m₂²)/n.

    The loss is ½[a η² − 2bη + const] with a = d m₂(τ² c + σ² m₂/n) > 0 and b = τ² d m₂², so η* = b/a.
    Returns 0 when τ² = 0 (nothing to learn, any step only adds noise).
    """
    c, noise = _gd1_coeffs(d, n, m2, m4, tau2, sigma2)
    denom = tau2 * c + noise
    return 0.0 if denom == 0 else float(tau2 * m2 / denom)


def gd1_optimal_half_mse(*, d: int, n: int, m2: float, m4: float, tau2: float = 1.0, sigma2: float = 0.0) -> float:
    """``gd1_half_mse`` at η*: ½[τ² d m₂ (1 − η* m₂) + σ²] (½·MSE units, query noise included)."""
    kw = dict(d=d, n=n, m2=m2, m4=m4, tau2=tau2, sigma2=sigma2)
    return gd1_half_mse(gd1_optimal_eta(**kw), **kw)


def _gdk_coeffs(k, d, n, tau2, sigma2, x_dist, scale) -> list[Fraction]:
    """Exact c_e, e = 0..2k, with excess risk Σ_e c_e η^e for k GD steps (see ``gdk_half_mse``)."""
    _check_dims(d, n)
    _check_noise(sigma2, tau2)
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    if x_dist == "uniform" and k > 3:
        raise ValueError(f"k must be <= 3 for uniform inputs (exact moments up to E tr Ŝ⁶), got {k}")
    mu = sample_cov_trace_moments(2 * k, d, n, x_dist, scale)  # validates x_dist, scale
    m2, t2, s2 = mu[1] / d, Fraction(tau2), Fraction(sigma2)
    out = [t2 * m2 * comb(2 * k, e) * (-1) ** e * mu[e] for e in range(2 * k + 1)]
    for i in range(1, k + 1):  # Q(s)² s = Σ_il C(k,i)C(k,l)(−1)^{i+l} η^{i+l} s^{i+l−1}
        for l in range(1, k + 1):
            out[i + l] += s2 * m2 / n * comb(k, i) * comb(k, l) * (-1) ** (i + l) * mu[i + l - 1]
    return out


def gdk_half_mse(
    eta, k: int, d: int, n: int, tau2: float = 1.0, sigma2: float = 0.0, *, x_dist: str = "gaussian", scale: float = 1.0
):
    """Expected ½·MSE at the query of k GD steps from w₀ = 0 with one fixed step η on L(w) = 1/(2n) Σ_i (wᵀx_i − y_i)²
    (the P = η/N form), iid input coordinates N(0, s²) or U(−a, a) (``input_moments``' scale), w ~ N(0, τ²I).

    With Ŝ = XᵀX/n the iterate is ŵ_k = Q(Ŝ)Xᵀy/n, Q(s) = η Σ_{t<k} (1 − ηs)^t = (1 − (1 − ηs)^k)/s, so
        ŵ_k − w = −(I − ηŜ)^k w + Q(Ŝ)Xᵀε/n,
        E[(ŷ − wᵀx_q)²] = m₂τ² E tr(I − ηŜ)^{2k} + (m₂σ²/n) E tr(Q(Ŝ)²Ŝ),
    a polynomial of degree 2k in η whose coefficients are the moments E tr Ŝ^j, j ≤ 2k. These are exact rationals
    (``theory_wishart.sample_cov_trace_moments``: Gaussian inputs any k, uniform inputs k ≤ 3) and the
    polynomial is summed in exact arithmetic at the binary value of η, so there is no cancellation error.
    k = 1 is ``gd1_half_mse``.

    Args:
        eta: step size, a float or an array of them (evaluated elementwise).
    Returns:
        float (or array shaped like ``eta``), ½·MSE units including the query noise σ²/2.
    """
    coeffs = _gdk_coeffs(k, d, n, tau2, sigma2, x_dist, scale)
    eta = np.asarray(eta, dtype=np.float64)
    if not np.isfinite(eta).all():
        raise ValueError(f"eta must be finite, got {eta!r}")
    const = Fraction(sigma2)

    def one(e: float) -> float:  # exact rational arithmetic at the binary value of e
        return float((sum(c * Fraction(e) ** j for j, c in enumerate(coeffs)) + const) / 2)

    out = np.vectorize(one, otypes=[np.float64])(eta)
    return float(out) if out.ndim == 0 else out


def gdk_optimal_eta(
    k: int, d: int, n: int, tau2: float = 1.0, sigma2: float = 0.0, *, x_dist: str = "gaussian", scale: float = 1.0
) -> float:
    """Fixed step η minimising ``gdk_half_mse`` (global minimum of the degree-2k polynomial over real η ≥ 0,
    from the real roots of its derivative); 0 when there is nothing to learn (τ² = 0)."""
    coeffs = [float(c) for c in _gdk_coeffs(k, d, n, tau2, sigma2, x_dist, scale)]
    if not any(coeffs[1:]):
        return 0.0
    roots = np.polynomial.polynomial.polyroots(np.polynomial.polynomial.polyder(coeffs))
    cands = [0.0] + [r.real for r in roots if abs(r.imag) <= 1e-9 * max(1.0, abs(r)) and r.real > 0]
    return float(min(cands, key=lambda e: gdk_half_mse(e, k, d, n, tau2, sigma2, x_dist=x_dist, scale=scale)))


def mahankali_preconditioner(d: int, n: int, sigma2: float, tau2: float = 1.0) -> float:
    """Scalar α* with A* = α*·I optimal in ŷ = x_qᵀ A (1/n)Xᵀy for x ~ N(0, I), w ~ N(0, τ²I):
    α* = n / (n + d + 1 + σ²/τ²)  (Mahankali et al.; isotropic case of ``optimal_preconditioner``)."""
    _check_dims(d, n)
    _check_noise(sigma2, tau2, tau2_positive=True)
    return n / (n + d + 1 + sigma2 / tau2)


def mahankali_excess_risk(d: int, n: int, sigma2: float, tau2: float = 1.0) -> float:
    """Excess risk of α*·I: E[(ŷ − wᵀx_q)²] = τ² d (d + 1 + σ²/τ²) / (n + d + 1 + σ²/τ²).

    Full-MSE units, query noise σ² excluded (the ½·MSE loss is ½(this + σ²)). For A = αI, x ~ N(0, I):
    E[(x_qᵀ(αŜ − I)w + (α/n)x_qᵀXᵀε)²] = τ²(d − 2αd + α² d(n + d + 1)/n) + α²σ²d/n; at α* this is τ²d(1 − α*).
    """
    alpha = mahankali_preconditioner(d, n, sigma2, tau2)
    return tau2 * d * (1.0 - alpha)


def debiased_gd_step(L, d: int, sigma2: float = 0.0, tau2: float = 1.0, m2: float = 1.0):
    """Optimal step c_L = η/L of debiased GD ŷ = c_L Σ_i y_i (x_i − x̄)ᵀx_q (He et al.; docs/papers.md §7) for
    x ~ N(0, m₂I), w ~ N(0, τ²I), noise σ²:  c_L = 1/(m₂(L + d) + σ²/τ²)  (η/L = 1/(L + d + σ²/τ²) at m₂ = 1).

    L: a count or an array / tensor of counts (plain arithmetic: tensors stay tensors). Derived in the next function.
    """
    _check_dims(d, 1)
    _check_noise(sigma2, tau2, tau2_positive=True)
    if not m2 > 0:
        raise ValueError(f"m2 must be > 0, got {m2!r}")
    return 1.0 / (m2 * (L + d) + sigma2 / tau2)


def debiased_gd_excess_risk(
    L: int, d: int, sigma2: float = 0.0, tau2: float = 1.0, m2: float = 1.0, step: float | None = None
) -> float:
    """Excess risk E[(ŷ − wᵀx_q)²] of debiased GD with step c_L (default: the optimal ``debiased_gd_step``),
    x ~ N(0, m₂I), w ~ N(0, τ²I), noise σ², L context points. Full-MSE units, query noise excluded.

    Σ_i y_i(x_i − x̄) = XᵀCy with C = I − 11ᵀ/L = UUᵀ, U [L, L − 1] orthonormal and ⊥ 1. Z = UᵀX has iid N(0, m₂I)
    rows and Uᵀε ~ N(0, σ²I), so the centred sum over L points is a plain sum over n = L − 1 points:
    ŷ = x_qᵀ(c_L n I)(1/n)Zᵀ(Zw + Uᵀε), the linear family with A = c_L n·I (``linear_family_mse``), whose
    optimum (Mahankali at n = L − 1) is c_L = 1/(m₂(L + d) + σ²/τ²) with risk m₂τ²d(d + 1 + ρ)/(L + d + ρ),
    ρ = σ²/(m₂τ²). L = 1 predicts 0: risk m₂τ²d.
    """
    c_opt = debiased_gd_step(L, d, sigma2, tau2, m2)  # validates d, σ², τ², m₂
    if int(L) != L or L < 1:
        raise ValueError(f"L must be a positive integer, got {L!r}")
    if L == 1:
        return float(m2 * tau2 * d)
    c, eye = c_opt if step is None else float(step), np.eye(d)
    return linear_family_mse(c * (L - 1) * eye, m2 * eye, tau2 * eye, int(L) - 1, sigma2)


def _check_covariances(Lambda, Sigma_w, n: int, sigma2: float) -> tuple[np.ndarray, np.ndarray]:
    Lam = np.asarray(Lambda, dtype=np.float64)
    Sw = np.asarray(Sigma_w, dtype=np.float64)
    if Lam.ndim != 2 or Lam.shape[0] != Lam.shape[1] or Sw.shape != Lam.shape:
        raise ValueError(f"Lambda and Sigma_w must both be [d, d]; got {Lam.shape} and {Sw.shape}")
    _check_dims(Lam.shape[0], n)
    _check_noise(sigma2, 0.0)
    for name, M in (("Lambda", Lam), ("Sigma_w", Sw)):
        if not np.allclose(M, M.T, rtol=1e-10, atol=1e-12):
            raise ValueError(f"{name} must be symmetric")
    if np.linalg.eigvalsh(Lam)[0] <= 0:
        raise ValueError("Lambda must be positive definite")
    if np.linalg.eigvalsh(Sw)[0] < -1e-12 * max(1.0, np.abs(Sw).max()):
        raise ValueError("Sigma_w must be positive semi-definite")
    return Lam, Sw


def _bracket(Lam: np.ndarray, Sw: np.ndarray, n: int, sigma2: float) -> np.ndarray:
    """G = E[Ŝ Σ_w Ŝ] + (σ²/n)Λ = (1 + 1/n)ΛΣ_wΛ + ((tr(Σ_wΛ) + σ²)/n)Λ, [d, d].

    Isserlis for x ~ N(0, Λ): E[x xᵀ M x xᵀ] = 2ΛMΛ + tr(MΛ)Λ (M symmetric); n(n−1) cross pairs give ΛMΛ.
    The σ²Λ/n term is the context-noise part E[(1/n²) Xᵀεεᵀ X].
    """
    LSL = Lam @ Sw @ Lam
    return (1.0 + 1.0 / n) * LSL + ((np.trace(Sw @ Lam) + sigma2) / n) * Lam


def linear_family_mse(A, Lambda, Sigma_w, n: int, sigma2: float) -> float:
    """Exact excess risk E[(ŷ − wᵀx_q)²] of ŷ = x_qᵀ A (1/n) Xᵀy, x ~ N(0, Λ), w ~ N(0, Σ_w), any A [d, d].

    Orientation: A multiplies the context vector v = (1/n)Xᵀy from the left, ŷ = Σ_jk x_q[j] A[j, k] v[k];
    for a non-symmetric A, R(A) ≠ R(Aᵀ) in general (the tr(ΛAGAᵀ) term).
    With G from ``_bracket``:  R(A) = tr(ΛΣ_w) − 2 tr(AΛΣ_wΛ) + tr(ΛAGAᵀ).
    Full-MSE units, query noise σ² excluded.
    """
    Lam, Sw = _check_covariances(Lambda, Sigma_w, n, sigma2)
    A = np.asarray(A, dtype=np.float64)
    if A.shape != Lam.shape:
        raise ValueError(f"A must be {Lam.shape}, got {A.shape}")
    G = _bracket(Lam, Sw, n, sigma2)
    return float(np.trace(Lam @ Sw) - 2.0 * np.trace(A @ Lam @ Sw @ Lam) + np.trace(Lam @ A @ G @ A.T))


def optimal_preconditioner(Lambda, Sigma_w, n: int, sigma2: float) -> tuple[np.ndarray, float]:
    """Minimiser of ``linear_family_mse`` over A (the optimal one-layer LSA), and its excess risk.

    Setting the gradient of R(A) to zero gives ΛA*G = ΛΣ_wΛ, so
        A* = Σ_wΛ G⁻¹,   G = (1 + 1/n)ΛΣ_wΛ + ((tr(Σ_wΛ) + σ²)/n)Λ,
    and R(A*) = tr(ΛΣ_w) − tr(A*ΛΣ_wΛ) (docs/papers.md §6). A* is symmetric although Σ_wΛ is not: with M = Σ_wΛ,
    b = 1 + 1/n, c = (tr M + σ²)/n, G = Λ(bM + cI) and A* = M(bM + cI)⁻¹Λ⁻¹ = (bΣ_wΛ + cI)⁻¹Σ_w, whose
    transpose Σ_w(bΛΣ_w + cI)⁻¹ is the same matrix (push-through identity). So the A-vs-Aᵀ orientation of
    ŷ = x_qᵀ A (1/n)Xᵀy does not matter at the optimum. Isotropic Λ = I, Σ_w = τ²I gives Mahankali's α*·I.

    Returns:
        A_star: [d, d] float64.
        excess_risk: float, full-MSE units, query noise excluded.
    """
    Lam, Sw = _check_covariances(Lambda, Sigma_w, n, sigma2)
    G = _bracket(Lam, Sw, n, sigma2)
    # A* G = Σ_wΛ  ⇔  G A*ᵀ = ΛΣ_w (G symmetric); solve instead of inverting.
    A_star = np.linalg.solve(G, Lam @ Sw).T
    A_star = 0.5 * (A_star + A_star.T)  # exactly symmetric in exact arithmetic (see above); drop rounding
    risk = float(np.trace(Lam @ Sw) - np.trace(A_star @ Lam @ Sw @ Lam))
    return A_star, risk


def zfb_gamma(Lambda, n_train: int) -> np.ndarray:
    """Γ = (1 + 1/N)Λ + (tr Λ/N)·I [d, d] of Zhang–Frei–Bartlett (trained on length N, x ~ N(0, Λ), w ~ N(0, I)).

    Γ⁻¹ is the optimal A of the linear family for (Λ, Σ_w = I, N, σ² = 0): ``optimal_preconditioner`` gives
    A* = (bΛ + cI)⁻¹ with b = 1 + 1/N, c = tr Λ/N — gradient flow on one-layer LSA finds the global optimum.
    """
    Lam, _ = _check_covariances(Lambda, np.eye(np.shape(Lambda)[0]), n_train, 0.0)
    return (1.0 + 1.0 / n_train) * Lam + (np.trace(Lam) / n_train) * np.eye(Lam.shape[0])


def zfb_excess_risk(Lambda_train, n_train: int, n_test: int, Lambda_test=None, sigma2: float = 0.0) -> float:
    """Excess risk E[(ŷ − wᵀx_q)²] of Zhang–Frei–Bartlett's converged LSA ŷ = x_qᵀΓ⁻¹(1/M)Σ_i y_i x_i
    (Γ = ``zfb_gamma(Lambda_train, n_train)``) on prompts of length M = n_test with x ~ N(0, Λ_test) (default
    Λ_train), w ~ N(0, I) as in ZFB, context noise σ² (ZFB train without noise; Γ does not depend on it).

    Exact: the linear family with A = Γ⁻¹, i.e. ``linear_family_mse(Γ⁻¹, Λ_test, I, M, σ²)``. Full-MSE units,
    query noise excluded. Λ = I, M = N, σ² = 0 gives Mahankali's d(d + 1)/(N + d + 1).
    """
    A = np.linalg.inv(zfb_gamma(Lambda_train, n_train))
    Lambda_test = Lambda_train if Lambda_test is None else Lambda_test
    if np.shape(Lambda_test) != A.shape:
        raise ValueError(f"Lambda_test must be {A.shape} like Lambda_train, got {np.shape(Lambda_test)}")
    return linear_family_mse(A, Lambda_test, np.eye(A.shape[0]), n_test, sigma2)


def ridge_bayes_lambda(sigma2: float, tau2: float) -> float:
    """λ = σ²/τ² for which ridge argmin ‖Xw − y‖² + λ‖w‖² (unnormalised sum) is the posterior mean of w.

    For the 1/n-normalised objective (1/n)‖Xw − y‖² + λ‖w‖² the same estimator needs λ/n.
    """
    _check_noise(sigma2, tau2, tau2_positive=True)
    return sigma2 / tau2


def ols_excess_risk(d: int, n: int, sigma2: float) -> float:
    """E[(x_qᵀŵ_OLS − wᵀx_q)²] = σ² E tr((XᵀX)⁻¹) = σ²d/(n − d − 1) for x ~ N(0, I) (any w), n > d + 1.

    Full-MSE units, query noise excluded; uses the inverse-Wishart mean E[(XᵀX)⁻¹] = I/(n − d − 1).
    """
    _check_dims(d, n)
    _check_noise(sigma2, 0.0)
    if not n > d + 1:
        raise ValueError(f"OLS excess risk is finite only for n > d + 1; got d={d}, n={n}")
    return sigma2 * d / (n - d - 1)


def min_norm_excess_risk(d: int, n: int, sigma2: float, tau2: float = 1.0) -> float:
    """Excess risk of the min-norm interpolator ŵ = Xᵀ(XXᵀ)⁻¹y for x ~ N(0, I), w ~ N(0, τ²I), n < d − 1:
        τ²(d − n) + σ²n/(d − n − 1).
    ŵ − w = −(I − P)w + Xᵀ(XXᵀ)⁻¹ε with P the projection on the row space (rank n): the bias is
    τ² tr(I − P) = τ²(d − n) and the variance σ² E tr((XXᵀ)⁻¹) = σ²n/(d − n − 1) (inverse Wishart).
    Full-MSE units, query noise excluded.
    """
    _check_dims(d, n)
    _check_noise(sigma2, tau2)
    if not n < d - 1:
        raise ValueError(f"min-norm excess risk is finite only for n < d - 1; got d={d}, n={n}")
    return tau2 * (d - n) + sigma2 * n / (d - n - 1)


def ridge_excess_risk(lam: float, d: int, n: int, sigma2: float, tau2: float = 1.0) -> float:
    """Excess risk of ridge ŵ = (XᵀX + λI)⁻¹Xᵀy for x ~ N(0, I_d), w ~ N(0, τ²I), noise σ², n points, any λ ≥ 0
    (λ of the unnormalised objective, see ``ridge_bayes_lambda``; misspecified λ allowed).

    ŵ − w = −λ(S + λI)⁻¹w + (S + λI)⁻¹Xᵀε, S = XᵀX, so over the eigenvalues s_j of S
        E[(ŷ − wᵀx_q)²] = E‖ŵ − w‖² = E Σ_j (τ²λ² + σ²s_j)/(s_j + λ)²,
    each of the d − min(n, d) zero eigenvalues contributing τ², against the exact one-point eigenvalue density of
    the real Wishart matrix (``wishart_spectrum_rule``): exact at finite n, d up to ~1e-13 relative quadrature
    error (no Marchenko–Pastur approximation). λ = 0 is the λ → 0 limit, OLS (n > d + 1) or min-norm (n < d − 1),
    infinite otherwise when σ² > 0. Full-MSE units, query noise excluded.
    """
    _check_dims(d, n)
    _check_noise(sigma2, tau2)
    if not 0 <= lam < np.inf:
        raise ValueError(f"lam must be finite and >= 0, got {lam!r}")
    if lam == 0 and sigma2 > 0 and abs(n - d) <= 1:
        raise ValueError(f"lam = 0 (least squares) has infinite risk for |n - d| <= 1; got d={d}, n={n}")
    y, w = wishart_spectrum_rule(d, n)
    return float(tau2 * (d - min(n, d)) + np.sum(w * (tau2 * lam**2 + sigma2 * y) / (y + lam) ** 2))


def bayes_ridge_excess_risk(d: int, n: int, sigma2: float, tau2: float = 1.0) -> float:
    """Bayes risk (the posterior mean = ridge at λ = σ²/τ²) for x ~ N(0, I_d), w ~ N(0, τ²I), noise σ²:
        σ² E tr((XᵀX + λI)⁻¹)   ((τ²λ² + σ²s)/(s + λ)² = σ²/(s + λ) at λ = σ²/τ²),
    the smallest excess risk of any estimator; τ²·max(d − n, 0) when σ² = 0. Exact as ``ridge_excess_risk``;
    full-MSE units, query noise excluded.
    """
    return ridge_excess_risk(ridge_bayes_lambda(sigma2, tau2), d, n, sigma2, tau2)
