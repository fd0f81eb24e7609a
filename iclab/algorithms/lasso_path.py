"""The Lasso homotopy (LARS with the lasso modification), batched: the exact path from λ = ‖b/n‖_∞ down to α.

Problems are given by A = S/n and c = b/n (S = XᵀX, b = Xᵀy over the present points) and solve
min_w ½wᵀAw − cᵀw + α‖w‖₁, which is iclab.algorithms.sparse's objective up to a constant. `homotopy_path` runs every
problem's path at once, one segment per iteration (a kink: a coordinate enters or leaves the active set M), keeping
S_MM⁻¹ by rank-one updates (`segment`) and refining the end point (`refine`); `homotopy_reference` is the plain
version (a fresh factorisation per segment) that the tests and the fallback in sparse.py compare with. In float64.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Paths", "cold_paths", "homotopy_path", "homotopy_reference", "refine", "segment"]

PIVOT_TOL = 1e-12  # homotopy: an active set whose Cholesky pivot² falls below this × max diag(A_MM) is singular
RATE_TOL = 1e-10  # homotopy: inactive columns with |Aδ| this close to 1 lie in the span of the active ones
DRIFT_TOL = 1e-12  # homotopy: a refinement step that moves w by more than this (relative) resynchronises S_MM⁻¹


def homotopy_reference(A: Tensor, c: Tensor, alpha: Tensor, max_steps: int) -> tuple[Tensor, Tensor]:
    """The exact Lasso solution by the homotopy (LARS with the lasso modification), batched over problems: the
    plain reference for `homotopy_path`, which follows the same path with rank-one updates instead of a fresh
    factorisation per segment, and the fallback where a fast result fails its certificate (sparse.py's `_finish`).

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


@dataclass
class Paths:
    """A batch of Lasso paths min ½wᵀSw − b(s)ᵀw + λ(s)‖w‖₁, b(s) = b0 + s·db, λ(s) = lam0 + s·dlam ≥ 0, each from
    s = 0, where (sign, H) describe the solution, to s = 1 (see `segment`). Shapes: S, H [P, d, d]; b0, db, sign
    and the masks [P, d]; lam0, dlam, at [P, 1]. Masks are 0/1 in the working dtype: float arithmetic is much
    cheaper than torch.where on CPU."""

    S: Tensor
    H: Tensor  # S_MM⁻¹ on the active set M, zero off it (symmetric)
    b0: Tensor
    db: Tensor
    lam0: Tensor
    dlam: Tensor
    sign: Tensor  # s on M, 0 off it
    at: Tensor  # the current s
    may_up: Tensor  # 0 where the variable that changed last would undo that change at once (its event sits at s)
    may_down: Tensor
    may_drop: Tensor

    def take(self, rows: Tensor) -> Paths:
        return Paths(*(getattr(self, f.name)[rows] for f in fields(self)))

    def put(self, rows: Tensor, other: Paths) -> None:
        for f in fields(self):
            getattr(self, f.name)[rows] = getattr(other, f.name)

    def restart(self, rows: Tensor, b0: Tensor, db: Tensor, lam0: Tensor, dlam: Tensor | float) -> None:
        """A new path for `rows` from their current (sign, H), which must describe its solution at s = 0."""
        self.b0[rows], self.db[rows], self.lam0[rows], self.dlam[rows] = b0, db, lam0.unsqueeze(-1), dlam
        self.at[rows], self.may_up[rows], self.may_down[rows], self.may_drop[rows] = 0.0, 1.0, 1.0, 1.0


def cold_paths(S: Tensor, b: Tensor, lam: Tensor) -> Paths:
    """LARS from w = 0: S [P, d, d], b [P, d], λ [P] → paths on which λ falls from λ0 = max(‖b‖_∞, λ) to λ with
    the argmax of |b| active at the start (none where ‖b‖_∞ ≤ λ: there dλ = 0 and w = 0 throughout)."""
    P = b.shape[0]
    top, j = b.abs().max(-1)  # [P]
    k = torch.arange(P, device=b.device)
    nonzero = top > lam
    sign = torch.zeros_like(b)
    sign[k, j] = torch.where(nonzero, b[k, j].sign(), 0.0)
    H = torch.zeros_like(S)
    H[k, j, j] = torch.where(nonzero, 1 / torch.where(nonzero, S[k, j, j], 1.0), 0.0)
    lam0 = torch.maximum(top, lam).unsqueeze(-1)
    ones = [torch.ones_like(b) for _ in range(3)]  # the masks (own storage: rows get reset)
    return Paths(S, H, b.clone(), torch.zeros_like(b), lam0, lam.unsqueeze(-1) - lam0, sign, 0 * lam0, *ones)


def segment(p: Paths, done: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One segment of every path in p (updated in place; rows marked `done` stay where they are) → w [P, d] at
    the end of the segment, finish [P] (s = 1 reached, or done) and singular [P] (the next active set would be
    singular: the path stops at w).

    On a segment w_M(s) = u + sδ with u = H(b0 − λ0·s_M), δ = H(db − dλ·s_M), and the correlations
    r(s) = b(s) − Sw(s) = g + sρ equal λ(s)·s on M. The segment ends at the first s where an inactive |r_j| meets
    λ(s) (j joins), an active w_j reaches 0 (j leaves), or at 1. An inactive column dependent on M (e.g. a
    duplicate) has ρ_j = ±dλ: its r_j moves with ±λ and never meets it, hence the margin RATE_TOL·|dλ| (the
    reference's |Aδ| < 1 − RATE_TOL). H follows M by rank-one updates instead of a factorisation per segment: a
    join j borders it (v = H·S[:, j], Schur complement σ = S_jj − S[:, j]ᵀv, H += zzᵀ/σ with z = v − e_j;
    σ ≤ PIVOT_TOL·max diag(S_{M+j}) is a singular active set), a leave removes it (H −= H[:, j]H[j, :]/H_jj).
    Round-off in H moves an event by about cond(S_MM)·eps, far below the gaps between events in general position;
    `refine` removes it from the result.
    """
    P, d = p.b0.shape
    rows = torch.arange(P, device=p.b0.device)
    rhs = torch.stack([p.b0 - p.lam0 * p.sign, p.db - p.dlam * p.sign], dim=1)  # [P, 2, d]
    u, delta = (rhs @ p.H).unbind(1)  # [P, d] each (H symmetric): u and δ, 0 off M
    Su, Sd = (torch.stack([u, delta], dim=1) @ p.S).unbind(1)  # [P, d] each
    g, rho = p.b0 - Su, p.db - Sd
    on = p.sign.abs()
    free = 1 - on
    # Each event e happens at s = N_e/D_e if it approaches (D_e above its margin): an inactive r_j meets +λ
    # (N = λ0 − g, D = ρ − dλ) or −λ (N = λ0 + g, D = −ρ − dλ); an active w_j = u_j + sδ_j reaches 0
    # (N = s_j·u_j, D = −s_j·δ_j).
    margin = RATE_TOL * p.dlam.abs()  # [P, 1]
    N = torch.cat([p.lam0 - g, p.lam0 + g, p.sign * u], dim=-1)  # [P, 3d]
    D = torch.cat([rho - p.dlam, -rho - p.dlam, -p.sign * delta], dim=-1)  # [P, 3d]
    ok = torch.cat([free * p.may_up, free * p.may_down, on * p.may_drop], dim=-1)
    low = torch.cat([margin.expand(P, 2 * d), torch.zeros_like(u)], dim=-1)  # [P, 3d]: the margins
    ok = ok * (low < D).to(ok.dtype)
    # "no event" is s = 2 (paths end at 1); an event at or before the current s is overdue and happens now
    cand = torch.maximum(N / (D * ok + (1 - ok)) * ok + 2 * (1 - ok), p.at)  # [P, 3d]
    event, pos = cand.min(-1)  # [P]
    finish = (event >= 1) | done
    p.at = torch.where(finish, 1.0, event).unsqueeze(-1)
    w = u + p.at * delta  # [P, d]: the path at s (0 off M)
    j, kind = pos % d, pos // d  # [P]: the variable of the event; 0 joins at +λ, 1 joins at −λ, 2 leaves
    join, leave = ~finish & (kind < 2), ~finish & (kind == 2)
    s_j = p.S.reshape(P * d, d)[rows * d + j]  # [P, d]: row j of S (symmetric)
    h_j = p.H.reshape(P * d, d)[rows * d + j]  # [P, d]: row j of H
    v = (s_j.unsqueeze(1) @ p.H).squeeze(1)  # [P, d]: H·S[:, j]
    S_jj, H_jj = s_j.gather(1, j.unsqueeze(-1)), h_j.gather(1, j.unsqueeze(-1))  # [P, 1] each
    sigma = S_jj - (s_j * v).sum(-1, keepdim=True)  # [P, 1]: the Schur complement of S_jj in S_{M+j}
    scale = torch.maximum((p.S.diagonal(dim1=-2, dim2=-1) * on).amax(-1, keepdim=True), S_jj)
    singular = join & ~(sigma > PIVOT_TOL * scale).squeeze(-1)  # (a NaN σ is singular too)
    jf, lf = (join & ~singular).to(u.dtype).unsqueeze(-1), leave.to(u.dtype).unsqueeze(-1)  # [P, 1]
    e_j = torch.zeros_like(u).scatter_(1, j.unsqueeze(-1), 1.0)  # [P, d]
    z = jf * (v - e_j) + lf * h_j
    kappa = jf / (sigma * jf + (1 - jf)) - lf / (H_jj * lf + (1 - lf))  # [P, 1]
    p.H.addcmul_((kappa * z).unsqueeze(-1), z.unsqueeze(-2))  # H += κzzᵀ
    gone = leave.nonzero().squeeze(-1)  # exact zeros in row and column j, whatever the round-off
    p.H[gone, j[gone], :] = 0
    p.H[gone, :, j[gone]] = 0
    s_old = (p.sign * e_j).sum(-1, keepdim=True)  # [P, 1]: the sign of j before the event
    p.may_up, p.may_down = 1 - e_j * (lf * s_old).clamp_min(0), 1 - e_j * (-lf * s_old).clamp_min(0)
    p.may_drop = 1 - e_j * jf
    p.sign = p.sign * (1 - e_j * lf) + e_j * jf * (1 - 2 * kind.to(u.dtype).unsqueeze(-1))
    return w, finish, singular


def refine(p: Paths, rows: Tensor, w: Tensor, H: Tensor, good: Tensor) -> tuple[Tensor, Tensor]:
    """The end points w [R, d] of the paths `rows`, with H = p.H[rows], refined against S_MM where `good`
    → (w [R, d], S[rows]).

    One step of iterative refinement, w_M += H(b_M − λs_M − S_MM w_M) at s = 1, removes from w the round-off
    that H has gathered (its error times the error of w). Where that step moved w by more than DRIFT_TOL, H
    itself is resynchronised in place by a Newton–Schulz step H ← 2H − H·S·H (exact zeros off M stay), which
    squares its relative error, and a second refinement step follows.
    """
    S, sign = p.S[rows], p.sign[rows]
    on = sign.abs()
    rhs = (p.b0[rows] + p.db[rows] - (p.lam0[rows] + p.dlam[rows]) * sign) * on  # b_M − λs_M at s = 1, 0 off M
    dw = ((rhs - (w.unsqueeze(1) @ S).squeeze(1) * on).unsqueeze(1) @ H).squeeze(1)
    w = w + dw * good.to(w.dtype).unsqueeze(-1)
    drift = (good & (dw.abs().amax(-1) > DRIFT_TOL * w.abs().amax(-1))).nonzero().squeeze(-1)
    if drift.numel():
        Hd, Sd, wd = H[drift], S[drift], w[drift]
        Hd = 2 * Hd - Hd @ Sd @ Hd
        H[drift] = Hd
        w[drift] = wd + ((rhs[drift] - (wd.unsqueeze(1) @ Sd).squeeze(1) * on[drift]).unsqueeze(1) @ Hd).squeeze(1)
    return w, S


def homotopy_path(A: Tensor, c: Tensor, alpha: Tensor, max_steps: int) -> tuple[Tensor, Tensor]:
    """The exact Lasso solution by the homotopy (LARS with the lasso modification), batched over problems.

    A = S/n [P, d, d], c = b/n [P, d], α [P] → (w [P, d], reached [P] bool): the path of `homotopy_reference`,
    followed by `segment` from λ = ‖c‖_∞ down to α. `reached` is False where the path met a singular active set
    or needed more than `max_steps` segments; w is then the last point of the path. Problems that finish stay in
    the batch, frozen, until a quarter of it has finished (compaction copies A and H).
    """
    w = torch.zeros_like(c)
    reached = torch.ones(c.shape[0], dtype=torch.bool, device=c.device)
    idx = (c.abs().amax(-1) > alpha).nonzero().squeeze(-1)  # w = 0 is optimal for every α ≥ ‖c‖_∞
    p = cold_paths(A[idx], c[idx], alpha[idx])
    done = torch.zeros_like(idx, dtype=torch.bool)
    w_p = torch.zeros_like(p.b0)
    for _ in range(max_steps):
        if idx.numel() == 0:
            break
        w_p, finish, singular = segment(p, done)
        new = ((finish & ~done) | singular).nonzero().squeeze(-1)  # each result is written once
        if new.numel():
            w[idx[new]] = refine(p, new, w_p[new], p.H[new], ~singular[new])[0]  # singular: where it stopped
            reached[idx[new[singular[new]]]] = False
            done = done | finish | singular
        if 4 * int(done.sum()) >= done.numel():
            keep = ~done
            p, idx, done, w_p = p.take(keep), idx[keep], done[keep], w_p[keep]
    live = ~done  # ran out of segments
    w[idx[live]] = w_p[live]
    reached[idx[live]] = False
    return w, reached
