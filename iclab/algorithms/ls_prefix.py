"""Prefix fast path for the least-squares learners: every prefix of every prompt from one triangular factor.

Prediction t of prompt b uses points < t and queries x_t. For the Gaussian model w ~ N(0, I) (inputs already
whitened by the prior), y = Xw + ε, ε ~ N(0, ν), the targets have covariance C = XXᵀ + νI over the T points of a
prompt, and its Cholesky factor C = RᵀR (R upper) is prefix-consistent: the leading t×t block of R factors the
first t points, and forward substitution z = R⁻ᵀy is too. Conditioning point t on points < t then reads

    mean_t = Σ_{i<t} R[i, t] z_i        var_t = R[t, t]²    (var of a new noisy target, in prior units)

(the innovations form of Gaussian conditioning; ν > 0 is ridge/Bayes, ν = 0 the min-norm interpolant for t ≤ d,
where the QR of Xᵀ alone gives R, and var_t = 0 from t = d on). R comes from a Householder QR of M = [Xᵀ; √ν I]
(MᵀM = C), whose error is set by cond(M) = √cond(C) as for an SVD-based solve; a Cholesky of C itself errs by
~eps·cond(C), so it is used only where cond(C) ≤ (tr C)/ν ≤ `KAPPA_MAX` keeps that within the same bound.

ν = 0 and t > d is least squares, not interpolation: given the first d points it is Bayes again, with prior
N(ŵ_d, S_d⁻¹) and unit noise, so the same innovations form over points d … T − 1 (in coordinates where S_d = I)
gives every later prefix from one more QR per prompt (`_least_squares_means`).

Trust: every prefix carries an upper bound κ_t ≥ cond₂ of its factor, ‖M_t‖_F·‖R_t⁻¹‖_F (both cumulative sums
over the prefix; ‖R_t⁻¹‖ ≤ 1/√ν for free when ν > 0, and for t > d the smallest singular value can only grow
with more points, so ‖R_d⁻¹‖ bounds it). Prefixes with κ_t > `KAPPA_MAX` (rank-deficient, ill-conditioned, or
non-finite on the way) are flagged, and the learners recompute them with their exact reference path.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["KAPPA_MAX", "prefix_conditioning"]

# κ ≤ eps^(-1/3) ≈ 1.7e5 in float64: forward errors stay ~eps·κ ≈ 4e-11 (relative), far below what the tests
# check, while only ~3 in 1000 Gaussian prompts (d = 20, 41 points) exceed it, at prefixes t ≥ d.
KAPPA_MAX = torch.finfo(torch.float64).eps ** (-1 / 3)


def _exclusive_cumsum(v: Tensor) -> Tensor:
    """[B, n] → [B, n + 1]: entry t is the sum of v[:, :t]."""
    return torch.cat([v.new_zeros(v.shape[0], 1), v.cumsum(1)], dim=1)


def _lower_factor(A: Tensor) -> Tensor:
    """A [B, n, c], one row per point → L [B, n, min(n, c)] lower trapezoidal with LLᵀ = AAᵀ: the transposed R of
    a Householder QR of Aᵀ (LAPACK signs: L's diagonal may be negative, LLᵀ is the same)."""
    a, _ = torch.geqrf(A.mT)  # [B, c, n] column-major, so a.mT is row-major [B, n, c]
    return a.mT[:, :, : min(A.shape[-2:])].tril()


def _noisy_factor(x: Tensor, noise: float, cond: Tensor) -> Tensor:
    """L [B, T, T] with LLᵀ = C = XXᵀ + νI for x [B, T, d], ν > 0; cond [B] bounds cond₂(C) ((tr C)/ν).

    A Cholesky of C errs by ~eps·cond(C), the QR of [X | √ν I] by ~eps·√cond(C): prompts with cond(C) ≤ KAPPA_MAX
    take the (several times cheaper) Cholesky, whose error then stays within the QR path's own trust bound."""
    B, T, d = x.shape
    L = x.new_empty(B, T, T)
    chol = cond <= KAPPA_MAX
    if bool(chol.any()):
        idx = chol.nonzero().squeeze(1)
        xc = x if idx.numel() == B else x[idx]
        C = xc @ xc.mT  # [k, T, T]
        C.diagonal(dim1=1, dim2=2).add_(noise)
        Lc, info = torch.linalg.cholesky_ex(C)
        if idx.numel() == B:
            L = Lc
        else:
            L[idx] = Lc
        chol[idx[info != 0]] = False  # cannot happen with cond(C) this small; the QR path would take it
    if not bool(chol.all()):
        xq = x[~chol]
        A = torch.cat([xq, xq.new_zeros(xq.shape[0], T, T)], dim=2)  # rows [x_t | √ν e_t]: AAᵀ = XXᵀ + νI
        A[:, :, d:].diagonal(dim1=1, dim2=2).fill_(noise**0.5)
        L[~chol] = _lower_factor(A)
    return L


def _conditional_means(L: Tensor, y: Tensor) -> Tensor:
    """mean_t = Σ_{i<t} L[t, i] z_i with z = L⁻¹y (first r = L.shape[2] rows). L [B, n, r], y [B, n] → [B, n]."""
    r = L.shape[-1]
    z = torch.linalg.solve_triangular(L[:, :r], y[:, :r, None], upper=False)  # [B, r, 1]
    if not bool(torch.isfinite(z.sum())):  # singular leading blocks: those prefixes are flagged by the caller
        z = torch.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)
    # L lower: L @ z sums i ≤ t; drop the i = t term rather than mask a [B, n, r] copy of L
    mean = (L @ z).squeeze(-1)
    mean[:, :r] -= L[:, :r].diagonal(dim1=1, dim2=2) * z.squeeze(-1)
    return mean


def _least_squares_means(L: Tensor, y: Tensor) -> Tensor:
    """ν = 0 predictions for prefixes t = d … T − 1 (least squares from t ≥ d points). L [B, T, d] from the QR of
    Xᵀ (row i is point i in rotated coordinates Qᵀx; its first d rows are the lower-triangular L_d), y [B, T] →
    [B, T − d].

    Given the first d points, OLS on more points is Bayes with prior N(ŵ_d, S_d⁻¹) and unit noise: in coordinates
    where S_d = I the later points are u_i = L_d⁻ᵀ L[i], the prior mean predicts m_i = u_iᵀ y_{<d}, and the same
    innovations form (factor of UUᵀ + I) conditions on points d … t − 1. Its error grows with cond(L_d), which bounds
    the trust of these prefixes, not with its square.
    """
    _, T, d = L.shape
    P = T - d
    U = torch.linalg.solve_triangular(L[:, :d], L[:, d:], upper=False, left=False)  # [B, P, d]: rows u_iᵀ = L[i] L_d⁻¹
    if not bool(torch.isfinite(U.sum())):  # singular L_d: that prompt is untrusted anyway
        U = torch.nan_to_num(U, nan=0.0, posinf=0.0, neginf=0.0)
    prior_mean = (U @ y[:, :d, None]).squeeze(-1)  # [B, P]
    L2 = _noisy_factor(U, 1.0, U.square().sum((1, 2)) + P)  # UUᵀ + I
    return prior_mean + _conditional_means(L2, y[:, d:] - prior_mean)


def prefix_conditioning(x: Tensor, y: Tensor, noise: float) -> tuple[Tensor, Tensor, Tensor]:
    """Every prefix's conditional mean and variance (module docstring). x [B, T, d] whitened, y [B, T], float64;
    noise ν ≥ 0 → (mean [B, T], var [B, T] in prior units, without any scale; trusted [B, T] bool).

    Untrusted entries may hold anything finite and must be recomputed by the caller; t = 0 is always trusted.
    """
    B, T, d = x.shape
    # κ_t² = ‖A_t‖_F²·‖L_t⁻¹‖² over the first t points (prefix t's factor)
    norm2 = _exclusive_cumsum(x.square().sum(-1) + noise)  # [B, T + 1]
    inv2 = norm2.new_full((B, T), torch.inf if noise == 0 else 1 / noise)  # ‖L_t⁻¹‖₂² ≤ 1/ν
    L = _noisy_factor(x, noise, norm2[:, -1] / noise) if noise > 0 else _lower_factor(x)  # [B, T, r]
    norm2 = norm2[:, :T]
    r = L.shape[-1]  # T when ν > 0, else min(d, T)
    mean = _conditional_means(L, y)
    var = torch.zeros_like(mean)
    var[:, :r] = L[:, :r].diagonal(dim1=1, dim2=2).square()  # ν = 0: var_t = 0 from t = d on

    q = min(r, T - 1)  # prefixes 0 … q come from L directly
    if noise == 0 or bool((norm2 * inv2 > KAPPA_MAX**2).any()):
        eye = torch.eye(r, dtype=x.dtype, device=x.device).expand(B, r, r)
        linv = torch.linalg.solve_triangular(L[:, :r], eye, upper=False)  # leading blocks invert leading blocks
        fro2 = _exclusive_cumsum(linv.square().sum(2))  # [B, r + 1]: ‖L_t⁻¹‖_F², non-finite where singular
        inv2[:, : q + 1] = torch.minimum(inv2[:, : q + 1], fro2[:, : q + 1])
        if noise == 0 and d < T - 1:  # σ_min of the first t > d points ≥ that of the first d
            inv2[:, d + 1 :] = fro2[:, d : d + 1]
    kappa2 = norm2 * inv2
    kappa2[:, 0] = 0.0

    if noise == 0 and d < T - 1:
        mean[:, d + 1 :] = _least_squares_means(L, y)[:, 1:]
    trusted = (kappa2 <= KAPPA_MAX**2) & torch.isfinite(mean) & torch.isfinite(var)
    return mean, var, trusted
