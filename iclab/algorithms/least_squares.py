"""Least-squares reference learners, batched over prompts and prefix lengths: minimum-norm OLS, ridge, Bayes.

Convention: sums over the context are UNNORMALISED, S = XᵀX = Σ_i x_i x_iᵀ and b = Xᵀy = Σ_i y_i x_i over the
present points. Ridge is ŵ = (S + λI)⁻¹b, which is the Bayes posterior mean for w ~ N(0, τ²I) and noise σ² at
λ = σ²/τ² (REFERENCE §6). The Bayes learner takes any prior covariance Σ_w and also returns the predictive
variance of a new noisy target, σ² + x_qᵀ Σ_post x_q with Σ_post = (S/σ² + Σ_w⁻¹)⁻¹.

Numerics: OLS goes through the pseudo-inverse of X (SVD; never through S in `predict`, which would square the
condition number). Its prefix fast path uses S_t in float64 and recomputes, exactly, every prefix whose spectrum
does not clearly show rank min(t, d) (rank-deficient or ill-conditioned). Ridge and Bayes work in the eigenbasis
of the whitened Gram matrix, so λ > 0 or σ² > 0 never meets a singular solve, and σ² = 0 (noiseless) is the limit:
the mean is the minimum-Σ_w⁻¹-norm interpolant and the variance is the prior's in the unseen directions.
`dtype=torch.float64` computes in float64 and casts back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.registry import LearnerSpec, check_args, parse_dtype, parse_real, spec_string
from iclab.theory import ridge_bayes_lambda

__all__ = [
    "LEARNERS",
    "OLS",
    "Bayes",
    "Ridge",
    "gram_stats",
    "ols_weights",
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


def _ols_prefix_weights(x: Tensor, y: Tensor, chunk_elements: int) -> Tensor:
    """Min-norm w for every prefix: x [B, T, d], y [B, T] (float64) → [B, T, d].

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
    bad = (keep.sum(-1) != expected).nonzero()  # [k, 2] (prompt, prefix)
    step = max(1, chunk_elements // max(T * d, 1))
    slots = torch.arange(max(T - 1, 0), device=x.device)
    for s in range(0, bad.shape[0], step):
        pb, pt = bad[s : s + step].unbind(-1)
        mask = (slots.unsqueeze(0) < pt.unsqueeze(1)).to(x.dtype)  # [k, T − 1]
        w[pb, pt] = ols_weights(x[pb, : T - 1] * mask.unsqueeze(-1), y[pb, : T - 1] * mask)
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
        """x [B, T, d], y [B, T] → [B, T]; Gram fast path in float64 whatever `dtype` (see `_ols_prefix_weights`)."""
        if y.dim() == 3:
            return super().predict_prefixes(x, y)
        w = _ols_prefix_weights(x.double(), y.double(), self.chunk_elements)
        return torch.einsum("btd,btd->bt", x.double(), w).to(x.dtype)


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

    def _posterior(self, S: Tensor, b: Tensor, x_q: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
        ct = self.dtype or x_q.dtype
        noise, sqrt = self.noise_var, self._sqrt
        if sqrt is None:  # isotropic τ²: the posterior of (w/τ) with noise σ²/τ², variance rescaled by τ²
            noise, scale = self.noise_var / self.prior_var, self.prior_var
        else:
            if sqrt.shape[0] != S.shape[-1]:
                raise ValueError(f"prior_var: has dimension {sqrt.shape[0]}, the inputs have d = {S.shape[-1]}")
            sqrt, scale = sqrt.to(device=S.device, dtype=ct), 1.0
        mean, var = posterior_from_stats(S.to(ct), b.to(ct), x_q.to(ct), noise, sqrt, n)
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
        """x [B, T, d], y [B, T] → (mean [B, T], var [B, T]); prediction t from points < t, via cumulative sums."""
        S, b = prefix_stats(x, y)
        n = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
        mean, var = self._posterior(S, b, x.unsqueeze(-2), n)  # queries [B, T, 1, d]
        return mean.squeeze(-1), var.squeeze(-1)

    def predict_prefixes(self, x: Tensor, y: Tensor) -> Tensor:
        """x [B, T, d], y [B, T] → [B, T] posterior means (cumulative-sum fast path)."""
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
