"""Lasso against scikit-learn, one prompt (and one prefix) at a time, and the fast homotopy against its reference.

Reference: scikit-learn's Lasso(alpha, fit_intercept=False, tol=1e-12, max_iter=10⁵) on the present rows, whose
objective (1/(2n))‖y − Xw‖² + α‖w‖₁ is the one iclab minimises; an empty context predicts 0. The objective values
must agree within 1e-6 relative and, as Gaussian data make the minimiser unique, the predictions (and weights)
within 1e-6 relative to the largest reference value (1e-5 for float32 inputs). Each batched solution also carries
its own certificate: the duality gap, below 1e-10·yᵀy. The fast path (rank-one updates of S_MM⁻¹, prefixes warm-
started from their predecessors) must follow `homotopy_reference` (a fresh factorisation per segment) to 1e-9 on
its own, with neither the reference's re-solve nor FISTA called; a spoiled fast path must be caught and mended.
"""

import warnings
from functools import partial

import numpy as np
import pytest
import torch
from reference_checks import as_tensor as _t
from reference_checks import assert_rel_close
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso as SkLasso

from iclab.algorithms import lasso_path, sparse
from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.least_squares import gram_stats, prefix_stats
from iclab.algorithms.registry import make_learner
from iclab.algorithms.sparse import Lasso, lasso_duality_gap, lasso_objective, lasso_prefix_weights, lasso_weights

_close = partial(assert_rel_close, rtol=1e-6)

SHAPES = [(0, 4), (1, 4), (3, 6), (6, 6), (12, 5), (7, 1)]  # (n, d): empty, n < d, n = d, n > d, d = 1
PREFIX_SHAPES = [(1, 3), (5, 1), (6, 4), (9, 8)]  # (T, d): every prefix length t < d, = d, > d
ALPHAS = [0.01, 0.1, 1.0]
TIGHT = dict(iters=20_000, tol=1e-13)


def _case(n, d, seed, batch=4, m=2):
    """Gaussian data (y from a sparse w plus noise), a random mask with prompt 0 complete and prompt 1 empty."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, n, d))
    w = rng.standard_normal((batch, d)) * (rng.random((batch, d)) < 0.5)
    y = np.einsum("bnd,bd->bn", X, w) + 0.3 * rng.standard_normal((batch, n))
    Xq = rng.standard_normal((batch, m, d))
    mask = rng.random((batch, n)) < 0.7
    mask[0] = True
    mask[1] = False
    return X, y, Xq, mask


def sk_weights(X, y, alpha):
    """scikit-learn's Lasso minimiser on the rows of X [n, d], y [n] → [d] (0 for n = 0)."""
    if X.shape[0] == 0:
        return np.zeros(X.shape[1])
    with warnings.catch_warnings():  # a tol this tight may stop at max_iter; the objective check still judges it
        warnings.simplefilter("ignore", ConvergenceWarning)
        return SkLasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(X, y).coef_


def objective(X, y, w, alpha):
    n = X.shape[0]
    return 0.0 if n == 0 else float(((y - X @ w) ** 2).sum() / (2 * n) + alpha * np.abs(w).sum())


def _weights(learner, X, y, mask):
    """The learner's ŵ [B, d], read off as its predictions at the unit vectors."""
    B, _, d = X.shape
    eye = torch.eye(d, dtype=X.dtype).expand(B, d, d)
    return learner.predict(X, y, eye, mask)


def _check_objectives(w_ours, w_ref, X, y, mask, alpha):
    for b in range(X.shape[0]):
        Xb, yb = X[b][mask[b]], y[b][mask[b]]
        ours, ref = objective(Xb, yb, w_ours[b], alpha), objective(Xb, yb, w_ref[b], alpha)
        assert abs(ours - ref) <= 1e-6 * max(ref, 1e-300), (b, ours, ref)


# ----------------------------------------------------------------------------------------------------------------
# masked contexts


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("n,d", SHAPES)
def test_lasso_matches_scikit_learn_on_masked_contexts(n, d, alpha):
    X, y, Xq, mask = _case(n, d, seed=10 * n + d)
    learner = Lasso(alpha)
    w = _weights(learner, _t(X), _t(y), _t(mask)).numpy()
    w_ref = np.stack([sk_weights(X[b][mask[b]], y[b][mask[b]], alpha) for b in range(len(X))])
    _check_objectives(w, w_ref, X, y, mask, alpha)
    _close(w, w_ref)
    _close(learner.predict(_t(X), _t(y), _t(Xq), _t(mask)), np.einsum("bmd,bd->bm", Xq, w_ref))
    assert not w[1].any()  # empty context → exactly 0
    # the certificate, from the statistics of the present rows
    Xm, ym = X * mask[..., None], y * mask
    S, bvec = gram_stats(_t(Xm), _t(ym))
    yy, nn = _t((ym**2).sum(-1)), _t(mask.sum(-1)).double()
    gap = lasso_duality_gap(S, bvec, yy, nn, torch.tensor(alpha, dtype=torch.float64), _t(w))
    assert (gap <= 1e-10 * yy + 1e-300).all()
    # float32 inputs: float32 predictions, close to the reference on the same rounded inputs
    X32, y32, q32 = (_t(a).float() for a in (X, y, Xq))
    out32 = learner.predict(X32, y32, q32, _t(mask))
    assert out32.dtype == torch.float32
    X64, y64 = X32.double().numpy(), y32.double().numpy()
    w_ref32 = np.stack([sk_weights(X64[b][mask[b]], y64[b][mask[b]], alpha) for b in range(len(X))])
    _close(out32, np.einsum("bmd,bd->bm", q32.double().numpy(), w_ref32), rtol=1e-5)


@pytest.mark.parametrize("n,d", SHAPES[1:])
def test_fista_alone_reaches_the_scikit_learn_objective(n, d):
    # The FISTA stage on its own (it finishes whatever the homotopy leaves), from w = 0, to a tight gap.
    X, y, _, _ = _case(n, d, seed=n + 7 * d)
    S, b = gram_stats(_t(X), _t(y))
    yy, nn = _t((y**2).sum(-1)), torch.full((len(X),), n)
    w = lasso_weights(S, b, yy, nn, 0.1, homotopy=False, **TIGHT).numpy()
    _check_objectives(
        w, np.stack([sk_weights(X[i], y[i], 0.1) for i in range(len(X))]), X, y, np.ones(y.shape, bool), 0.1
    )


def test_fista_finishes_a_truncated_homotopy(monkeypatch):
    # Where the homotopy stops early (singular active set, too many segments), FISTA continues from its last point.
    X, y, _, _ = _case(12, 5, seed=4)
    S, b = gram_stats(_t(X), _t(y))
    yy, nn = _t((y**2).sum(-1)), torch.full((len(X),), 12)
    homotopy, reference = lasso_path.homotopy_path, lasso_path.homotopy_reference
    monkeypatch.setattr(sparse, "homotopy_path", lambda A, c, alpha, steps: homotopy(A, c, alpha, 2))
    monkeypatch.setattr(sparse, "homotopy_reference", lambda A, c, alpha, steps: reference(A, c, alpha, 2))
    start, reached = homotopy(S / 12, b / 12, torch.full((4,), 0.01, dtype=torch.float64), 2)
    assert not reached.all()
    w = lasso_weights(S, b, yy, nn, 0.01, **TIGHT).numpy()
    assert not np.allclose(w, start.numpy())
    ref = np.stack([sk_weights(X[i], y[i], 0.01) for i in range(len(X))])
    _check_objectives(w, ref, X, y, np.ones(y.shape, bool), 0.01)
    _close(w, ref)


def test_several_alphas_at_once_match_one_at_a_time():
    X, y, _, _ = _case(5, 6, seed=3)
    S, b = gram_stats(_t(X), _t(y))  # [B, d, d], [B, d]
    yy, nn = _t((y**2).sum(-1)), torch.full((len(X),), 5)
    alphas = torch.tensor([0.003, 0.03, 0.3], dtype=torch.float64)
    together = lasso_weights(S[:, None], b[:, None], yy[:, None], nn[:, None], alphas)  # [B, 3, d]
    assert together.shape == (4, 3, 6)
    for j, a in enumerate(alphas.tolist()):
        torch.testing.assert_close(together[:, j], lasso_weights(S, b, yy, nn, a), rtol=1e-12, atol=1e-12)
        _check_objectives(
            together[:, j].numpy(),
            np.stack([sk_weights(X[i], y[i], a) for i in range(4)]),
            X,
            y,
            np.ones(y.shape, bool),
            a,
        )


def _degenerate(kind, rng):
    X = rng.standard_normal((2, 6, 4))
    y = rng.standard_normal((2, 6))
    if kind == "duplicate columns":  # the homotopy meets a singular active set; FISTA finishes
        X[..., 1] = X[..., 0]
    elif kind == "zero inputs":
        X[:] = 0
    elif kind == "zero targets":
        y[:] = 0
    elif kind == "large scale":
        X, y = 1e3 * X, 1e-3 * y
    return X, y


@pytest.mark.parametrize("kind", ["duplicate columns", "zero inputs", "zero targets", "large scale"])
def test_degenerate_problems_are_finite_and_optimal(kind):
    X, y = _degenerate(kind, np.random.default_rng(5))
    mask = np.ones(y.shape, bool)
    w = _weights(Lasso(0.05, **TIGHT), _t(X), _t(y), _t(mask)).numpy()
    assert np.isfinite(w).all()
    _check_objectives(w, np.stack([sk_weights(X[b], y[b], 0.05) for b in range(2)]), X, y, mask, 0.05)
    if kind in ("zero inputs", "zero targets"):
        assert not w.any()


@pytest.mark.parametrize("alpha", [1e-9, 1e3])
def test_extreme_alphas_are_finite(alpha):
    X, y, Xq, mask = _case(3, 8, seed=1)
    out = Lasso(alpha).predict(_t(X).float(), _t(y).float(), _t(Xq).float(), _t(mask))
    assert torch.isfinite(out).all()
    if alpha > 1:  # α ≥ ‖Xᵀy/n‖_∞: w = 0 exactly
        assert not out.any()


# ----------------------------------------------------------------------------------------------------------------
# prefixes, vector targets


@pytest.mark.parametrize("T,d", PREFIX_SHAPES)
def test_lasso_prefix_fast_path_matches_generic_path_and_per_prefix_loop(T, d):
    rng = np.random.default_rng(T * 10 + d)
    x, y = rng.standard_normal((3, T, d)), rng.standard_normal((3, T))
    expected = np.array([[x[b, t] @ sk_weights(x[b, :t], y[b, :t], 0.05) for t in range(T)] for b in range(3)])
    learner = Lasso(0.05)
    _close(learner.predict_prefixes(_t(x), _t(y)), expected)
    _close(MaskedLearner.scalar_prefixes(learner, _t(x), _t(y)), expected)
    out32 = learner.predict_prefixes(_t(x).float(), _t(y).float())
    assert out32.dtype == torch.float32
    _close(out32, expected, rtol=1e-4)  # float32 rounding of the inputs moves the reference too


def test_vector_targets_are_independent_columns():
    rng = np.random.default_rng(2)
    X, Y, Xq = rng.standard_normal((2, 7, 3)), rng.standard_normal((2, 7, 2)), rng.standard_normal((2, 4, 3))
    expected = np.stack([np.stack([Xq[b] @ sk_weights(X[b], Y[b, :, k], 0.1) for k in range(2)], -1) for b in range(2)])
    _close(Lasso(0.1).predict(_t(X), _t(Y), _t(Xq)), expected)
    out = Lasso(0.1).predict_prefixes(_t(X), _t(Y))
    assert out.shape == (2, 7, 2)
    _close(
        out[..., 1], np.array([[X[b, t] @ sk_weights(X[b, :t], Y[b, :t, 1], 0.1) for t in range(7)] for b in range(2)])
    )


def test_lasso_objective_matches_numpy():
    X, y, _, _ = _case(5, 3, seed=8)
    w = np.random.default_rng(0).standard_normal((4, 3))
    S, b = gram_stats(_t(X), _t(y))
    got = lasso_objective(S, b, _t((y**2).sum(-1)), torch.full((4,), 5), 0.2, _t(w))
    _close(got, np.array([objective(X[i], y[i], w[i], 0.2) for i in range(4)]), rtol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# the fast path against its reference


def _forbid(monkeypatch, *names):
    for name in names:
        monkeypatch.setattr(sparse, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} was called"))


def _prefix_problems(B, T, d, seed):
    """Gaussian prompts x [B, T, d], y [B, T] (sparse w, noise) and the statistics of every prefix, float64."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, d))
    w = rng.standard_normal((B, d)) * (rng.random((B, d)) < 0.7)
    y = np.einsum("btd,bd->bt", x, w) + 0.3 * rng.standard_normal((B, T))
    S, b = prefix_stats(_t(x), _t(y))  # [B, T, d, d], [B, T, d]
    yy = torch.cat([torch.zeros(B, 1, dtype=torch.float64), _t(y**2)[:, :-1].cumsum(1)], dim=1)  # [B, T]
    n = torch.arange(T, dtype=torch.float64).expand(B, T)
    return _t(x), _t(y), S, b, yy, n


@pytest.mark.parametrize("alpha", [1e-3, 0.1])
@pytest.mark.parametrize("n,d", [(3, 8), (8, 8), (20, 6), (15, 20)])
def test_homotopy_follows_the_reference_path(n, d, alpha):
    X, y, _, _ = _case(n, d, seed=3 * n + d, batch=16)
    S, b = gram_stats(_t(X), _t(y))
    A, c, a = S / n, b / n, torch.full((16,), alpha, dtype=torch.float64)
    w, reached = lasso_path.homotopy_path(A, c, a, 4 * d)
    w_ref, reached_ref = lasso_path.homotopy_reference(A, c, a, 4 * d)
    assert reached.all() and reached_ref.all()
    _close(w, w_ref.numpy(), rtol=1e-9)


@pytest.mark.parametrize("alpha", [1e-3, 0.05, 0.5])
@pytest.mark.parametrize("T,d", [(12, 20), (41, 20), (40, 4)])
def test_warm_started_prefixes_match_the_reference_on_their_own(T, d, alpha, monkeypatch):
    # Every prefix t < d, = d and > d, each from its predecessor: the reference path from scratch must agree, with
    # no prefix sent back to the reference or to FISTA.
    x, y, S, b, yy, n = _prefix_problems(8, T, d, seed=T + d)
    scale = n.clamp_min(1)
    A, c = S / scale[..., None, None], b / scale[..., None]
    ref = lasso_path.homotopy_reference(
        A.reshape(-1, d, d), c.reshape(-1, d), torch.full((8 * T,), alpha, dtype=torch.float64), 4 * d
    )[0]
    _forbid(monkeypatch, "homotopy_reference", "_fista")
    w = lasso_prefix_weights(x, y, alpha)  # [8, T, d]
    _close(w, ref.reshape(8, T, d).numpy(), rtol=1e-9)
    assert (lasso_duality_gap(S, b, yy, n, torch.tensor(alpha, dtype=torch.float64), w) <= 1e-12 * yy + 1e-300).all()


def test_a_spoilt_fast_path_is_caught_by_its_certificate(monkeypatch):
    # Every end point of the fast path 1% off (and so every warm start wrong): the duality gap flags each one and
    # the reference path solves it again, exactly.
    refine, reference, calls = lasso_path.refine, lasso_path.homotopy_reference, []
    spoilt = lambda p, rows, w, H, good: (1.01 * refine(p, rows, w, H, good)[0], p.S[rows])  # noqa: E731
    for module in (sparse, lasso_path):  # the prefix path (sparse) and the cold path (lasso_path) both refine
        monkeypatch.setattr(module, "refine", spoilt)
    monkeypatch.setattr(sparse, "homotopy_reference", lambda *args: calls.append(1) or reference(*args))
    x, y, S, b, yy, n = _prefix_problems(4, 10, 5, seed=1)
    w = lasso_prefix_weights(x, y, 0.05)
    assert (lasso_duality_gap(S, b, yy, n, torch.tensor(0.05, dtype=torch.float64), w) <= 1e-12 * yy + 1e-300).all()
    X, Y, _, mask = _case(6, 4, seed=2)
    w = _weights(Lasso(0.05), _t(X), _t(Y), _t(mask)).numpy()
    _check_objectives(w, np.stack([sk_weights(X[i][mask[i]], Y[i][mask[i]], 0.05) for i in range(4)]), X, Y, mask, 0.05)
    assert len(calls) == 2


@pytest.mark.parametrize("kind", ["duplicate columns", "zero inputs", "zero targets", "large scale"])
def test_degenerate_prefixes_are_finite_and_optimal(kind):
    X, y = _degenerate(kind, np.random.default_rng(6))
    w = lasso_prefix_weights(_t(X), _t(y), 0.05, **TIGHT).numpy()  # [2, 6, 4]
    assert np.isfinite(w).all()
    for t in range(X.shape[1]):
        ref = np.stack([sk_weights(X[b, :t], y[b, :t], 0.05) for b in range(2)])
        _check_objectives(w[:, t], ref, X[:, :t], y[:, :t], np.ones((2, t), bool), 0.05)


def test_prefix_chunks_and_dtypes():
    x, y, *_ = _prefix_problems(5, 9, 3, seed=4)
    learner = Lasso(0.05)
    whole = learner.predict_prefixes(x, y)
    learner.chunk_elements = 2 * 3 * (3 + 9)  # two prompts a chunk
    torch.testing.assert_close(learner.predict_prefixes(x, y), whole, rtol=1e-12, atol=1e-12)
    assert lasso_prefix_weights(x.float(), y.float(), 0.05).dtype == torch.float32
    assert lasso_prefix_weights(x.float(), y.float(), 0.05, dtype=torch.float64).dtype == torch.float64


# ----------------------------------------------------------------------------------------------------------------
# registry


def test_registry_names_and_parameters():
    for spec in ("lasso:0.1", "lasso:0.1:iters=50", "lasso:1e-3:tol=0:float64=1"):
        assert make_learner(spec).name == spec
    learner = make_learner("lasso:0.25:iters=50:tol=1e-9:float64=yes")
    assert (learner.alpha, learner.iters, learner.tol, learner.dtype) == (0.25, 50, 1e-9, torch.float64)
    default = make_learner("lasso:0.1")
    assert (default.iters, default.tol, default.dtype) == (1000, 1e-6, None)


def test_lasso_rejects_bad_parameters():
    for kwargs, match in [
        ({"alpha": 0.0}, "ALPHA"),
        ({"alpha": 0.1, "iters": 0}, "iters"),
        ({"alpha": 0.1, "tol": -1}, "tol"),
    ]:
        with pytest.raises(ValueError, match=match):
            Lasso(**kwargs)
