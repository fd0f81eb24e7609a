"""Lasso, batched over prompts, prefix lengths and regularisation strengths, from sufficient statistics.

Objective (scikit-learn's `Lasso(fit_intercept=False)`), over the n present points:
    P(w) = (1/(2n)) ‖y − Xw‖² + α‖w‖₁.
It depends on the data only through S = XᵀX, b = Xᵀy, yᵀy and n, so one solver serves a masked context (sums over
the present rows) and every prefix of a prompt (exclusive cumulative sums), with no loop over prompts.

Solver, per problem and batched:
1. the homotopy (LARS with the lasso modification) from λ = ‖b/n‖_∞ down to α, in float64: exact up to
   round-off after at most a few times d segments, each one batched linear solve on the active set;
2. FISTA (Beck & Teboulle) from there, for the problems whose duality gap does not yet pass: gradient (Sw − b)/n,
   per-problem step 1/L with L = λ_max(S/n) (`eigvalsh`), soft-thresholding at α/L, gradient-based adaptive restart
   (O'Donoghue & Candès), at most `iters` iterations. It catches what the homotopy cannot do exactly (a singular
   active set, e.g. duplicate columns); with `homotopy=False` it is the whole solver, from w = 0.
Stopping test: scikit-learn's duality gap of n·P, gap ≤ tol·yᵀy (so tol bounds P(w) − min P relative to
P(0) = yᵀy/(2n)), in float64, checked every `CHECK_EVERY` iterations; converged problems leave the batch.

Why the homotopy: for t < d points and small α, P is flat along the null space of X except for α‖w‖₁, and
first-order methods take 10⁴+ iterations to move weight there (measured: FISTA alone in float32, 1000 iterations,
α = 10⁻³, d = 20, 41 points left objectives up to 28% too high); predictions at new queries depend on exactly
that. The statistics are formed in float64 whatever the input dtype: a float32 Gram matrix of t < d points is not
of rank t, and the path then leaves the true problem. An empty context (n = 0) or all-zero inputs have w = 0, the
exact minimiser; nothing divides by zero, and finite input gives finite output.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.least_squares import gram_stats, prefix_stats
from iclab.algorithms.registry import LearnerSpec, check_args, parse_dtype, parse_int, parse_real, spec_string

__all__ = ["LEARNERS", "Lasso", "lasso_duality_gap", "lasso_objective", "lasso_weights"]

CHECK_EVERY = 10  # iterations between duality-gap checks (each costs a float64 pass over S)
PIVOT_TOL = 1e-12  # homotopy: an active set whose Cholesky pivot² falls below this × max diag(A_MM) is singular
RATE_TOL = 1e-10  # homotopy: inactive columns with |Aδ| this close to 1 lie in the span of the active ones


def lasso_objective(S: Tensor, b: Tensor, yy: Tensor, n: Tensor, alpha: Tensor | float, w: Tensor) -> Tensor:
    """P(w) = (1/(2n))‖y − Xw‖² + α‖w‖₁ from S [..., d, d], b [..., d], yy = yᵀy [...], n [...], w [..., d] → [...]
    (α a float or broadcastable to [...]; 0 where n = 0)."""
    Sw = (S @ w.unsqueeze(-1)).squeeze(-1)  # [..., d]
    rss = (yy - 2 * (b * w).sum(-1) + (w * Sw).sum(-1)).clamp_min(0)  # ‖y − Xw‖²
    return torch.where(n > 0, rss / (2 * n.clamp_min(1)) + alpha * w.abs().sum(-1), torch.zeros_like(rss))


def lasso_duality_gap(S: Tensor, b: Tensor, yy: Tensor, n: Tensor, alpha: Tensor, w: Tensor) -> Tensor:
    """scikit-learn's duality gap of n·P at w (its `enet_coordinate_descent` with no ℓ2 term) → [...].

    Inputs as `lasso_objective`. With residual R = y − Xw and the dual point θ = c·R, c = min(1, nα/‖XᵀR‖_∞):
    gap = ½‖R‖²(1 + c²) + nα‖w‖₁ − c·Rᵀy ≥ n·(P(w) − min P) ≥ 0 (up to round-off).
    """
    Sw = (S @ w.unsqueeze(-1)).squeeze(-1)  # [..., d]
    bw = (b * w).sum(-1)
    r2 = (yy - 2 * bw + (w * Sw).sum(-1)).clamp_min(0)  # ‖R‖²
    dual_norm = (b - Sw).abs().amax(-1)  # ‖XᵀR‖_∞ (d ≥ 1)
    na = n * alpha
    c = torch.where(dual_norm > na, na / torch.where(dual_norm > na, dual_norm, torch.ones_like(na)), 1.0)
    return 0.5 * r2 * (1 + c * c) + na * w.abs().sum(-1) - c * (yy - bw)


def _soft(v: Tensor, thr: Tensor) -> Tensor:
    """Soft-thresholding sign(v)·max(|v| − thr, 0); v [P, d], thr [P, 1]."""
    return v.sign() * (v.abs() - thr).clamp_min(0)


def _homotopy(A: Tensor, c: Tensor, alpha: Tensor, max_steps: int) -> tuple[Tensor, Tensor]:
    """The exact Lasso solution by the homotopy (LARS with the lasso modification), batched over problems.

    A = S/n [P, d, d], c = b/n [P, d], α [P] → (w [P, d], reached [P] bool). The path starts at λ = ‖c‖_∞ with
    w = 0 and lowers λ. On a segment with active set M and signs s, w_M(λ) = u − λδ with u = A_MM⁻¹c_M,
    δ = A_MM⁻¹s_M, and the correlations are r(λ) = c − Aw(λ) = g + λ·rate (g = c − Au, rate = Aδ), equal to λs
    on M. The segment ends at the largest λ where an inactive |r_j| reaches λ (j joins), an active w_j changes
    sign (j leaves), or at α. Each segment is solved afresh from (M, s), so round-off does not accumulate; at
    |M| = n the inactive r_j are exactly proportional to λ and then meet ±λ only at λ = 0.
    `reached` is False where the path met a singular A_MM (e.g. duplicate columns) or needed more than
    `max_steps` segments; w is then the last point of the path.
    """
    P, d = c.shape
    out = torch.zeros_like(c)
    reached = torch.ones(P, dtype=torch.bool, device=c.device)
    lam = c.abs().amax(-1)  # [P]: w = 0 is optimal for every α ≥ ‖c‖_∞
    idx = (lam > alpha).nonzero().squeeze(-1)  # the problems with a nonzero solution
    A, c, alpha, lam = A[idx], c[idx], alpha[idx], lam[idx]
    j0 = c.abs().argmax(-1, keepdim=True)  # [P', 1]: the first variable to join
    sign = torch.zeros_like(c).scatter_(-1, j0, c.gather(-1, j0).sign())  # [P', d]: s on M, 0 off it
    # The variable that changed last may not undo that change at once (its event sits at the current λ).
    no_up = no_down = no_drop = sign != 0
    inf = torch.tensor(-torch.inf, dtype=c.dtype, device=c.device)  # "no event" (events are maxima over λ)
    w = torch.zeros_like(c)
    for _ in range(max_steps):
        if idx.numel() == 0:
            break
        on = (sign != 0).to(c.dtype)  # [P', d]
        mat = A * (on.unsqueeze(-1) * on.unsqueeze(-2))  # [P', d, d]: A_MM, then ⊕ I off M
        mat.diagonal(dim1=-2, dim2=-1).add_(1 - on)
        chol, info = torch.linalg.cholesky_ex(mat)  # [P', d, d]
        # A_MM is singular (active columns dependent, as in non-general-position designs) when a pivot is tiny
        pivot = chol.diagonal(dim1=-2, dim2=-1).square()  # [P', d]: the Schur complements along M
        size = (A.diagonal(dim1=-2, dim2=-1) * on).amax(-1, keepdim=True)  # [P', 1]
        good = (info == 0) & ((pivot > PIVOT_TOL * size) | (on == 0)).all(-1)  # [P']
        chol = torch.where(good[:, None, None], chol, torch.eye(d, dtype=c.dtype, device=c.device))
        sol = torch.cholesky_solve(torch.stack([c * on, sign], dim=-1), chol)  # [P', d, 2], zero off M
        good &= torch.isfinite(sol).all(-1).all(-1)
        sol = torch.where(good[:, None, None], sol, torch.zeros_like(sol))
        u, delta = sol.unbind(-1)  # [P', d] each: u = A_MM⁻¹c_M, δ = A_MM⁻¹s_M
        Au, rate = (A @ sol).unbind(-1)  # [P', d] each: Au and rate = Aδ
        g = c - Au
        free = on == 0
        # an inactive r_j meets +λ at λ = g/(1 − rate) (violated below it if rate < 1), −λ at λ = −g/(1 + rate)
        # (|rate| within RATE_TOL of 1: a column dependent on M, e.g. a duplicate; it meets ±λ only at λ = 0)
        up, down = free & ~no_up & (rate < 1 - RATE_TOL), free & ~no_down & (rate > RATE_TOL - 1)
        # an active w_j = u_j − λδ_j crosses 0 at λ = u_j/δ_j, into the wrong sign below it if s_j·δ_j < 0
        drop = (on > 0) & ~no_drop & (sign * delta < 0)
        cand = torch.cat(
            [
                torch.where(up, g / torch.where(up, 1 - rate, 1.0), inf),
                torch.where(down, -g / torch.where(down, 1 + rate, 1.0), inf),
                torch.where(drop, u / torch.where(drop, delta, 1.0), inf),
            ],
            dim=-1,
        )  # [P', 3d]: the λ of each event; one at or above the current λ is overdue and happens now
        event, pos = torch.minimum(cand, lam.unsqueeze(-1)).max(-1)  # [P']
        finish = (event <= alpha) | ~good
        lam = torch.where(finish, alpha, event)
        w = torch.where(good.unsqueeze(-1), u - lam.unsqueeze(-1) * delta, w)  # [P', d]: the path at λ (0 off M)
        hit = F.one_hot(pos % d, d).bool() & ~finish.unsqueeze(-1)  # [P', d]: the variable of the event
        kind = (pos // d).unsqueeze(-1)  # [P', 1]: 0 joins at +λ, 1 joins at −λ, 2 leaves
        left = hit & (kind == 2)
        no_up, no_down, no_drop = left & (sign > 0), left & (sign < 0), hit & (kind < 2)
        sign = torch.where(hit & (kind == 0), 1.0, torch.where(hit & (kind == 1), -1.0, sign))
        sign = torch.where(left, 0.0, sign)
        out[idx[finish]] = w[finish]
        reached[idx[~good]] = False
        keep = ~finish
        idx, A, c, alpha, lam, w, sign, no_up, no_down, no_drop = (
            v[keep] for v in (idx, A, c, alpha, lam, w, sign, no_up, no_down, no_drop)
        )
    out[idx] = w  # ran out of segments
    reached[idx] = False
    return out, reached


def _fista(
    A: Tensor, c: Tensor, alpha: Tensor, w: Tensor, stats64: tuple[Tensor, ...], iters: int, tol: float
) -> Tensor:
    """FISTA with adaptive restart from w: A = S/n [P, d, d], c = b/n [P, d], α [P], w [P, d] (all in the working
    dtype), stats64 = (S, b, yᵀy, n, α) in float64 for the stopping test → w [P, d]."""
    d = A.shape[-1]
    # eigvalsh can undershoot λ_max by round-off; a step a hair under 1/L keeps FISTA's guarantee.
    L = torch.linalg.eigvalsh(A)[:, -1].clamp_min(0) * (1 + 4 * d * torch.finfo(A.dtype).eps)  # [P]
    step = torch.where(L > 0, 1.0 / torch.where(L > 0, L, torch.ones_like(L)), torch.zeros_like(L)).unsqueeze(-1)
    thr = alpha.unsqueeze(-1) * step  # [P, 1]; L = 0 (S = 0): step 0, w stays 0
    out = w.clone()  # [P, d]
    idx = torch.arange(w.shape[0], device=w.device)  # the problems still running
    z, t = w, torch.ones_like(alpha)
    for it in range(1, iters + 1):
        grad = (A @ z.unsqueeze(-1)).squeeze(-1) - c  # [P', d]
        w_new = _soft(z - step * grad, thr)
        t_new = 0.5 * (1 + torch.sqrt(1 + 4 * t * t))
        uphill = ((z - w_new) * (w_new - w)).sum(-1) > 0  # [P']: the momentum points uphill → restart
        t_new = torch.where(uphill, torch.ones_like(t_new), t_new)
        z = torch.where(uphill.unsqueeze(-1), w_new, w_new + ((t - 1) / t_new).unsqueeze(-1) * (w_new - w))
        w, t = w_new, t_new
        if it % CHECK_EVERY and it != iters:
            continue
        out[idx] = w
        stats = [v[idx] for v in stats64]
        keep = lasso_duality_gap(*stats, w.double()) > tol * stats[2]  # [P']: not converged yet
        if not bool(keep.any()):
            break
        idx, w, z, t, A, c, step, thr = (v[keep] for v in (idx, w, z, t, A, c, step, thr))
    return out


def lasso_weights(
    S: Tensor,
    b: Tensor,
    yy: Tensor,
    n: Tensor,
    alpha: Tensor | float,
    iters: int = 1000,
    tol: float = 1e-6,
    dtype: torch.dtype | None = None,
    homotopy: bool = True,
) -> Tensor:
    """Lasso minimisers from sufficient statistics (see the module docstring): homotopy, then FISTA if needed.

    S = XᵀX [..., d, d], b = Xᵀy [..., d], yy = yᵀy [...] (best in float64), n [...] (number of present points,
    0 allowed) and α > 0 (a float or a tensor broadcastable to [...]: S[:, None] with α [A] solves several α at
    once) → w [..., d] in `dtype` (default S's dtype), which is also FISTA's working dtype.
    """
    batch = torch.broadcast_shapes(S.shape[:-2], b.shape[:-1], yy.shape, n.shape, torch.as_tensor(alpha).shape)
    d, dt = S.shape[-1], dtype or S.dtype
    f64 = dict(dtype=torch.float64, device=S.device)
    S64 = S.to(**f64).expand(*batch, d, d).reshape(-1, d, d)  # [P, d, d]: one problem per (batch element, α)
    b64 = b.to(**f64).expand(*batch, d).reshape(-1, d)  # [P, d]
    yy64 = yy.to(**f64).expand(batch).reshape(-1)  # [P]
    n64 = n.to(**f64).expand(batch).reshape(-1)  # [P]
    a64 = torch.as_tensor(alpha, **f64).expand(batch).reshape(-1)  # [P]
    if d == 0 or S64.shape[0] == 0:
        return torch.zeros(*batch, d, dtype=dt, device=S.device)
    scale = n64.clamp_min(1)  # [P]; n = 0 has S = 0 and b = 0
    A64, c64 = S64 / scale[:, None, None], b64 / scale[:, None]
    w = torch.zeros_like(b64)
    if homotopy:  # where the path stopped early, its last point is kept only if it beats w = 0
        path = _homotopy(A64, c64, a64, 4 * d)[0]
        better = lasso_objective(S64, b64, yy64, n64, a64, path) <= lasso_objective(S64, b64, yy64, n64, a64, w)
        w = torch.where(better.unsqueeze(-1), path, w)
    w = w.to(dt)
    stats64 = (S64, b64, yy64, n64, a64)
    todo = (lasso_duality_gap(*stats64, w.double()) > tol * yy64).nonzero().squeeze(-1)  # [P'']
    if todo.numel():
        sub = tuple(v[todo] for v in stats64)
        w[todo] = _fista(A64[todo].to(dt), c64[todo].to(dt), a64[todo].to(dt), w[todo], sub, iters, tol)
    return w.reshape(*batch, d)


class Lasso(MaskedLearner):
    """Lasso ŷ = x_qᵀŵ, ŵ = argmin (1/(2n))‖y − Xw‖² + α‖w‖₁ over the n present points (no intercept), α > 0.

    iters: maximum FISTA iterations after the homotopy; tol: relative duality-gap tolerance (module docstring).
    The statistics and the homotopy are float64 whatever the input; `dtype=torch.float64` also runs FISTA and the
    predictions in float64 (default: the input dtype). An empty context predicts 0.

    predict: x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d], mask [B, n] | None → [B, m];
    predict_prefixes: x [B, T, d], y [B, T] → [B, T] (vector targets [B, n, k] → [B, m, k] via the base class).
    """

    def __init__(self, alpha: float, iters: int = 1000, tol: float = 1e-6, dtype: torch.dtype | None = None):
        if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"ALPHA: must be a finite number > 0, got {alpha!r}")
        if not (isinstance(iters, int) and iters >= 1):
            raise ValueError(f"iters: must be an integer >= 1, got {iters!r}")
        if not (isinstance(tol, int | float) and math.isfinite(tol) and tol >= 0):
            raise ValueError(f"tol: must be a finite number >= 0, got {tol!r}")
        self.alpha, self.iters, self.tol, self.dtype = float(alpha), iters, float(tol), dtype
        self.name = f"lasso:{alpha:g}"

    def weights_from_stats(self, S: Tensor, b: Tensor, yy: Tensor, n: Tensor, dtype: torch.dtype) -> Tensor:
        """ŵ [..., d] from S [..., d, d], b [..., d], yy [...], n [...] (see `lasso_weights`)."""
        return lasso_weights(S, b, yy, n, self.alpha, self.iters, self.tol, dtype=self.dtype or dtype)

    def predict_masked(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n] (masked rows zero), x_q [B, m, d], mask [B, n] (n counts present points)
        → [B, m]."""
        x64, y64 = x_ctx.double(), y_ctx.double()
        S, b = gram_stats(x64, y64)  # [B, d, d], [B, d]
        w = self.weights_from_stats(S, b, y64.square().sum(-1), mask.sum(-1), x_q.dtype)  # [B, d]
        return torch.einsum("bmd,bd->bm", x_q.to(w.dtype), w).to(x_q.dtype)

    def predict_prefixes(self, x: Tensor, y: Tensor) -> Tensor:
        """x [B, T, d], y [B, T] → [B, T]: prefix t solved from the exclusive cumulative sums S_t, b_t, yᵀy_t, t
        (chunked over B by `chunk_elements`)."""
        if y.dim() == 3:
            return super().predict_prefixes(x, y)
        B, T, d = x.shape
        step = max(1, self.chunk_elements // max(T * d * d, 1))
        out = []
        for s in range(0, B, step):
            x64, y64 = x[s : s + step].double(), y[s : s + step].double()
            S, b = prefix_stats(x64, y64)  # [B', T, d, d], [B', T, d]
            y2 = y64.square()
            yy = torch.cat([torch.zeros_like(y2[:, :1]), y2[:, :-1].cumsum(1)], dim=1)  # [B', T] = Σ_{i<t} y_i²
            n = torch.arange(T, device=x.device).expand(x64.shape[0], -1)  # [B', T]
            w = self.weights_from_stats(S, b, yy, n, x.dtype)  # [B', T, d]
            out.append(torch.einsum("btd,btd->bt", x[s : s + step].to(w.dtype), w).to(x.dtype))
        return torch.cat(out)


# ----------------------------------------------------------------------------------------------------------------
# registry entries


def _lasso(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> Lasso:
    check_args(args, kwargs, 1, ("iters", "tol", "float64"))
    if not args:
        raise ValueError("ALPHA: required, a finite number > 0 (lasso:0.1)")
    learner = Lasso(
        parse_real("ALPHA", args[0], low=0.0, strict=True),
        iters=parse_int("iters", kwargs.get("iters", "1000"), low=1),
        tol=parse_real("tol", kwargs.get("tol", "1e-6"), low=0.0),
        dtype=parse_dtype(kwargs),
    )
    learner.name = spec_string("lasso", args, kwargs)
    return learner


LEARNERS: dict[str, LearnerSpec] = {
    "lasso": LearnerSpec(
        _lasso,
        "lasso:ALPHA[:iters=1000][:tol=1e-6][:float64=1]",
        "Lasso (1/(2n))‖y − Xw‖² + α‖w‖₁, no intercept (scikit-learn's objective): batched homotopy, then FISTA",
    ),
}
