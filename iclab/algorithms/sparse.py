"""Lasso, batched over prompts, prefix lengths and regularisation strengths, from sufficient statistics.

Objective (scikit-learn's `Lasso(fit_intercept=False)`), over the n present points:
    P(w) = (1/(2n)) ‖y − Xw‖² + α‖w‖₁.
It depends on the data only through S = XᵀX, b = Xᵀy, yᵀy and n, so one solver serves a masked context (sums over
the present rows) and every prefix of a prompt (exclusive cumulative sums), with no loop over prompts.

Solver, per problem and batched:
1. the homotopy (LARS with the lasso modification) from λ = ‖b/n‖_∞ down to α, in float64: exact up to round-off
   after at most a few times d segments, each a few batched mat-vecs (`segment` updates S_MM⁻¹ by rank one). Its
   plain reference `homotopy_reference` (a fresh factorisation per segment) re-solves any problem whose end point
   fails the certificate duality gap ≤ EXACT_GAP·yᵀy (`_finish`). Prefix t starts from prefix t − 1's solution
   (`lasso_prefix_weights`): 3.1 segments a prefix instead of 13 from w = 0 (Garg's d = 20, 41 points);
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
from torch import Tensor

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.lasso_path import Paths, cold_paths, homotopy_path, homotopy_reference, refine, segment
from iclab.algorithms.least_squares import gram_stats
from iclab.algorithms.registry import LearnerSpec, check_args, parse_dtype, parse_int, parse_real, spec_string

__all__ = ["LEARNERS", "Lasso", "lasso_duality_gap", "lasso_objective", "lasso_prefix_weights", "lasso_weights"]

CHECK_EVERY = 10  # iterations between duality-gap checks (each costs a float64 pass over S)
EXACT_GAP = 1e-12  # homotopy: a duality gap above this × yᵀy is not round-off; the reference path solves again

Stats = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]  # (S, b, yᵀy, n, α) of a batch of problems [P, ...]


def _rows(stats: Stats, idx: Tensor) -> Stats:
    """The statistics of the problems `idx` only."""
    S, b, yy, n, alpha = stats
    return S[idx], b[idx], yy[idx], n[idx], alpha[idx]


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


def _fista(A: Tensor, c: Tensor, alpha: Tensor, w: Tensor, stats64: Stats, iters: int, tol: float) -> Tensor:
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
        stats = _rows(stats64, idx)
        keep = lasso_duality_gap(*stats, w.double()) > tol * stats[2]  # [P']: not converged yet
        if not bool(keep.any()):
            break
        idx, w, z, t, A, c, step, thr = (v[keep] for v in (idx, w, z, t, A, c, step, thr))
    return out


def _certified(stats64: Stats, w: Tensor, tol: float, dt: torch.dtype) -> Tensor:
    """[P] bool: w [P, d] (float64) solves its problem exactly up to round-off (duality gap ≤ EXACT_GAP·yᵀy), and
    the dt-rounded copy passes the tolerance (gap ≤ tol·yᵀy). stats64 = (S, b, yᵀy, n, α) in float64."""
    yy = stats64[2]
    ok = lasso_duality_gap(*stats64, w) <= EXACT_GAP * yy
    if dt != torch.float64 or tol < EXACT_GAP:
        ok &= lasso_duality_gap(*stats64, w.to(dt).double()) <= tol * yy
    return ok


def _finish(stats64: Stats, w: Tensor, reached: Tensor, iters: int, tol: float, dt: torch.dtype, exact: bool) -> Tensor:
    """The last stage of both entry points: stats64 = (S, b, yᵀy, n, α) in float64 [P, ...], w [P, d] float64 from
    the fast path, reached [P] → w [P, d] in dt.

    1. (exact) Where the path did not reach its end, or its duality gap exceeds EXACT_GAP·yᵀy (round-off in the
       rank-one updates gone wrong), `homotopy_reference` solves the problem again with a fresh factorisation per
       segment; the best of its point, the fast path's and w = 0 is kept.
    2. FISTA (in dt) wherever the duality gap of the dt-rounded point fails tol.
    """
    yy64, n64 = stats64[2:4]
    scale = n64.clamp_min(1)  # [P]; n = 0 has S = 0 and b = 0
    if exact:
        redo = (~reached | (lasso_duality_gap(*stats64, w) > EXACT_GAP * yy64)).nonzero().squeeze(-1)
        if redo.numel():
            sub, s = _rows(stats64, redo), scale[redo]
            ref = homotopy_reference(sub[0] / s[:, None, None], sub[1] / s[:, None], sub[4], 4 * w.shape[-1])[0]
            cand = torch.stack([w[redo], ref, torch.zeros_like(ref)])  # [3, R, d]
            best = lasso_objective(*sub, cand).argmin(0)  # [R]
            w = w.index_copy(0, redo, cand[best, torch.arange(redo.numel(), device=w.device)])
    w = w.to(dt)
    todo = (lasso_duality_gap(*stats64, w.double()) > tol * yy64).nonzero().squeeze(-1)  # [P'']
    if todo.numel():
        sub, s = _rows(stats64, todo), scale[todo]
        w = w.clone() if w.dtype == torch.float64 else w
        w[todo] = _fista(
            (sub[0] / s[:, None, None]).to(dt), (sub[1] / s[:, None]).to(dt), sub[4].to(dt), w[todo], sub, iters, tol
        )
    return w


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
    f64: dict[str, Any] = dict(dtype=torch.float64, device=S.device)
    S64 = S.to(**f64).expand(*batch, d, d).reshape(-1, d, d)  # [P, d, d]: one problem per (batch element, α)
    b64 = b.to(**f64).expand(*batch, d).reshape(-1, d)  # [P, d]
    yy64 = yy.to(**f64).expand(batch).reshape(-1)  # [P]
    n64 = n.to(**f64).expand(batch).reshape(-1)  # [P]
    a64 = torch.as_tensor(alpha, **f64).expand(batch).reshape(-1)  # [P]
    if d == 0 or S64.shape[0] == 0:
        return torch.zeros(*batch, d, dtype=dt, device=S.device)
    w, reached = torch.zeros_like(b64), torch.ones_like(n64, dtype=torch.bool)
    if homotopy:
        scale = n64.clamp_min(1)  # [P]; n = 0 has S = 0 and b = 0
        w, reached = homotopy_path(S64 / scale[:, None, None], b64 / scale[:, None], a64, 4 * d)
    return _finish((S64, b64, yy64, n64, a64), w, reached, iters, tol, dt, homotopy).reshape(*batch, d)


def lasso_prefix_weights(
    x: Tensor, y: Tensor, alpha: float, iters: int = 1000, tol: float = 1e-6, dtype: torch.dtype | None = None
) -> Tensor:
    """Lasso minimisers for every prefix: x [B, T, d], y [B, T] → w [B, T, d] in `dtype` (default x's), prefix t
    from points < t (t = 0: w = 0). The guarantees of `lasso_weights` on the prefix statistics, at less cost.

    Prefix t starts from prefix t − 1 rather than from w = 0. In the unscaled form ½‖y − Xw‖² + nα‖w‖₁ the
    previous solution w' (penalty λ0 = (t − 1)α) stays optimal after adding the point (x, y) if that point's
    target is its own prediction x·w' (its residual, and with it its gradient, is 0): b' = b_{t−1} + x(x·w').
    A path then moves b from b' to b_t = b_{t−1} + xy and λ from λ0 to tα together (db = (y − x·w')x, dλ = α),
    usually in one to three segments, with S_MM⁻¹ carried over by Sherman–Morrison. Every problem on the way is a
    least-squares problem on real data, so it stays bounded for t ≤ d, as LARS's do. Prefix 1, and any prefix
    whose predecessor did not reach its solution, starts cold (LARS from λ = ‖b_t‖_∞). Prompts run through their
    prefixes independently: one batched segment per iteration for every prompt, each at its own prefix, so the
    iterations number about the most segments any one prompt needs over all its prefixes.
    """
    B, T, d = x.shape
    dt = dtype or x.dtype
    f64: dict[str, Any] = dict(dtype=torch.float64, device=x.device)
    w_all = torch.zeros(B, T, d, **f64)  # [B, T, d]: the paths' end points
    reached = torch.ones(B, T, dtype=torch.bool, device=x.device)
    ok = reached.clone()  # reached and `_certified`; the rest go through `_finish`
    x64, y64 = x.to(**f64), y.to(**f64)
    a = float(alpha)
    if B and d and T > 1:
        b, yy = y64[:, :1] * x64[:, 0], y64[:, 0].square()  # [B, d], [B]: the statistics of the prefix solved
        p = cold_paths(x64[:, 0, :, None] * x64[:, 0, None, :], b, torch.full_like(yy, a))  # prefix 1
        pid = torch.arange(B, device=x.device)  # [P]: the prompt of each row
        t = torch.ones_like(pid)  # [P]: its prefix
        count = torch.zeros_like(pid)  # [P]: segments so far on this prefix
        done = torch.zeros_like(pid, dtype=torch.bool)  # [P]: all its prefixes solved
        while pid.numel():
            w, finish, singular = segment(p, done)
            count += 1
            stop = ~done & (finish | singular | (count >= 4 * d))
            f = stop.nonzero().squeeze(-1)
            if f.numel():
                good = finish[f] & ~singular[f]  # [F]: reached
                H_f = p.H[f]
                w_f, S_f = refine(p, f, w[f], H_f, good)
                pf, tf = pid[f], t[f]
                passes = _certified((S_f, b[f], yy[f], tf.to(w_f.dtype), torch.full_like(yy[f], a)), w_f, tol, dt)
                w_all[pf, tf], reached[pf, tf], ok[pf, tf] = w_f, good, good & passes
                t[f] += 1
                count[f] = 0
                more = t[f] < T
                done[f[~more]] = True
                f, tm, good, w_f, H_f = f[more], t[f[more]], good[more], w_f[more], H_f[more]
                if f.numel():  # on to prefix tm: add point tm − 1
                    xn, yn = x64[pid[f], tm - 1], y64[pid[f], tm - 1]
                    _next_prefix(p, b, yy, f, H_f, xn, yn, w_f, good, tm.to(xn.dtype) * a, a)
            if 4 * int(done.sum()) >= done.numel():
                keep = ~done
                p, pid, t, count, done, b, yy = p.take(keep), *(v[keep] for v in (pid, t, count, done, b, yy))
    out = w_all.to(dt)
    todo = (~ok).nonzero()  # [K, 2]: the (prompt, prefix) pairs for `_finish`
    if todo.numel():
        bi, ti = todo.unbind(-1)
        m = (torch.arange(T, device=x.device) < ti.unsqueeze(-1)).to(x64.dtype)  # [K, T]: the points < t
        xs, ys = x64[bi] * m.unsqueeze(-1), y64[bi] * m
        S, bk = gram_stats(xs, ys)
        stats = (S, bk, ys.square().sum(-1), ti.to(x64.dtype), torch.full_like(m[:, 0], a))
        out[bi, ti] = _finish(stats, w_all[bi, ti], reached[bi, ti], iters, tol, dt, exact=True)
    return out


def _next_prefix(
    p: Paths,
    b: Tensor,
    yy: Tensor,
    rows: Tensor,
    H: Tensor,
    xn: Tensor,
    yn: Tensor,
    w: Tensor,
    warm: Tensor,
    lam: Tensor,
    a: float,
) -> None:
    """Move `rows` (H = their S_MM⁻¹; the previous prefix has end point w [R, d], reached where `warm`) on to the
    next prefix, whose penalty is lam [R] = tα, by adding the point (xn [R, d], yn [R]): S, b, yᵀy and H in place,
    then a warm start (see `lasso_prefix_weights`), or a cold one where the last path did not reach its end."""
    pred = (xn * w).sum(-1)  # [R]
    b_start = b[rows] + xn * pred.unsqueeze(-1)  # [R, d]: w solves (S_t, b_start, (t − 1)α)
    p.S.index_put_((rows,), xn.unsqueeze(-1) * xn.unsqueeze(-2), accumulate=True)
    Hx = (xn.unsqueeze(1) @ H).squeeze(1)  # [R, d]: Sherman–Morrison for S_MM + x_M x_Mᵀ
    p.H[rows] = H.addcmul_((Hx / (1 + (xn * Hx).sum(-1, keepdim=True))).unsqueeze(-1), Hx.unsqueeze(-2), value=-1)
    b[rows] += yn.unsqueeze(-1) * xn
    yy[rows] += yn * yn
    db = (yn - pred).unsqueeze(-1) * xn  # [R, d]: b_t − b_start
    p.restart(rows[warm], b_start[warm], db[warm], lam[warm] - a, a)
    cold = rows[~warm]
    if cold.numel():
        p.put(cold, cold_paths(p.S[cold], b[cold], lam[~warm]))


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

    def scalar_prefixes(self, x: Tensor, y: Tensor) -> Tensor:
        """x [B, T, d], y [B, T] → [B, T]: prefix t from points < t, each prefix warm-started from the one before
        (`lasso_prefix_weights`; chunked over B by `chunk_elements`, counting B·d·(d + T) elements of state)."""
        B, T, d = x.shape
        step = max(1, self.chunk_elements // max(d * (d + T), 1))
        out = []
        for s in range(0, B, step):
            xs = x[s : s + step]
            w = lasso_prefix_weights(xs, y[s : s + step], self.alpha, self.iters, self.tol, self.dtype or x.dtype)
            out.append(torch.einsum("btd,btd->bt", xs.to(w.dtype), w).to(x.dtype))  # [B', T]
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
