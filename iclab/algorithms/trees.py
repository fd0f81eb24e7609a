"""Greedy regression trees (CART, squared error) and gradient boosting, fitted per prompt and batched over prompts.

Tree (scikit-learn's `DecisionTreeRegressor(max_depth=D)` algorithm, grown level by level for all prompts at once):
a node is a leaf when it is at depth D, has < 2 points, is pure (impurity ≤ float64 eps, sklearn's test) or has no
split position; otherwise it takes the split of largest gain over all features and all positions between
consecutive distinct sorted values (distinct: more than 1e-7 apart, sklearn's FEATURE_THRESHOLD), threshold
x_p/2 + x_{p+1}/2, x ≤ threshold going left, even when that gain is 0 (as sklearn does). Leaves predict the mean of
their targets; an empty context predicts 0.

Batching. Each feature's values are sorted once per fit ([B, d, n]). A level holds K ≤ min(2^level, n) node
slots per prompt, renumbered densely every level; every feature's sorted row is regrouped node by node (one argsort
of integer keys), and the left sums of all (node, feature, position) come from one segmented cumulative sum, so a
level costs O(B·d·n) whatever K. Targets are centred on their node's mean: L²/n_L + R²/n_R is then the gain itself,
and the running sum never carries another node's magnitude. Prompts with nothing left to split skip the search;
boosting reuses the presorted order in every stage.

Ties. Splits whose gains agree to a relative 1e-10 are ties, broken by the lowest feature index, then the lowest
threshold. scikit-learn breaks them by a random feature order (`random_state`), and ties are common even on
continuous data: in a small node several features often induce the same partition (a 2-point node always does).
Tied splits give the same predictions at the context points but may route a query differently, so the tests
compare queries against the set of predictions that some tie-breaking reaches. sklearn also rounds x to float32
before fitting; iclab keeps the input precision. Statistics are computed in float64 whatever the input dtype.

Boosting (`gbt`): F_0 = mean(y), F_s = F_{s−1} + lr · tree_s, tree_s fitted to the residuals y − F_{s−1} at the
context points — scikit-learn's `GradientBoostingRegressor(n_estimators, max_depth, learning_rate)` with the
squared-error loss, subsample = 1, whose stage trees use criterion squared_error (since sklearn 1.9 always; its
older default friedman_mse ranks splits by n_L n_R (ȳ_L − ȳ_R)² = n × the gain, the same order). Garg et al.
use XGBoost (`XGBRegressor()` defaults: 100 trees, depth 6, lr 0.3, L2 leaf penalty 1); iclab uses this exact
greedy boosting with scikit-learn as its reference, with sklearn's defaults (100 trees, depth 3, lr 0.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.registry import LearnerSpec, check_args, parse_int, parse_real, spec_string

__all__ = ["LEARNERS", "DecisionTree", "GradientBoosting", "LevelTree", "boost", "grow_tree", "presort"]

FEATURE_THRESHOLD = 1e-7  # sklearn: values closer than this are not split between
PURE = torch.finfo(torch.float64).eps  # sklearn: a node with impurity ≤ eps is a leaf
TIE = 1e-10  # relative gain difference below which two splits are a tie


def presort(x: Tensor) -> tuple[Tensor, Tensor]:
    """x [B, n, d] → (values sorted per feature [B, d, n], the point index of each sorted slot [B, d, n])."""
    xs, order = x.transpose(1, 2).sort(dim=-1, stable=True)  # [B, d, n]
    return xs, order


@dataclass
class LevelTree:
    """A batch of trees, one per prompt, stored level by level.

    levels[l] = (feature [B, K_l], threshold [B, K_l], left [B, K_l]): node k of level l sends x to node left[k]
    of level l + 1 if x[feature] ≤ threshold, else to left[k] + 1 (threshold +inf: not split, all go left).
    value [B, K_L]: leaf values at the last level.
    """

    levels: list[tuple[Tensor, Tensor, Tensor]]
    value: Tensor

    def apply(self, x: Tensor) -> Tensor:
        """Leaf slot of every input: x [B, m, d] → [B, m] (int64)."""
        node = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
        for feature, threshold, left in self.levels:
            f = feature.gather(1, node)  # [B, m]
            value = x.gather(2, f.unsqueeze(-1)).squeeze(-1)  # [B, m]
            node = left.gather(1, node) + (value > threshold.gather(1, node)).long()
        return node

    def predict(self, x: Tensor) -> Tensor:
        """x [B, m, d] → [B, m] leaf values."""
        return self.value.gather(1, self.apply(x))


def _node_stats(node: Tensor, y: Tensor, K: int) -> tuple[Tensor, Tensor, Tensor]:
    """(count, Σy, Σy²) per node slot [B, K] from node ids [B, n] (−1: absent) and y [B, n]."""
    present = (node >= 0).to(y.dtype)
    slot = node.clamp_min(0)
    zeros = y.new_zeros(y.shape[0], K)
    count = zeros.scatter_add(1, slot, present)
    total = zeros.scatter_add(1, slot, y * present)
    square = zeros.scatter_add(1, slot, y * y * present)
    return count, total, square


def _best_splits(xs: Tensor, order: Tensor, node: Tensor, y: Tensor, mean: Tensor):
    """Best split of every node slot: (has a split [B, K] bool, feature [B, K], threshold [B, K]).

    xs, order [B, d, n] presorted; node [B, n] (−1 absent); y [B, n]; mean [B, K] node means.
    """
    B, d, n = xs.shape
    K = mean.shape[1]
    pos = torch.arange(n, device=xs.device)
    node_s = node.gather(1, order.reshape(B, d * n)).reshape(B, d, n)  # node of each presorted slot
    # regroup every feature's sorted row node by node (unique keys: node-major, then sorted position)
    perm = (torch.where(node_s >= 0, node_s, K) * n + pos).argsort(-1)  # [B, d, n]
    g_node = node_s.gather(-1, perm)  # [B, d, n]: node segments, each sorted by the feature
    g_x = xs.gather(-1, perm)
    g_point = order.gather(-1, perm).reshape(B, d * n)
    member = g_node >= 0
    slot = torch.where(member, g_node, K).reshape(B, d * n)  # K: a spare slot for absent points
    mean_k = torch.cat([mean, mean.new_zeros(B, 1)], dim=1)
    centred = torch.where(member, (y.gather(1, g_point) - mean_k.gather(1, slot)).reshape(B, d, n), 0.0)
    # segmented cumulative sums: the running sum minus its value before the segment; centred segments sum to
    # ~0, so the running sum never carries another node's magnitude
    running = centred.cumsum(-1)
    first = torch.ones_like(member)
    first[..., 1:] = g_node[..., 1:] != g_node[..., :-1]
    start = torch.where(first, pos, 0).cummax(-1).values  # [B, d, n] index where the segment starts
    last = torch.ones_like(member)
    last[..., :-1] = first[..., 1:]
    end = torch.where(last, pos, n).flip(-1).cummin(-1).values.flip(-1)  # [B, d, n] index where it ends
    left = running - (running - centred).gather(-1, start)
    n_left = (pos - start + 1).to(xs.dtype)
    right = left.gather(-1, end) - left  # the segment's total minus the left part
    n_right = (end - pos).to(xs.dtype)
    nxt = torch.cat([g_x[..., 1:], torch.full_like(g_x[..., :1], math.inf)], dim=-1)
    valid = member & ~last & (nxt > g_x + FEATURE_THRESHOLD)
    gain = left.square() / n_left + right.square() / n_right.clamp_min(1)
    gain = torch.where(valid, gain, -math.inf).reshape(B, d * n)
    best = gain.new_full((B, K + 1), -math.inf).scatter_reduce(1, slot, gain, "amax").gather(1, slot)
    tied = valid.reshape(B, d * n) & (gain >= best - TIE * best.abs())
    code = torch.arange(d * n, device=xs.device).expand(B, d * n)  # feature·n + grouped position
    code = torch.where(tied, code, d * n)  # the lowest tied code: lowest feature, then lowest threshold
    choice = code.new_full((B, K + 1), d * n).scatter_reduce(1, slot, code, "amin")[:, :K]
    found = choice < d * n
    choice = torch.where(found, choice, 0)
    lo = g_x.reshape(B, d * n).gather(1, choice)
    hi = nxt.reshape(B, d * n).gather(1, choice)
    return found, choice // n, lo / 2 + hi / 2  # sklearn's midpoint, as a sum of halves


def grow_tree(
    xs: Tensor, order: Tensor, x: Tensor, y: Tensor, present: Tensor, max_depth: int | None
) -> tuple[LevelTree, Tensor]:
    """Fit one tree per prompt: presorted xs, order [B, d, n], x [B, n, d], y [B, n], present [B, n] bool →
    (the trees, each point's leaf slot [B, n], −1 for absent points). max_depth None: grow until every leaf is
    pure or cannot be split."""
    B = x.shape[0]
    node = torch.where(present, 0, -1)  # [B, n]
    K, levels, depth = 1, [], 0
    while True:
        count, total, square = _node_stats(node, y, K)
        mean = total / count.clamp_min(1)
        if depth == max_depth:
            break
        impurity = square / count.clamp_min(1) - mean.square()  # sklearn's formula
        splittable = (count >= 2) & (impurity > PURE)
        if not splittable.any():
            break
        active = splittable.any(1)  # [B]: prompts still growing; the others skip the split search
        if active.all():
            found, feature, threshold = _best_splits(xs, order, node, y, mean)
        else:
            found = torch.zeros_like(splittable)
            feature = torch.zeros(B, K, dtype=torch.long, device=node.device)
            threshold = mean.new_zeros(B, K)
            found[active], feature[active], threshold[active] = _best_splits(
                xs[active], order[active], node[active], y[active], mean[active]
            )
        split = splittable & found
        if not split.any():
            break
        feature = torch.where(split, feature, 0)
        threshold = torch.where(split, threshold, math.inf)
        children = torch.where(count > 0, 1 + split.long(), 0)  # [B, K]: empty slots have no children
        left = children.cumsum(1) - children  # renumber the next level's slots densely
        slot = node.clamp_min(0)
        value = x.gather(2, feature.gather(1, slot).unsqueeze(-1)).squeeze(-1)  # [B, n]
        go_right = (value > threshold.gather(1, slot)).long()
        node = torch.where(present, left.gather(1, slot) + go_right, -1)
        levels.append((feature, threshold, left))
        K, depth = int(children.sum(1).max()), depth + 1
    return LevelTree(levels, mean), node


def boost(
    x: Tensor, y: Tensor, present: Tensor, x_q: Tensor, n_estimators: int, max_depth: int, lr: float
) -> tuple[Tensor, Tensor]:
    """Gradient boosting for squared loss (module docstring): x [B, n, d], y [B, n], present [B, n], x_q [B, m, d]
    → (query predictions [B, m], context predictions [B, n]). Prompts with no present point predict 0."""
    xs, order = presort(x)
    count = present.sum(-1, keepdim=True).to(y.dtype)
    f0 = (y * present).sum(-1, keepdim=True) / count.clamp_min(1)  # [B, 1]
    fit, pred = f0.expand_as(y).clone(), f0.expand(x_q.shape[:2]).clone()
    for _ in range(n_estimators):
        tree, leaf = grow_tree(xs, order, x, torch.where(present, y - fit, 0.0), present, max_depth)
        fit = fit + lr * tree.value.gather(1, leaf.clamp_min(0))
        pred = pred + lr * tree.predict(x_q)
    empty = count == 0
    return torch.where(empty, 0.0, pred), torch.where(empty, 0.0, fit)


class _Chunked(MaskedLearner):
    """Shared plumbing: float64 statistics, chunks of `fit_elements` // (d·n) prompts (a level is [B, d, n])."""

    fit_elements: int = 1 << 22
    max_depth: int | None

    def _fit_predict(self, x: Tensor, y: Tensor, present: Tensor, x_q: Tensor) -> Tensor:
        raise NotImplementedError

    def predict_masked(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor) -> Tensor:
        """x_ctx [B, n, d], y_ctx [B, n] (absent points ignored through the mask), x_q [B, m, d] → [B, m]."""
        B, n, d = x_ctx.shape
        step = max(1, self.fit_elements // max(1, d * n))
        x_ctx, y_ctx, x_q64 = x_ctx.double(), y_ctx.double(), x_q.double()
        chunks = range(0, B, step)
        out = [
            self._fit_predict(x_ctx[s : s + step], y_ctx[s : s + step], mask[s : s + step], x_q64[s : s + step])
            for s in chunks
        ]
        return torch.cat(out).to(x_q.dtype) if out else x_q.new_zeros(0, x_q.shape[1])


class DecisionTree(_Chunked):
    """Greedy CART regression tree per prompt, depth ≤ max_depth (None: unlimited); see the module docstring."""

    def __init__(self, max_depth: int | None = 4):
        if max_depth is not None and max_depth < 1:
            raise ValueError(f"max_depth: must be an integer >= 1 or None, got {max_depth}")
        self.max_depth = max_depth
        self.name = f"tree:{'none' if max_depth is None else max_depth}"

    def fit(self, x_ctx: Tensor, y_ctx: Tensor, mask: Tensor) -> LevelTree:
        """The trees themselves (float64): x_ctx [B, n, d], y_ctx [B, n], mask [B, n] bool."""
        xs, order = presort(x_ctx.double())
        return grow_tree(xs, order, x_ctx.double(), y_ctx.double(), mask, self.max_depth)[0]

    def _fit_predict(self, x: Tensor, y: Tensor, present: Tensor, x_q: Tensor) -> Tensor:
        return self.fit(x, y, present).predict(x_q)


class GradientBoosting(_Chunked):
    """Gradient-boosted trees for squared loss (module docstring): n_estimators stages of depth-max_depth trees."""

    max_depth: int  # always a depth here (no unlimited trees in boosting)

    def __init__(self, n_estimators: int = 100, max_depth: int = 3, lr: float = 0.1):
        if n_estimators < 1 or max_depth < 1 or not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"gbt: needs n_estimators >= 1, depth >= 1, lr > 0; got {n_estimators}, {max_depth}, {lr}")
        self.n_estimators, self.max_depth, self.lr = n_estimators, max_depth, lr
        self.name = f"gbt:{n_estimators}:depth={max_depth}:lr={lr:g}"

    def _fit_predict(self, x: Tensor, y: Tensor, present: Tensor, x_q: Tensor) -> Tensor:
        return boost(x, y, present, x_q, self.n_estimators, self.max_depth, self.lr)[0]


# ----------------------------------------------------------------------------------------------------------------
# registry entries


def _tree(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> DecisionTree:
    check_args(args, kwargs, 1)
    if not args:
        raise ValueError("DEPTH: required, an integer >= 1 or none (tree:4)")
    depth = None if args[0].lower() == "none" else parse_int("DEPTH", args[0])
    learner = DecisionTree(depth)
    learner.name = spec_string("tree", args, kwargs)
    return learner


def _gbt(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> GradientBoosting:
    check_args(args, kwargs, 1, ("depth", "lr"))
    learner = GradientBoosting(
        n_estimators=parse_int("N_ESTIMATORS", args[0]) if args else 100,
        max_depth=parse_int("depth", kwargs["depth"]) if "depth" in kwargs else 3,
        lr=parse_real("lr", kwargs["lr"], low=0.0, strict=True) if "lr" in kwargs else 0.1,
    )
    learner.name = spec_string("gbt", args, kwargs)
    return learner


LEARNERS: dict[str, LearnerSpec] = {
    "tree": LearnerSpec(
        _tree, "tree:DEPTH", "greedy CART regression tree per prompt, sklearn's (DEPTH none: unlimited)"
    ),
    "gbt": LearnerSpec(
        _gbt,
        "gbt[:N_ESTIMATORS][:depth=D:lr=LR]",
        "gradient-boosted trees, squared loss (sklearn's algorithm; defaults 100 trees, depth 3, lr 0.1)",
    ),
}
