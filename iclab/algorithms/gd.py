"""Gradient descent learners, batched over prompts and prefix lengths, in the form LSA layers can implement.

GD: k steps from W₀ = 0 on L(W) = 1/(2N) Σ_i (W x_i − y_i)², N = the number of PRESENT context points (von
Oswald's construction puts P = η_l/N), W ← W − η_l A ∇L with an optional fixed preconditioner A [d, d].
GD++ (von Oswald): each step also transforms the data, x_j ← (I − γ_l XᵀX) x_j for every context and query
token, with X the *current* context inputs; the y-step of that layer uses the inputs before the transform
(one attention layer updates x and y from the same input tokens).
Debiased GD (He et al., docs/papers.md §7): ŷ = (η/L) Σ_i y_i (x_i − x̄)ᵀ x_q, x̄ the mean of the L present inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.least_squares import prefix_stats
from iclab.algorithms.registry import LearnerSpec, check_args, parse_int, parse_real, spec_string
from iclab.theory import debiased_gd_step

__all__ = ["GD", "LEARNERS", "DebiasedGD", "GDPlusPlus", "gd_predict", "gdpp_predict"]


def _as_steps(values: Sequence[float] | Tensor, like: Tensor) -> Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).reshape(-1)


def _counts(n: Tensor | None, x_ctx: Tensor) -> Tensor | int:
    """N per prompt as [B, 1] (at least 1: an empty context has zero gradient, so W stays 0), or the slot count."""
    if n is None:
        return x_ctx.shape[1]
    return n.to(x_ctx.dtype).clamp_min(1).unsqueeze(-1)


def gd_predict(
    x_ctx: Tensor,
    y_ctx: Tensor,
    x_q: Tensor,
    etas: Sequence[float] | Tensor,
    *,
    n: Tensor | None = None,
    precond: Tensor | None = None,
) -> Tensor:
    """len(etas) GD steps from W = 0. x_ctx [B, N, d], y_ctx [B, N], x_q [B, m, d] → [B, m].

    n [B]: number of present points (masked rows zero; default N); precond A [d, d]: W ← W − η A ∇L.
    Differentiable in etas (used for step tuning).
    """
    etas = _as_steps(etas, x_ctx)
    count = _counts(n, x_ctx)
    w = x_ctx.new_zeros(x_ctx.shape[0], x_ctx.shape[2])  # [B, d]
    for eta in etas:
        residual = torch.einsum("bnd,bd->bn", x_ctx, w) - y_ctx  # [B, N]
        grad = torch.einsum("bn,bnd->bd", residual, x_ctx) / count  # [B, d]
        if precond is not None:
            grad = grad @ precond.to(grad).T  # rows A·∇L
        w = w - eta * grad
    return torch.einsum("bmd,bd->bm", x_q, w)


def gd_prefix_weights(S: Tensor, b: Tensor, n: Tensor, etas: Tensor, precond: Tensor | None = None) -> Tensor:
    """The same GD from sufficient statistics: S [..., d, d], b [..., d], n [...] → W [..., d]; ∇L = (S W − b)/N."""
    count = n.to(S.dtype).clamp_min(1).unsqueeze(-1)
    w = torch.zeros_like(b)
    for eta in etas:
        grad = ((S @ w.unsqueeze(-1)).squeeze(-1) - b) / count
        if precond is not None:
            grad = grad @ precond.to(grad).T
        w = w - eta * grad
    return w


def gdpp_predict(
    x_ctx: Tensor,
    y_ctx: Tensor,
    x_q: Tensor,
    etas: Sequence[float] | Tensor,
    gammas: Sequence[float] | Tensor,
    *,
    n: Tensor | None = None,
) -> Tensor:
    """GD++ with per-step (η_l, γ_l). Shapes as `gd_predict`; differentiable in etas and gammas.

    Written in the residual form of the LSA token stream: r_i (context y-slots) starts at y_i, s (query slot)
    at 0; step l: r ← r − (η/N) X Xᵀ r, s ← s − (η/N) x_qᵀ Xᵀ r, then x ← (I − γ XᵀX) x. Prediction −s.
    Masked rows (zero x and y) stay zero throughout; n [B] counts the present ones (default N).
    """
    etas, gammas = _as_steps(etas, x_ctx), _as_steps(gammas, x_ctx)
    if etas.shape != gammas.shape:
        raise ValueError(f"gammas: must have one value per step ({etas.numel()}), got {gammas.numel()}")
    count = _counts(n, x_ctx)
    x, q, r = x_ctx, x_q, y_ctx
    s = x_q.new_zeros(x_q.shape[:2])  # [B, m]
    for eta, gamma in zip(etas, gammas):
        xr = torch.einsum("bnd,bn->bd", x, r)  # [B, d] = Xᵀr
        r_new = r - eta / count * torch.einsum("bnd,bd->bn", x, xr)
        s = s - eta / count * torch.einsum("bmd,bd->bm", q, xr)
        gram = torch.einsum("bnd,bne->bde", x, x)  # [B, d, d] = XᵀX
        x = x - gamma * torch.einsum("bnd,bde->bne", x, gram)
        q = q - gamma * torch.einsum("bmd,bde->bme", q, gram)
        r = r_new
    return -s


class GD(MaskedLearner):
    """Learner: k GD steps with steps `etas` (one per step; repeat one value for tied GD), optional [d, d]
    preconditioner A (W ← W − η A ∇L)."""

    def __init__(self, etas: Sequence[float], precond: Tensor | None = None):
        self.etas = [float(e) for e in etas]
        if not self.etas or not all(math.isfinite(e) for e in self.etas):
            raise ValueError(f"etas: must be a non-empty list of finite numbers, got {list(etas)}")
        if precond is not None:
            precond = torch.as_tensor(precond)
            if precond.dim() != 2 or precond.shape[0] != precond.shape[1]:
                raise ValueError(f"precond: must be a [d, d] matrix, got shape {tuple(precond.shape)}")
        self.precond = precond
        self.name = f"{'pgd' if precond is not None else 'gd'}:{len(self.etas)}"

    def _check(self, d: int) -> None:
        if self.precond is not None and self.precond.shape[0] != d:
            raise ValueError(f"precond: is {self.precond.shape[0]}x{self.precond.shape[0]}, the inputs have d = {d}")

    def predict_masked(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n] (masked rows zero), x_q [B, m, d], mask [B, n] → [B, m]."""
        self._check(x_ctx.shape[-1])
        return gd_predict(x_ctx, y_ctx, x_q, self.etas, n=mask.sum(-1), precond=self.precond)

    def predict_prefixes(self, x: Tensor, y: Tensor) -> Tensor:
        """x [B, T, d], y [B, T] → [B, T]: GD on the cumulative S_t, b_t with N_t = t (no expanded contexts)."""
        if y.dim() == 3:
            return super().predict_prefixes(x, y)
        self._check(x.shape[-1])
        S, b = prefix_stats(x, y)  # [B, T, d, d], [B, T, d]
        n = torch.arange(x.shape[1], device=x.device)
        w = gd_prefix_weights(S, b, n.unsqueeze(0), _as_steps(self.etas, x), self.precond)
        return torch.einsum("btd,btd->bt", x, w)


class GDPlusPlus(MaskedLearner):
    """Learner: k GD++ steps with per-step (η_l, γ_l); prefixes use the generic masked path."""

    def __init__(self, etas: Sequence[float], gammas: Sequence[float]):
        self.etas = [float(e) for e in etas]
        self.gammas = [float(g) for g in gammas]
        if len(self.etas) != len(self.gammas):
            raise ValueError(f"gammas: must have one value per step ({len(self.etas)}), got {len(self.gammas)}")
        self.name = f"gd++:{len(self.etas)}"

    def predict_masked(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n] (masked rows zero), x_q [B, m, d], mask [B, n] → [B, m]."""
        return gdpp_predict(x_ctx, y_ctx, x_q, self.etas, self.gammas, n=mask.sum(-1))


class DebiasedGD(MaskedLearner):
    """Debiased GD ŷ = c_L Σ_i y_i (x_i − x̄)ᵀ x_q with c_L = η/L (L present points).

    With `eta` the step is fixed. Without it c_L = 1/(m₂(L + d) + σ²/τ²), the optimum for x ~ N(0, m₂I) and
    w ~ N(0, τ²I) at every L (He et al.: η/L = 1/(L + d + σ²/τ²) at m₂ = 1; the centred sum over L Gaussian points
    is distributed as a plain sum over L − 1, so this is Mahankali's 1/(n + d + 1 + σ²/τ²) at n = L − 1).
    """

    def __init__(self, eta: float | None = None, *, m2: float = 1.0, noise_to_prior: float = 0.0):
        if eta is not None and not math.isfinite(eta):
            raise ValueError(f"eta: must be a finite number, got {eta}")
        if not (math.isfinite(m2) and m2 > 0) or not (math.isfinite(noise_to_prior) and noise_to_prior >= 0):
            raise ValueError(f"m2, noise_to_prior: need m2 > 0 and noise_to_prior >= 0, got {m2}, {noise_to_prior}")
        self.eta, self.m2, self.noise_to_prior = eta, float(m2), float(noise_to_prior)
        self.name = "debiased_gd" if eta is None else f"debiased_gd:{eta:g}"

    def _step(self, L: Tensor, d: int) -> Tensor:
        """c_L for counts L [...] (0 where L = 0: the empty context predicts 0)."""
        L = L.to(torch.get_default_dtype() if not L.is_floating_point() else L.dtype)
        if self.eta is not None:
            return torch.where(L > 0, self.eta / L.clamp_min(1), torch.zeros_like(L))
        return debiased_gd_step(L, d, sigma2=self.noise_to_prior, tau2=1.0, m2=self.m2)

    def _predict(self, sum_yx: Tensor, sum_x: Tensor, sum_y: Tensor, L: Tensor, x_q: Tensor) -> Tensor:
        # Σ_i y_i (x_i − x̄) = Σ y_i x_i − x̄ Σ y_i, x̄ = Σ x_i / L
        centred = sum_yx - sum_x / L.clamp_min(1).unsqueeze(-1) * sum_y.unsqueeze(-1)  # [..., d]
        step = self._step(L.to(x_q.dtype), x_q.shape[-1])
        return step.unsqueeze(-1) * (x_q @ centred.unsqueeze(-1)).squeeze(-1)

    def predict_masked(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n] (masked rows zero), x_q [B, m, d], mask [B, n] → [B, m]."""
        sum_yx = torch.einsum("bnd,bn->bd", x_ctx, y_ctx)
        return self._predict(sum_yx, x_ctx.sum(1), y_ctx.sum(1), mask.sum(-1), x_q)

    def predict_prefixes(self, x: Tensor, y: Tensor) -> Tensor:
        """x [B, T, d], y [B, T] → [B, T] from exclusive cumulative sums of y_i x_i, x_i, y_i."""
        if y.dim() == 3:
            return super().predict_prefixes(x, y)

        def excl(t: Tensor) -> Tensor:  # Σ_{i<t} along dim 1
            return torch.cat([torch.zeros_like(t[:, :1]), t[:, :-1].cumsum(1)], dim=1)

        L = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
        out = self._predict(excl(y.unsqueeze(-1) * x), excl(x), excl(y), L, x.unsqueeze(-2))  # [B, T, 1]
        return out.squeeze(-1)


# ----------------------------------------------------------------------------------------------------------------
# registry


_TUNED: dict[tuple, Any] = {}


def _tuned(task: Any, steps: int, plus_plus: bool) -> Any:
    """tune_steps(task, steps, plus_plus), cached per (task class, config): tuning takes seconds."""
    from iclab.algorithms.tuning import tune_steps  # tuning imports this module

    if task is None or not hasattr(task, "x_second_moment") or not hasattr(getattr(task, "config", None), "n_points"):
        raise ValueError("tuned steps need a linear-regression task; give eta=… for a fixed step")
    key = (type(task), task.config, steps, plus_plus)
    if key not in _TUNED:
        _TUNED[key] = tune_steps(task, steps, plus_plus=plus_plus)
    return _TUNED[key]


def _whitened_task(task: Any) -> Any:
    """The task in coordinates z = Λ^{-1/2} x (Λ = diag E[xxᵀ]): preconditioned GD with A = Λ⁻¹ on x is plain GD
    on z with w' = Λ^{1/2} w, so its steps are the plain-GD steps tuned on this task."""
    c = task.config
    if not hasattr(c, "x_dist"):
        raise ValueError("tuned pgd needs a linear-regression task; give eta=… for a fixed step")
    if c.x_dist == "uniform":  # U(−a, a) has variance a²/3: z ~ U(−√3, √3), w' = w·a/√3
        return type(task)(replace(c, x_scale=math.sqrt(3.0), w_scale=c.w_scale * c.x_scale / math.sqrt(3.0)))
    xcd = c.x_cov_diag or (1.0,) * c.d
    wcd = c.w_cov_diag or (1.0,) * c.d
    w_cov = None if c.x_cov_diag is None and c.w_cov_diag is None else tuple(a * b for a, b in zip(xcd, wcd))
    return type(task)(replace(c, x_scale=1.0, x_cov_diag=None, w_scale=c.w_scale * c.x_scale, w_cov_diag=w_cov))


def _steps_arg(name: str, args: tuple[str, ...]) -> int:
    if not args:
        raise ValueError(f"K: the number of steps is required ({name}:3)")
    return parse_int("K", args[0])


def _gd(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> GD:
    check_args(args, kwargs, 1, ("eta",))
    k = _steps_arg("gd", args)
    etas = [parse_real("eta", kwargs["eta"])] * k if "eta" in kwargs else list(_tuned(task, k, False).etas)
    learner = GD(etas)
    learner.name = spec_string("gd", args, kwargs)
    return learner


def _pgd(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> GD:
    check_args(args, kwargs, 1, ("eta",))
    k = _steps_arg("pgd", args)
    if task is None or not hasattr(task, "x_second_moment"):
        raise ValueError("needs a task: its preconditioner is the inverse input second moment")
    precond = torch.diag(1.0 / task.x_second_moment())
    etas = (
        [parse_real("eta", kwargs["eta"])] * k if "eta" in kwargs else list(_tuned(_whitened_task(task), k, False).etas)
    )
    learner = GD(etas, precond=precond)
    learner.name = spec_string("pgd", args, kwargs)
    return learner


def _gdpp(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> GDPlusPlus:
    check_args(args, kwargs, 1, ("eta", "gamma"))
    k = _steps_arg("gd++", args)
    if ("eta" in kwargs) != ("gamma" in kwargs):
        raise ValueError("give both eta and gamma (fixed steps) or neither (tuned to the task)")
    if "eta" in kwargs:
        etas, gammas = [parse_real("eta", kwargs["eta"])] * k, [parse_real("gamma", kwargs["gamma"])] * k
    else:
        tuned = _tuned(task, k, True)
        etas, gammas = list(tuned.etas), list(tuned.gammas)
    learner = GDPlusPlus(etas, gammas)
    learner.name = spec_string("gd++", args, kwargs)
    return learner


def _debiased(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> DebiasedGD:
    check_args(args, kwargs, 1)
    if args:
        learner = DebiasedGD(parse_real("ETA", args[0]))
    else:
        if task is None or not hasattr(task, "x_second_moment") or not hasattr(task, "w_second_moment"):
            raise ValueError("without ETA it needs a linear-regression task (its optimal step uses σ², τ², m₂)")
        m2 = task.x_second_moment().mean().item()
        tau2 = task.w_second_moment().mean().item()
        learner = DebiasedGD(m2=m2, noise_to_prior=float(task.config.noise_var) / tau2)
    learner.name = spec_string("debiased_gd", args, kwargs)
    return learner


LEARNERS: dict[str, LearnerSpec] = {
    "gd": LearnerSpec(_gd, "gd:K[:eta=ETA]", "K GD steps from 0 (steps tuned to the task, or one fixed eta)"),
    "pgd": LearnerSpec(
        _pgd, "pgd:K[:eta=ETA]", "K GD steps preconditioned by the task's inverse input second moment (tuned or eta)"
    ),
    "gd++": LearnerSpec(_gdpp, "gd++:K[:eta=ETA:gamma=GAMMA]", "K GD++ steps (von Oswald), tuned to the task"),
    "debiased_gd": LearnerSpec(
        _debiased, "debiased_gd[:ETA]", "debiased GD (He et al.); default step optimal for the task at every L"
    ),
}
