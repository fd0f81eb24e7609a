"""Batched CART trees and gradient boosting against scikit-learn and a naive recursive numpy CART, per prompt.

References. (1) scikit-learn `DecisionTreeRegressor(max_depth=D)` and `GradientBoostingRegressor(n_estimators,
max_depth, learning_rate)` fitted on each prompt's present points. (2) A naive recursive CART written from the
definition (every feature, every gap between distinct sorted values, gain n_L(ȳ_L − ȳ)² + n_R(ȳ_R − ȳ)²), which
also lists every split tied for best. Ties are frequent (a 2-point node is split equally well by every feature)
and scikit-learn breaks them by a random feature order, so:
* at the context points (the partition does not depend on the tie-break) the learners agree with scikit-learn to
  1e-6, relative to the largest target;
* at new queries they equal the naive CART with the same tie-break (lowest feature, then lowest threshold) to 1e-9,
  and scikit-learn's prediction is one that some tie-break reaches (each boosting stage separately), to 1e-6; where
  no tie touches a query this is plain agreement with scikit-learn.
Data: x ~ N(0, 1) rounded to float32 (scikit-learn fits on float32 x), continuous targets in float64.
"""

import functools

import numpy as np
import pytest
import torch
from reference_checks import as_tensor as _t
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.tree import DecisionTreeRegressor

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.registry import make_learner
from iclab.algorithms.trees import DecisionTree, GradientBoosting

SHAPES = [(1, 3), (2, 4), (5, 8), (6, 6), (20, 5), (40, 20), (15, 1)]  # (n, d): n < d, n = d, n > d, d = 1
EPS = np.finfo(np.float64).eps


def _case(n, d, seed, batch=4, m=6):
    """float32-exact Gaussian x, smooth targets plus noise; mask with prompt 0 complete and prompt 1 empty."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, n, d)).astype(np.float32).astype(np.float64)
    y = np.sin(2 * X[..., 0]) + X[..., -1] ** 2 + 0.3 * rng.standard_normal((batch, n))
    Xq = rng.standard_normal((batch, m, d)).astype(np.float32).astype(np.float64)
    mask = rng.random((batch, n)) < 0.75
    mask[0] = True
    mask[1] = False
    return X, y, Xq, mask


# ----------------------------------------------------------------------------------------------------------------
# naive recursive CART with every tied split


def naive_tree(X, y, max_depth):
    """X [k, d], y [k] → root node {value, splits: [(feature, threshold, left, right), …] tied best, first = ours}."""

    @functools.cache
    def fit(idx, depth):
        ys = y[list(idx)]
        node = {"value": ys.mean() if len(ys) else 0.0, "splits": []}
        if len(ys) < 2 or depth == max_depth or np.mean(ys**2) - ys.mean() ** 2 <= EPS:
            return node
        cands = []
        for f in range(X.shape[1]):
            rows = sorted(idx, key=lambda i: X[i, f])
            xs, yf = X[rows, f], y[rows]
            for p in range(len(rows) - 1):
                if xs[p + 1] <= xs[p] + 1e-7:
                    continue
                left, right = yf[: p + 1], yf[p + 1 :]
                gain = len(left) * (left.mean() - ys.mean()) ** 2 + len(right) * (right.mean() - ys.mean()) ** 2
                cands.append((gain, f, xs[p] / 2 + xs[p + 1] / 2))
        if cands:
            best = max(c[0] for c in cands)
            for gain, f, thr in cands:
                if gain >= best - 1e-10 * abs(best):
                    go_left = X[list(idx), f] <= thr
                    lo = tuple(i for i, g in zip(idx, go_left) if g)
                    hi = tuple(i for i, g in zip(idx, go_left) if not g)
                    node["splits"].append((f, thr, fit(lo, depth + 1), fit(hi, depth + 1)))
        return node

    return fit(tuple(range(len(y))), 0)


def naive_predict(node, q):
    """Our tie-break: the first tied split at every node."""
    while node["splits"]:
        f, thr, lo, hi = node["splits"][0]
        node = lo if q[f] <= thr else hi
    return node["value"]


def possible(node, q):
    """Every prediction some tie-break reaches."""
    if not node["splits"]:
        return {node["value"]}
    return set().union(*(possible(lo if q[f] <= thr else hi, q) for f, thr, lo, hi in node["splits"]))


def _in(value, values, tol):
    return min(abs(value - v) for v in values) <= tol


def _scale(y):
    return max(1.0, float(np.abs(y).max(initial=0.0)))


# ----------------------------------------------------------------------------------------------------------------
# trees


@pytest.mark.parametrize("depth", [1, 2, 4, None])
@pytest.mark.parametrize("n,d", SHAPES)
def test_tree_matches_sklearn_and_naive_cart(n, d, depth):
    X, y, Xq, mask = _case(n, d, seed=100 * n + d)
    learner = DecisionTree(depth)
    out_q = learner.predict(_t(X), _t(y), _t(Xq), _t(mask)).numpy()
    out_ctx = learner.predict(_t(X), _t(y), _t(X), _t(mask)).numpy()
    assert (out_q[1] == 0).all()  # empty context
    tol = 1e-6 * _scale(y)
    for b in range(X.shape[0]):
        Xb, yb = X[b][mask[b]], y[b][mask[b]]
        if len(yb) == 0:
            continue
        ref = DecisionTreeRegressor(max_depth=depth, random_state=0).fit(Xb.astype(np.float32), yb)
        np.testing.assert_allclose(out_ctx[b][mask[b]], ref.predict(Xb.astype(np.float32)), rtol=0, atol=tol)
        root = naive_tree(Xb, yb, depth)
        sk_q = ref.predict(Xq[b].astype(np.float32))
        for j, q in enumerate(Xq[b]):
            assert abs(out_q[b, j] - naive_predict(root, q)) <= 1e-9 * _scale(y)
            assert _in(sk_q[j], possible(root, q), tol), (b, j, sk_q[j], possible(root, q))


@pytest.mark.parametrize("T,d", [(1, 3), (6, 2), (12, 5)])
def test_tree_prefixes_match_per_prefix_fits(T, d):
    X, y, _, _ = _case(T, d, seed=T + d, batch=3)
    learner = DecisionTree(3)
    out = learner.predict_prefixes(_t(X), _t(y)).numpy()
    expected = [[naive_predict(naive_tree(X[b, :t], y[b, :t], 3), X[b, t]) for t in range(T)] for b in range(3)]
    np.testing.assert_allclose(out, np.array(expected), rtol=0, atol=1e-9 * _scale(y))
    np.testing.assert_allclose(MaskedLearner.scalar_prefixes(learner, _t(X), _t(y)).numpy(), out, rtol=0, atol=0)


def test_tree_chunking_dtype_and_degenerate_inputs():
    X, y, Xq, mask = _case(20, 5, seed=1)
    learner = DecisionTree(4)
    out = learner.predict(_t(X), _t(y), _t(Xq), _t(mask))
    learner.fit_elements = 1  # one prompt per chunk
    assert torch.equal(learner.predict(_t(X), _t(y), _t(Xq), _t(mask)), out)
    out32 = learner.predict(_t(X).float(), _t(y).float(), _t(Xq).float(), _t(mask))
    assert out32.dtype == torch.float32 and torch.allclose(out32.double(), out, atol=1e-5)
    # constant targets: one leaf, the constant; identical inputs: no split position, the mean
    const = learner.predict(_t(X), torch.full((4, 20), 2.5, dtype=torch.float64), _t(Xq))
    assert torch.equal(const, torch.full_like(const, 2.5))
    same_x = torch.ones(1, 5, 3, dtype=torch.float64)
    ys = torch.arange(5.0, dtype=torch.float64).unsqueeze(0)
    assert torch.allclose(learner.predict(same_x, ys, torch.randn(1, 2, 3, dtype=torch.float64)), ys.mean())
    # no context slots at all: 0, for both learners
    for empty in (learner, GradientBoosting(3, 2, 0.1)):
        assert torch.equal(
            empty.predict(torch.zeros(2, 0, 3), torch.zeros(2, 0), torch.ones(2, 4, 3)), torch.zeros(2, 4)
        )


# ----------------------------------------------------------------------------------------------------------------
# gradient boosting


def naive_boost(X, y, n_estimators, depth, lr):
    """The stages of the naive boosting: (init, [stage trees])."""
    fit, trees = np.full(len(y), y.mean()), []
    for _ in range(n_estimators):
        trees.append(naive_tree(X, y - fit, depth))
        fit = fit + lr * np.array([naive_predict(trees[-1], x) for x in X])
    return y.mean(), trees


@pytest.mark.parametrize("n_est,depth,lr", [(8, 2, 0.3), (5, 3, 0.1)])
@pytest.mark.parametrize("n,d", [(2, 4), (6, 6), (20, 5), (15, 1)])
def test_gbt_matches_sklearn_and_naive_boosting(n, d, n_est, depth, lr):
    X, y, Xq, mask = _case(n, d, seed=10 * n + d)
    learner = GradientBoosting(n_est, depth, lr)
    out_q = learner.predict(_t(X), _t(y), _t(Xq), _t(mask)).numpy()
    out_ctx = learner.predict(_t(X), _t(y), _t(X), _t(mask)).numpy()
    assert (out_q[1] == 0).all()
    tol = 1e-6 * _scale(y)
    for b in range(X.shape[0]):
        Xb, yb = X[b][mask[b]], y[b][mask[b]]
        if len(yb) == 0:
            continue
        ref = GradientBoostingRegressor(n_estimators=n_est, max_depth=depth, learning_rate=lr, random_state=0)
        ref.fit(Xb.astype(np.float32), yb)
        np.testing.assert_allclose(out_ctx[b][mask[b]], ref.predict(Xb.astype(np.float32)), rtol=0, atol=tol)
        init, trees = naive_boost(Xb, yb, n_est, depth, lr)
        for j, q in enumerate(Xq[b]):
            naive = init + lr * sum(naive_predict(t, q) for t in trees)
            assert abs(out_q[b, j] - naive) <= 1e-9 * _scale(y)
            for s, t in enumerate(trees):  # scikit-learn's stage tree: one of the tie-breaks of ours
                sk = ref.estimators_[s, 0].predict(q[None].astype(np.float32))[0]
                assert _in(sk, possible(t, q), tol), (b, j, s)
            if all(len(possible(t, q)) == 1 for t in trees):  # no tie on this query's paths
                assert abs(out_q[b, j] - ref.predict(q[None].astype(np.float32))[0]) <= tol


def test_gbt_prefixes_match_the_generic_path():
    X, y, _, _ = _case(8, 3, seed=7, batch=2)
    learner = GradientBoosting(4, 2, 0.5)
    fast = learner.predict_prefixes(_t(X), _t(y))
    init_trees = [[naive_boost(X[b, :t], y[b, :t], 4, 2, 0.5) if t else None for t in range(8)] for b in range(2)]
    expected = [
        [0.0 if t == 0 else it[0] + 0.5 * sum(naive_predict(tr, X[b, t]) for tr in it[1]) for t, it in enumerate(row)]
        for b, row in enumerate(init_trees)
    ]
    np.testing.assert_allclose(fast.numpy(), np.array(expected), rtol=0, atol=1e-9 * _scale(y))


# ----------------------------------------------------------------------------------------------------------------
# registry


def test_registry_names_and_parameters():
    assert make_learner("tree:4").max_depth == 4 and make_learner("tree:4").name == "tree:4"
    assert make_learner("tree:none").max_depth is None
    default = make_learner("gbt")
    assert (default.n_estimators, default.max_depth, default.lr) == (100, 3, 0.1)
    gbt = make_learner("gbt:20:depth=4:lr=0.3")
    assert gbt.name == "gbt:20:depth=4:lr=0.3" and (gbt.n_estimators, gbt.max_depth, gbt.lr) == (20, 4, 0.3)
