"""Local reference learners of Garg et al. (docs/papers.md §2), batched over prompts and prefix lengths.

* Averaging: ŵ = (1/k) Σ_i y_i x_i over the k present context points, ŷ = x_qᵀŵ (Garg's "averaging" baseline;
  one GD step from 0 with step η = 1 on ½·MSE). Its prefix fast path divides the exclusive cumulative sum
  b_t = Σ_{i<t} y_i x_i by t.
* k-nearest neighbours: the uniform mean of the targets of the K present points nearest to the query (Euclidean),
  or of all present points when fewer than K are present (Garg: min(K, t) neighbours). Absent points are put at
  distance +inf, so one `topk` over every slot serves every prompt and prefix at once, with no loop over prompts.
  Ties in distance are broken by `topk` (scikit-learn breaks them by its own order); continuous inputs have none.

An empty context predicts 0 (the base-class convention).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.registry import LearnerSpec, check_args, parse_int, spec_string

__all__ = ["KNN", "LEARNERS", "Averaging", "knn_from_distances"]


# ----------------------------------------------------------------------------------------------------------------
# averaging


class Averaging(MaskedLearner):
    """ŷ = x_qᵀ (1/k) Σ_i y_i x_i over the k present points (Garg et al.); 0 for an empty context.

    predict: x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d], mask [B, n] | None → [B, m];
    predict_prefixes: x [B, T, d], y [B, T] → [B, T] (vector targets [B, n, k] → [B, m, k] via the base class).
    """

    def __init__(self) -> None:
        self.name = "averaging"

    def predict_masked(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n] (masked rows zero, so they add nothing to Σ y_i x_i), x_q [B, m, d],
        mask [B, n] → [B, m]."""
        b = torch.einsum("bnd,bn->bd", x_ctx, y_ctx)  # [B, d] = Σ_i y_i x_i over present points
        k = mask.sum(-1).clamp_min(1).to(b.dtype)  # [B]; an empty context has b = 0, hence ŷ = 0
        return torch.einsum("bmd,bd->bm", x_q, b / k.unsqueeze(-1))

    def predict_prefixes(self, x: Tensor, y: Tensor) -> Tensor:
        """x [B, T, d], y [B, T] → [B, T]: ŷ_t = x_tᵀ b_t / t with b_t = Σ_{i<t} y_i x_i (0 at t = 0)."""
        if y.dim() == 3:
            return super().predict_prefixes(x, y)
        yx = y.unsqueeze(-1) * x  # [B, T, d]
        # Exclusive sum by padding (not by subtracting the inclusive one): exactly 0 at t = 0.
        b = torch.cat([torch.zeros_like(yx[:, :1]), yx[:, :-1].cumsum(1)], dim=1)  # [B, T, d]
        t = torch.arange(x.shape[1], device=x.device).clamp_min(1).to(x.dtype)  # [T]
        return torch.einsum("btd,btd->bt", x, b) / t


# ----------------------------------------------------------------------------------------------------------------
# k-nearest neighbours


def knn_from_distances(dist: Tensor, y: Tensor, present: Tensor, k: int) -> Tensor:
    """Uniform k-NN regression from distances: dist [B, m, n], y [B, n], present [B, m, n] bool (which context
    points each query may use) → [B, m]: the mean target of the min(k, #present) nearest present points, 0 if none.
    """
    B, m, n = dist.shape
    if n == 0:
        return y.new_zeros(B, m)
    dist = dist.masked_fill(~present, torch.inf)  # absent points sort after every present one
    kk = min(k, n)
    _, idx = torch.topk(dist, kk, dim=-1, largest=False)  # [B, m, kk], nearest first
    y_near = torch.gather(y.unsqueeze(1).expand(B, m, n), -1, idx)  # [B, m, kk]
    count = present.sum(-1).clamp(max=kk)  # [B, m]: neighbours actually used
    used = torch.arange(kk, device=dist.device) < count.unsqueeze(-1)  # [B, m, kk]: the first `count` are present
    total = torch.where(used, y_near, torch.zeros_like(y_near)).sum(-1)
    return total / count.clamp_min(1).to(total.dtype)


def _distances(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distances a [B, m, d], b [B, n, d] → [B, m, n], from differences: the matmul form
    ‖a‖² − 2aᵀb + ‖b‖² cancels for near points and can reorder the nearest neighbours."""
    if a.shape[-1] == 0:
        return a.new_zeros(a.shape[0], a.shape[1], b.shape[1])
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


class KNN(MaskedLearner):
    """Uniform K-nearest-neighbour regression among the present context points, Euclidean distance (Garg et al.:
    min(K, t) neighbours at prefix t); 0 for an empty context.

    predict: x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d], mask [B, n] | None → [B, m];
    predict_prefixes: x [B, T, d], y [B, T] → [B, T] (vector targets [B, n, k] → [B, m, k] via the base class).
    """

    def __init__(self, k: int):
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"K: must be an integer >= 1, got {k!r}")
        self.k = k
        self.name = f"knn:{k}"

    def predict_masked(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d], mask [B, n] → [B, m]."""
        present = mask.unsqueeze(1).expand(-1, x_q.shape[1], -1)  # [B, m, n]
        return knn_from_distances(_distances(x_q, x_ctx), y_ctx, present, self.k)

    def predict_prefixes(self, x: Tensor, y: Tensor) -> Tensor:
        """x [B, T, d], y [B, T] → [B, T]: query x_t among the points i < t, from one [B, T, T] distance matrix."""
        if y.dim() == 3:
            return super().predict_prefixes(x, y)
        T = x.shape[1]
        i = torch.arange(T, device=x.device)
        present = (i.unsqueeze(0) < i.unsqueeze(1)).unsqueeze(0).expand(x.shape[0], T, T)  # [B, T (query), T]
        return knn_from_distances(_distances(x, x), y, present, self.k)


# ----------------------------------------------------------------------------------------------------------------
# registry entries


def _averaging(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> Averaging:
    check_args(args, kwargs, 0)
    return Averaging()


def _knn(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> KNN:
    check_args(args, kwargs, 1)
    if not args:
        raise ValueError("K: the number of neighbours is required (knn:3)")
    learner = KNN(parse_int("K", args[0], low=1))
    learner.name = spec_string("knn", args, kwargs)
    return learner


LEARNERS: dict[str, LearnerSpec] = {
    "averaging": LearnerSpec(_averaging, "averaging", "ŷ = x_qᵀ (1/k) Σ y_i x_i over the k context points (Garg)"),
    "knn": LearnerSpec(_knn, "knn:K", "uniform K-nearest-neighbour regression, Euclidean, min(K, k) neighbours"),
}
