"""Closed-form risks for in-context linear regression: one GD step, the optimal linear (one-layer LSA)
predictor, the Bayes-optimal ridge, OLS and min-norm interpolation.

Setting (REFERENCE.md §6): a prompt has n context points x_i ∈ R^d (rows of X ∈ R^{n×d}) and a query x_q;
y_i = wᵀx_i + ε_i with ε_i ~ N(0, σ²); w ~ N(0, τ²I) unless a covariance Σ_w is given. Ŝ = (1/n) XᵀX.

Units differ between functions and every name says which:
  * ``*_half_mse``    E[½(ŷ − y_q)²], the training loss of the models, *including* the query noise σ²/2.
  * ``*_excess_risk`` / ``linear_family_mse``    E[(ŷ − wᵀx_q)²], full MSE *excluding* the query noise, as in
    the papers (Mahankali et al., Zhang–Frei–Bartlett). Convert with half_mse = ½(excess + σ²).
All math is float64 numpy; array arguments are converted with ``np.asarray`` (CPU torch tensors work too).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "gd1_half_mse",
    "gd1_optimal_eta",
    "gd1_optimal_half_mse",
    "input_moments",
    "linear_family_mse",
    "mahankali_excess_risk",
    "mahankali_preconditioner",
    "min_norm_excess_risk",
    "ols_excess_risk",
    "optimal_preconditioner",
    "ridge_bayes_lambda",
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
    which is REFERENCE §6's formula for τ = 1, σ = 0.

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
    and R(A*) = tr(ΛΣ_w) − tr(A*ΛΣ_wΛ) (REFERENCE §6). A* is symmetric although Σ_wΛ is not: with M = Σ_wΛ,
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
