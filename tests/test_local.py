"""Averaging and k-nearest-neighbour learners against naive references, one prompt (and one prefix) at a time.

References: averaging = numpy (1/k) Σ y_i x_i over the present rows, written from Garg et al.'s definition;
kNN = scikit-learn's KNeighborsRegressor(n_neighbors=min(K, k), uniform weights, Euclidean) fitted on the present
rows (continuous random data: no distance ties). An empty context predicts 0. Tolerance: 1e-10 relative to the
largest reference value in float64 (1e-5 for float32 inputs).
"""

from functools import partial

import numpy as np
import pytest
import torch
from reference_checks import as_tensor as _t
from reference_checks import assert_rel_close
from reference_checks import per_prefix as _per_prefix
from reference_checks import per_prompt as _per_prompt
from sklearn.neighbors import KNeighborsRegressor

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.local import KNN, Averaging, knn_from_distances
from iclab.algorithms.registry import make_learner

_close = partial(assert_rel_close, rtol=1e-10)

SHAPES = [(0, 4), (1, 4), (3, 6), (6, 6), (12, 5), (7, 1)]  # (n, d): empty, n < d, n = d, n > d, d = 1
PREFIX_SHAPES = [(1, 3), (5, 1), (6, 4), (9, 8)]  # (T, d)


def _case(n, d, seed, batch=5, m=3):
    """Gaussian data, a random mask with prompt 0 complete, prompt 1 empty and prompt 2 with one point."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, n, d))
    y = rng.standard_normal((batch, n))
    Xq = rng.standard_normal((batch, m, d))
    mask = rng.random((batch, n)) < 0.6
    mask[0], mask[1], mask[2] = True, False, np.arange(n) == 0
    return X, y, Xq, mask


def naive_averaging(X, y, Xq):
    if X.shape[0] == 0:
        return np.zeros(Xq.shape[0])
    w = sum(y[i] * X[i] for i in range(X.shape[0])) / X.shape[0]
    return Xq @ w


def naive_knn(k):
    def fn(X, y, Xq):
        if X.shape[0] == 0:
            return np.zeros(Xq.shape[0])
        return KNeighborsRegressor(n_neighbors=min(k, X.shape[0])).fit(X, y).predict(Xq)

    return fn


# ----------------------------------------------------------------------------------------------------------------
# averaging


@pytest.mark.parametrize("n,d", SHAPES)
def test_averaging_matches_numpy_on_masked_contexts(n, d):
    X, y, Xq, mask = _case(n, d, seed=10 * n + d)
    out = Averaging().predict(_t(X), _t(y), _t(Xq), _t(mask))
    _close(out, _per_prompt(naive_averaging, X, y, Xq, mask))
    assert torch.count_nonzero(out[1]) == 0  # empty context → exactly 0
    _close(Averaging().predict(_t(X), _t(y), _t(Xq)), _per_prompt(naive_averaging, X, y, Xq, np.ones_like(mask)))


@pytest.mark.parametrize("T,d", PREFIX_SHAPES)
def test_averaging_prefix_fast_path_matches_generic_path_and_naive_loop(T, d):
    rng = np.random.default_rng(T * 10 + d)
    x, y = rng.standard_normal((3, T, d)), rng.standard_normal((3, T))
    expected = _per_prefix(naive_averaging, x, y)
    learner = Averaging()
    fast = learner.predict_prefixes(_t(x), _t(y))
    _close(fast, expected)
    _close(MaskedLearner.scalar_prefixes(learner, _t(x), _t(y)), expected)
    assert torch.count_nonzero(fast[:, 0]) == 0
    # float32 in, float32 out, close to the float64 reference on the same rounded inputs
    x32, y32 = _t(x).float(), _t(y).float()
    out32 = learner.predict_prefixes(x32, y32)
    assert out32.dtype == torch.float32
    _close(out32, _per_prefix(naive_averaging, x32.double().numpy(), y32.double().numpy()), rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# k-nearest neighbours


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("n,d", SHAPES)
def test_knn_matches_scikit_learn_on_masked_contexts(n, d, k):
    X, y, Xq, mask = _case(n, d, seed=n + 100 * d + k)
    out = KNN(k).predict(_t(X), _t(y), _t(Xq), _t(mask))
    _close(out, _per_prompt(naive_knn(k), X, y, Xq, mask))
    assert torch.count_nonzero(out[1]) == 0


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("T,d", PREFIX_SHAPES)
def test_knn_prefix_fast_path_matches_generic_path_and_scikit_learn(T, d, k):
    rng = np.random.default_rng(T + d + k)
    x, y = rng.standard_normal((3, T, d)), rng.standard_normal((3, T))
    expected = _per_prefix(naive_knn(k), x, y)
    learner = KNN(k)
    _close(learner.predict_prefixes(_t(x), _t(y)), expected)
    _close(MaskedLearner.scalar_prefixes(learner, _t(x), _t(y)), expected)
    x32, y32 = _t(x).float(), _t(y).float()
    out32 = learner.predict_prefixes(x32, y32)
    assert out32.dtype == torch.float32
    _close(out32, _per_prefix(naive_knn(k), x32.double().numpy(), y32.double().numpy()), rtol=1e-5)


def test_knn_uses_only_present_points_even_when_masked_ones_are_nearer():
    # The query sits on a masked point; a zeroed masked row at the origin would also be nearer than the rest.
    x_ctx = torch.tensor([[[5.0, 5.0], [1.0, 1.0], [3.0, 3.0], [4.0, 4.0]]], dtype=torch.float64)
    y_ctx = torch.tensor([[100.0, 1.0, 3.0, 4.0]], dtype=torch.float64)
    x_q = torch.tensor([[[5.0, 5.0], [0.0, 0.0]]], dtype=torch.float64)
    mask = torch.tensor([[False, True, True, True]])
    out = KNN(2).predict(x_ctx, y_ctx, x_q, mask)
    assert torch.equal(out, torch.tensor([[3.5, 2.0]], dtype=torch.float64))


def test_knn_from_distances_counts_min_k_present():
    dist = torch.tensor([[[0.3, 0.1, 0.2, 0.0]]])
    y = torch.tensor([[1.0, 2.0, 4.0, 8.0]])
    present = torch.tensor([[[True, True, False, False]]])
    assert torch.allclose(knn_from_distances(dist, y, present, 3), torch.tensor([[1.5]]))  # 2 present < K = 3
    assert torch.allclose(knn_from_distances(dist, y, ~present, 1), torch.tensor([[8.0]]))
    assert torch.equal(knn_from_distances(dist, y, present & False, 2), torch.zeros(1, 1))


# ----------------------------------------------------------------------------------------------------------------
# vector targets, registry


@pytest.mark.parametrize("spec,naive", [("averaging", naive_averaging), ("knn:2", naive_knn(2))])
def test_vector_targets_are_independent_columns(spec, naive):
    rng = np.random.default_rng(3)
    X, Y, Xq = rng.standard_normal((2, 6, 3)), rng.standard_normal((2, 6, 2)), rng.standard_normal((2, 4, 3))
    mask = np.ones((2, 6), dtype=bool)
    learner = make_learner(spec)
    cols = np.stack([_per_prompt(naive, X, Y[..., j], Xq, mask) for j in range(2)], axis=-1)
    _close(learner.predict(_t(X), _t(Y), _t(Xq)), cols)
    x, Yp = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 2))
    cols = np.stack([_per_prefix(naive, x, Yp[..., j]) for j in range(2)], axis=-1)
    _close(learner.predict_prefixes(_t(x), _t(Yp)), cols)


def test_registry_names_and_parameters():
    assert make_learner("averaging").name == "averaging"
    knn = make_learner("knn:3")
    assert (knn.name, knn.k) == ("knn:3", 3)


def test_knn_rejects_bad_k():
    for k in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="K"):
            KNN(k)


def test_averaging_is_one_unit_gd_step():
    from iclab.algorithms.gd import GD

    rng = np.random.default_rng(3)
    x, y = _t(rng.standard_normal((4, 9, 5))), _t(rng.standard_normal((4, 9)))
    averaging = make_learner("averaging")
    _close(averaging.predict_prefixes(x, y), GD([1.0]).predict_prefixes(x, y).numpy())
