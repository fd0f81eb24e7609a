"""Least-squares reference learners, batched over prompts and prefix lengths: minimum-norm OLS, ridge, Bayes.

Convention: sums over the context are UNNORMALISED, S = XᵀX = Σ_i x_i x_iᵀ and b = Xᵀy = Σ_i y_i x_i over the
present points. Ridge is ŵ = (S + λI)⁻¹b, which is the Bayes posterior mean for w ~ N(0, τ²I) and noise σ² at
λ = σ²/τ² (docs/papers.md §6). The Bayes learner takes any prior covariance Σ_w and also returns the predictive
variance of a new noisy target, σ² + x_qᵀ Σ_post x_q with Σ_post = (S/σ² + Σ_w⁻¹)⁻¹.

Numerics: OLS goes through the pseudo-inverse of X (SVD; never through S in `predict`, which would square the
condition number). Prefix predictions (all three learners) come from one QR per prompt (`ls_prefix`: Gaussian
conditioning in innovations form, float64 whatever `dtype`), and every prefix whose conditioning that QR cannot
vouch for is recomputed by the reference path: the pseudo-inverse for OLS, the eigendecomposition below for
ridge and Bayes. Those work in the eigenbasis of the whitened Gram matrix, so λ > 0 or σ² > 0 never meets a
singular solve, and σ² = 0 (noiseless) is the limit: the mean is the minimum-Σ_w⁻¹-norm interpolant and the
variance is the prior's in the unseen directions; with σ² > 0 `predict` takes a Cholesky of that matrix
instead (eigenvalues ≥ σ²), falling back to the eigendecomposition where it fails. The eigh-based prefix paths
(`ols_prefix_weights_eigh`, `prefix_stats` + `posterior_from_stats`) stay as the naive references.
`dtype=torch.float64` computes in float64 and casts back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.ls_prefix import prefix_conditioning
from iclab.algorithms.registry import LearnerSpec, check_args, parse_dtype, parse_real, spec_string
from iclab.theory import ridge_bayes_lambda

__all__ = [
    "LEARNERS",
    "OLS",
    "Bayes",
    "Ridge",
    "gram_stats",
    "ols_prefix_weights_eigh",
    "ols_weights",
    "posterior_cholesky",
    "posterior_from_stats",
    "prefix_stats",
    "ridge_weights",
]


# ----------------------------------------------------------------------------------------------------------------
# sufficient statistics


def gram_stats(x_ctx: Tensor, y_ctx: Tensor) -> tuple[Tensor, Tensor]:
    """S = XᵀX [B, d, d] and b = Xᵀy [B, d] from x_ctx [B, n, d], y_ctx [B, n] (masked rows already zero)."""
    return x_ctx.transpose(-1, -2) @ x_ctx, torch.einsum("bnd,bn->bd", x_ctx, y_ctx)


def prefix_stats(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Exclusive cumulative sums: S_t = Σ_{i<t} x_i x_iᵀ [B, T, d, d] and b_t = Σ_{i<t} y_i x_i [B, T, d]."""
    outer = x.unsqueeze(-1) * x.unsqueeze(-2)  # [B, T, d, d]
    yx = y.unsqueeze(-1) * x  # [B, T, d]
    # Shift by one (prefix t sees points < t) by padding, not by subtracting the inclusive sum: exact zeros at t = 0.
    S = torch.cat([torch.zeros_like(outer[:, :1]), outer[:, :-1].cumsum(1)], dim=1)
    b = torch.cat([torch.zeros_like(yx[:, :1]), yx[:, :-1].cumsum(1)], dim=1)
    return S, b


# ----------------------------------------------------------------------------------------------------------------
# OLS / minimum-norm least squares


def ols_weights(x_ctx: Tensor, y_ctx: Tensor) -> Tensor:
    """Minimum-norm least squares w = X⁺y. x_ctx [B, N, d], y_ctx [B, N] → [B, d] (any N vs d, any rank, N = 0).

    The pseudo-inverse cuts singular values below max(N, d)·eps·s_max, as numpy.linalg.lstsq(rcond=None) does.
    """
    if x_ctx.shape[1] == 0:
        return x_ctx.new_zeros(x_ctx.shape[0], x_ctx.shape[2])
    return torch.einsum("bdn,bn->bd", torch.linalg.pinv(x_ctx), y_ctx)


def _exact_ols_prefixes(x: Tensor, y: Tensor, pb: Tensor, pt: Tensor, chunk_elements: int) -> Tensor:
    """Min-norm weights of prompt pb[k] from its first pt[k] points, by the pseudo-inverse of the masked context.
    x [B, T, d], y [B, T], pb, pt [k] → [k, d]."""
    _, T, d = x.shape
    step = max(1, chunk_elements // max(T * d, 1))
    slots = torch.arange(max(T - 1, 0), device=x.device)
    out = []
    for s in range(0, pb.shape[0], step):
        b, t = pb[s : s + step], pt[s : s + step]
        mask = (slots.unsqueeze(0) < t.unsqueeze(1)).to(x.dtype)  # [k, T − 1]
        out.append(ols_weights(x[b, : T - 1] * mask.unsqueeze(-1), y[b, : T - 1] * mask))
    return torch.cat(out) if out else x.new_zeros(0, d)


def ols_prefix_weights_eigh(x: Tensor, y: Tensor, chunk_elements: int = 1 << 24) -> Tensor:
    """Naive reference for the OLS prefix path: min-norm w for every prefix, x [B, T, d], y [B, T] → [B, T, d].

    From the eigendecomposition of S_t where that is safe: eigenvalues of S are squared singular values, so below
    √eps·λ_max they are too inaccurate to invert and too large to call zero. A prefix is safe when exactly min(t, d)
    eigenvalues lie above that line; every other prefix is recomputed with the pseudo-inverse of its masked X.
    """
    _, T, d = x.shape
    S, b = prefix_stats(x, y)
    e, U = torch.linalg.eigh(S)  # [B, T, d] ascending, [B, T, d, d]
    keep = e > math.sqrt(torch.finfo(x.dtype).eps) * e[..., -1:].clamp_min(0)
    inv = torch.where(keep, 1.0 / torch.where(keep, e, torch.ones_like(e)), torch.zeros_like(e))
    w = U @ (inv * (U.transpose(-1, -2) @ b.unsqueeze(-1)).squeeze(-1)).unsqueeze(-1)  # [B, T, d, 1]
    w = w.squeeze(-1)
    expected = torch.arange(T, device=x.device).clamp(max=d)  # [T]
    pb, pt = (keep.sum(-1) != expected).nonzero().unbind(-1)  # (prompt, prefix) pairs to recompute
    w[pb, pt] = _exact_ols_prefixes(x, y, pb, pt, chunk_elements)
    return w


class OLS(MaskedLearner):
    """Minimum-norm least squares ŷ = x_qᵀX⁺y; `dtype=torch.float64` computes in float64 and casts back."""

    def __init__(self, dtype: torch.dtype | None = None):
        self.dtype = dtype
        self.name = "ols"

    def predict_masked(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n] (masked rows zero: they change neither X⁺y nor its norm), x_q [B, m, d] →
        [B, m]."""
        ct = self.dtype or x_ctx.dtype
        w = ols_weights(x_ctx.to(ct), y_ctx.to(ct))
        return torch.einsum("bmd,bd->bm", x_q.to(ct), w).to(x_q.dtype)

    def predict_prefixes(self, x: Tensor, y: Tensor) -> Tensor:
        """x [B, T, d], y [B, T] → [B, T]; QR fast path in float64 whatever `dtype` (`ls_prefix`), every prefix it
        does not trust recomputed by the pseudo-inverse."""
        if y.dim() == 3:
            return super().predict_prefixes(x, y)
        x64, y64 = x.double(), y.double()
        mean, _, trusted = prefix_conditioning(x64, y64, 0.0)
        pb, pt = (~trusted).nonzero().unbind(-1)
        if pb.numel():
            w = _exact_ols_prefixes(x64, y64, pb, pt, self.chunk_elements)  # [k, d]
            mean[pb, pt] = (x64[pb, pt] * w).sum(-1)
        return mean.to(x.dtype)


# ----------------------------------------------------------------------------------------------------------------
# ridge and Bayes: one posterior in the whitened eigenbasis


def posterior_from_stats(
    S: Tensor, b: Tensor, x_q: Tensor, noise_var: float, prior_sqrt: Tensor | None = None, n: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Gaussian-prior posterior from sufficient statistics: S [..., d, d], b [..., d], x_q [..., m, d] →
    (mean [..., m], var [..., m]) with var = σ² + x_qᵀ Σ_post x_q, the predictive variance of a new noisy target.

    prior_sqrt: L with Σ_w = L Lᵀ ([d, d]; None = I). In whitened coordinates G = LᵀSL = U diag(e) Uᵀ:
    mean = L U diag(1/(e + σ²)) Uᵀ Lᵀ b and Σ_post = L U diag(σ²/(e + σ²)) Uᵀ Lᵀ. For σ² = 0 the inverse is the
    pseudo-inverse (eigenvalues ≤ max(n, d)·eps·e_max count as zero; n [...] is the number of points, default d)
    and Σ_post keeps the prior in G's null space.
    """
    Lt_b, Lt_q = b, x_q
    if prior_sqrt is not None:
        S = prior_sqrt.transpose(-1, -2) @ S @ prior_sqrt
        Lt_b = b @ prior_sqrt  # [..., d] = Lᵀb
        Lt_q = x_q @ prior_sqrt  # [..., m, d] rows Lᵀx_q
    e, U = torch.linalg.eigh(S)  # [..., d], [..., d, d]
    e = e.clamp_min(0)  # round-off can make a zero eigenvalue slightly negative
    if noise_var > 0:
        inv = 1.0 / (e + noise_var)
        post = noise_var * inv
    else:
        d = S.shape[-1]
        size = torch.full_like(e[..., 0], d) if n is None else torch.clamp(n.to(e.dtype), min=d)
        tol = (size * torch.finfo(e.dtype).eps).unsqueeze(-1) * e[..., -1:]
        seen = e > tol
        inv = torch.where(seen, 1.0 / torch.where(seen, e, torch.ones_like(e)), torch.zeros_like(e))
        post = (~seen).to(e.dtype)
    coef = inv * (U.transpose(-1, -2) @ Lt_b.unsqueeze(-1)).squeeze(-1)  # [..., d] in the eigenbasis
    q = Lt_q @ U  # [..., m, d]: eigen-coordinates of each whitened query
    mean = q @ coef.unsqueeze(-1)
    var = noise_var + (q.square() * post.unsqueeze(-2)).sum(-1)
    return mean.squeeze(-1), var


def posterior_cholesky(
    S: Tensor, b: Tensor, x_q: Tensor, noise_var: float, prior_sqrt: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """`posterior_from_stats` for σ² > 0 by a Cholesky CCᵀ = G + σ²I of the whitened Gram matrix (eigenvalues ≥ σ²):
    mean = (C⁻¹Lᵀx_q)·(C⁻¹Lᵀb), var = σ²(1 + ‖C⁻¹Lᵀx_q‖²). Same shapes; problems whose factorisation fails (σ²
    below round-off of ‖G‖) or is not finite go through `posterior_from_stats`."""
    if not noise_var > 0:
        raise ValueError(f"noise_var: the Cholesky path needs σ² > 0, got {noise_var}")
    G, Lt_b, Lt_q = S, b, x_q
    if prior_sqrt is not None:
        G = prior_sqrt.transpose(-1, -2) @ S @ prior_sqrt
        Lt_b, Lt_q = b @ prior_sqrt, x_q @ prior_sqrt
    eye = torch.eye(G.shape[-1], dtype=G.dtype, device=G.device)
    C, info = torch.linalg.cholesky_ex(G + noise_var * eye)  # [..., d, d] lower
    u = torch.linalg.solve_triangular(C, Lt_b.unsqueeze(-1), upper=False)  # [..., d, 1]
    v = torch.linalg.solve_triangular(C, Lt_q.transpose(-1, -2), upper=False)  # [..., d, m]
    mean = (v * u).sum(-2)  # [..., m]
    var = noise_var * (1 + v.square().sum(-2))
    bad = (info != 0) | ~torch.isfinite(mean).all(-1) | ~torch.isfinite(var).all(-1)  # [...]
    if bool(bad.any()):
        mean[bad], var[bad] = posterior_from_stats(S[bad], b[bad], x_q[bad], noise_var, prior_sqrt)
    return mean, var


def ridge_weights(x_ctx: Tensor, y_ctx: Tensor, lam: float) -> Tensor:
    """w = (XᵀX + λI)⁻¹Xᵀy (unnormalised sums, λ > 0). x_ctx [B, N, d], y_ctx [B, N] → [B, d]."""
    S, b = gram_stats(x_ctx, y_ctx)
    eye = torch.eye(S.shape[-1], dtype=S.dtype, device=S.device)
    # [B, d, d] identity as "queries": mean at x_q = e_j is w_j
    mean, _ = posterior_from_stats(S, b, eye.expand_as(S), float(lam))
    return mean


def _prior_sqrt(prior_var: float | Sequence[float] | Tensor) -> tuple[Tensor | None, float | Tensor]:
    """Σ_w as a scalar τ², a [d] diagonal or a [d, d] SPD matrix → (L with LLᵀ = Σ_w or None if scalar, the value)."""
    if isinstance(prior_var, int | float):
        if not (math.isfinite(prior_var) and prior_var > 0):
            raise ValueError(f"prior_var: must be a finite number > 0, got {prior_var}")
        return None, float(prior_var)
    value = torch.as_tensor(prior_var, dtype=torch.float64)
    if value.dim() == 1:
        if not (torch.isfinite(value).all() and (value > 0).all()):
            raise ValueError(f"prior_var: a diagonal must hold finite values > 0, got {value.tolist()}")
        return torch.diag(value.sqrt()), value
    if value.dim() == 2 and value.shape[0] == value.shape[1]:
        chol, info = torch.linalg.cholesky_ex(value)
        if info.item() != 0 or not torch.allclose(value, value.T):
            raise ValueError("prior_var: a [d, d] prior covariance must be symmetric positive definite")
        return chol, value
    raise ValueError(f"prior_var: must be a number, a [d] diagonal or a [d, d] matrix, got shape {tuple(value.shape)}")


class Bayes(MaskedLearner):
    """Posterior mean (and predictive variance) for w ~ N(0, Σ_w), y = wᵀx + ε, ε ~ N(0, σ²).

    noise_var σ² ≥ 0 (0: noiseless limit, see the module docstring); prior_var Σ_w: τ² (isotropic), a [d] diagonal
    or a [d, d] SPD matrix. `dtype=torch.float64` computes in float64 and casts back.
    """

    def __init__(
        self, noise_var: float, prior_var: float | Sequence[float] | Tensor = 1.0, dtype: torch.dtype | None = None
    ):
        if not (math.isfinite(noise_var) and noise_var >= 0):
            raise ValueError(f"noise_var: must be a finite number >= 0, got {noise_var}")
        self.noise_var = float(noise_var)
        self._sqrt, self.prior_var = _prior_sqrt(prior_var)
        self.dtype = dtype
        tau2 = f",{self.prior_var:g}" if isinstance(self.prior_var, float) else ""
        self.name = f"bayes:{self.noise_var:g}{tau2}"

    def _whitening(self, d: int) -> tuple[float, float, Tensor | None]:
        """(ν, scale, L): in w̃ = L⁻¹w the prior is N(0, I), the noise ν and variances come out in units of scale."""
        if self._sqrt is None:  # isotropic τ²: the posterior of (w/τ) with noise σ²/τ², variance rescaled by τ²
            return self.noise_var / self.prior_var, self.prior_var, None
        if self._sqrt.shape[0] != d:
            raise ValueError(f"prior_var: has dimension {self._sqrt.shape[0]}, the inputs have d = {d}")
        return self.noise_var, 1.0, self._sqrt

    def _posterior(self, S: Tensor, b: Tensor, x_q: Tensor, n: Tensor, exact: bool = False) -> tuple[Tensor, Tensor]:
        """Cholesky path for σ² > 0, eigendecomposition (`posterior_from_stats`) for σ² = 0 or when `exact`."""
        ct = self.dtype or x_q.dtype
        noise, scale, sqrt = self._whitening(S.shape[-1])
        sqrt = None if sqrt is None else sqrt.to(device=S.device, dtype=ct)
        args = (S.to(ct), b.to(ct), x_q.to(ct), noise, sqrt)
        mean, var = posterior_cholesky(*args) if noise > 0 and not exact else posterior_from_stats(*args, n)
        return mean.to(x_q.dtype), (var * scale).to(x_q.dtype)

    def predict_masked(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n] (masked rows zero), x_q [B, m, d] → posterior-mean predictions [B, m]."""
        return self._posterior(*gram_stats(x_ctx, y_ctx), x_q, mask.sum(-1))[0]

    def predict_with_variance(
        self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(mean [B, m], var [B, m]): posterior predictive of a new noisy y_q. Vector targets y_ctx [B, n, k] give
        [B, m, k] for both (the variance does not depend on y)."""
        if mask is None:
            mask = torch.ones(x_ctx.shape[:2], dtype=torch.bool, device=x_ctx.device)
        x_ctx = x_ctx * mask.unsqueeze(-1).to(x_ctx.dtype)
        if y_ctx.dim() == 3:
            mean = self.predict(x_ctx, y_ctx, x_q, mask)
            _, var = self._posterior(*gram_stats(x_ctx, y_ctx[..., 0] * 0), x_q, mask.sum(-1))
            return mean, var.unsqueeze(-1).expand_as(mean)
        y_ctx = y_ctx * mask.to(y_ctx.dtype)
        return self._posterior(*gram_stats(x_ctx, y_ctx), x_q, mask.sum(-1))

    def predict_prefixes_with_variance(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, T, d], y [B, T] → (mean [B, T], var [B, T]); prediction t from points < t. QR fast path in float64
        whatever `dtype` (`ls_prefix`); every prefix it does not trust is recomputed from its sufficient statistics
        by the eigendecomposition (`posterior_from_stats`, also the naive reference of this path)."""
        _, T, d = x.shape
        x64, y64 = x.double(), y.double()
        noise, scale, sqrt = self._whitening(d)
        xw = x64 if sqrt is None else x64 @ sqrt.to(x.device)  # rows (Lᵀx_t)ᵀ
        mean, var, trusted = prefix_conditioning(xw, y64, noise)
        var = var * scale
        pb, pt = (~trusted).nonzero().unbind(-1)
        step = max(1, self.chunk_elements // max(T * d, 1))
        slots = torch.arange(max(T - 1, 0), device=x.device)
        for s in range(0, pb.shape[0], step):
            b, t = pb[s : s + step], pt[s : s + step]
            mask = (slots.unsqueeze(0) < t.unsqueeze(1)).to(x64.dtype)  # [k, T − 1]
            stats = gram_stats(x64[b, : T - 1] * mask.unsqueeze(-1), y64[b, : T - 1] * mask)
            mean[b, t], var[b, t] = (v.squeeze(-1) for v in self._posterior(*stats, x64[b, t, None], t, exact=True))
        return mean.to(x.dtype), var.to(x.dtype)

    def predict_prefixes(self, x: Tensor, y: Tensor) -> Tensor:
        """x [B, T, d], y [B, T] → [B, T] posterior means (QR fast path, see `predict_prefixes_with_variance`)."""
        if y.dim() == 3:
            return super().predict_prefixes(x, y)
        return self.predict_prefixes_with_variance(x, y)[0]


class Ridge(Bayes):
    """Ridge ŵ = (XᵀX + λI)⁻¹Xᵀy, unnormalised sums (λ = σ²/τ² is the Bayes posterior mean); λ > 0."""

    def __init__(self, lam: float, dtype: torch.dtype | None = None):
        if not (isinstance(lam, int | float) and math.isfinite(lam) and lam > 0):
            raise ValueError(f"ridge lambda: must be a finite number > 0, got {lam}")
        super().__init__(noise_var=float(lam), prior_var=1.0, dtype=dtype)
        self.lam = float(lam)
        self.name = f"ridge:{lam:g}"


# ----------------------------------------------------------------------------------------------------------------
# registry entries


def _ols(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> OLS:
    check_args(args, kwargs, 0, ("float64",))
    learner = OLS(dtype=parse_dtype(kwargs))
    learner.name = spec_string("ols", args, kwargs)
    return learner


def _ridge(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> Ridge | OLS:
    check_args(args, kwargs, 1, ("float64",))
    if args:
        lam = parse_real("LAMBDA", args[0], low=0.0, strict=True)
    else:  # the task's Bayes λ = σ²/τ² (Raventós' "ridge"); its λ → 0⁺ limit is min-norm least squares
        config = getattr(task, "config", None)
        if config is None or not hasattr(config, "noise_var") or not hasattr(config, "w_scale"):
            raise ValueError("LAMBDA: required without a task, a finite number > 0 (ridge:0.25)")
        lam = ridge_bayes_lambda(float(config.noise_var), float(config.w_scale) ** 2)
    learner = (Ridge(lam, dtype=parse_dtype(kwargs))) if lam > 0 else OLS(dtype=parse_dtype(kwargs))
    learner.name = spec_string("ridge", args, kwargs)
    return learner


def _bayes(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> Bayes:
    check_args(args, kwargs, 2, ("float64",))
    if len(args) == 1:
        raise ValueError("give both SIGMA2 and TAU2 (bayes:0.1:1) or neither (the task's noise and prior)")
    if args:
        noise, prior = parse_real("SIGMA2", args[0], low=0.0), parse_real("TAU2", args[1], low=0.0, strict=True)
    else:
        config = getattr(task, "config", None)
        if config is None or not hasattr(config, "noise_var") or not hasattr(config, "w_scale"):
            raise ValueError("without SIGMA2:TAU2 it needs a task with noise_var and w_scale")
        noise = float(config.noise_var)
        # w_second_moment is τ²·diag(w_cov_diag): the exact prior where the task has one
        prior = task.w_second_moment() if hasattr(task, "w_second_moment") else float(config.w_scale) ** 2
    learner = Bayes(noise, prior, dtype=parse_dtype(kwargs))
    learner.name = spec_string("bayes", args, kwargs)
    return learner


LEARNERS: dict[str, LearnerSpec] = {
    "ols": LearnerSpec(_ols, "ols[:float64=1]", "minimum-norm least squares X⁺y (any n vs d and rank)"),
    "ridge": LearnerSpec(
        _ridge, "ridge[:LAMBDA][:float64=1]", "ridge (XᵀX + λI)⁻¹Xᵀy; default λ = σ²/τ² of the task (0: min-norm OLS)"
    ),
    "bayes": LearnerSpec(
        _bayes,
        "bayes[:SIGMA2:TAU2][:float64=1]",
        "Gaussian-prior posterior mean and predictive variance (default: the task's noise and prior)",
    ),
}
