"""Iterative Newton learner against a naive numpy Newton–Schulz loop and against min-norm OLS, one prompt (and one
prefix) at a time.

Reference, written from the math (docs/papers.md §5), not from iclab code: S = XᵀX over the present rows,
M₀ = αS with α = c/‖SSᵀ‖_F (α = 0 for S = 0; c = 1 is Fu et al.'s code and the default, c = 2 one iteration
ahead), M_{k+1} = 2M_k − M_k S M_k, ŷ = x_qᵀ M_K Xᵀy. With K = 20 on well-conditioned contexts (rank ≥ 2) this is
numpy.linalg.lstsq's min-norm solution; rank-one contexts (one point, repeated points, d = 1) are solved exactly
from K = 0 on at c = 1 (M₀ = S/λ² = S⁺) and predict 0 for every K ≥ 1 at c = 2 (αλ² = 2 puts M₁ = 0), also for K
up to 200 and in float32. Tolerance: 1e-5 relative to the largest reference value (or to an O(1) floor where
every reference value is ~0), in float64 unless stated.
"""

from functools import partial

import numpy as np
import pytest
import torch
from reference_checks import as_tensor as _t
from reference_checks import assert_rel_close
from reference_checks import per_prefix as _per_prefix
from reference_checks import per_prompt as _per_prompt

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.newton import Newton
from iclab.algorithms.registry import make_learner

_close = partial(assert_rel_close, rtol=1e-5)

SHAPES = [(0, 4), (1, 4), (3, 6), (6, 6), (12, 5), (7, 1)]  # (n, d): empty, n < d, n = d, n > d, d = 1
PREFIX_SHAPES = [(1, 3), (5, 1), (6, 4), (9, 8)]  # (T, d): every prefix length t < d, = d, > d
STEPS = [0, 1, 5, 20]


def _case(n, d, seed, batch=5, m=3):
    """Gaussian data with garbage in the masked slots and a random mask: prompt 0 complete, prompt 1 empty,
    prompt 2 a single point."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, n, d))
    y = rng.standard_normal((batch, n))
    Xq = rng.standard_normal((batch, m, d))
    mask = rng.random((batch, n)) < 0.7
    mask[0], mask[1], mask[2] = True, False, False
    if n:
        mask[2, rng.integers(n)] = True
    return X, y, Xq, mask


def naive_newton(steps, scale=1.0):
    def fn(X, y, Xq):
        S = X.T @ X
        norm = np.linalg.norm(S @ S.T, "fro")
        M = (scale / norm if norm > 0 else 0.0) * S
        for _ in range(steps):
            M = 2 * M - M @ S @ M
        return Xq @ (M @ (X.T @ y))

    return fn


def naive_ols(X, y, Xq):
    if X.shape[0] == 0:
        return np.zeros(Xq.shape[0])
    return Xq @ np.linalg.lstsq(X, y, rcond=None)[0]


def _well_conditioned(n, d, rng):
    """[n, d] with singular values in [1, 2] (rank min(n, d))."""
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    r = min(n, d)
    return U[:, :r] @ np.diag(rng.uniform(1.0, 2.0, r)) @ V[:, :r].T


# ----------------------------------------------------------------------------------------------------------------
# predict


@pytest.mark.parametrize("K", STEPS)
@pytest.mark.parametrize("n,d", SHAPES)
def test_newton_matches_naive_loop_on_masked_contexts(n, d, K):
    X, y, Xq, mask = _case(n, d, seed=10 * n + d)
    expected = _per_prompt(naive_newton(K), X, y, Xq, mask)
    out = Newton(K).predict(_t(X), _t(y), _t(Xq), _t(mask))
    _close(out, expected, floor=1.0)
    assert torch.count_nonzero(out[1]) == 0  # the empty prompt
    if n:  # a single point is rank one: at Fu et al.'s start, solved exactly from K = 0 on
        ols = _per_prompt(naive_ols, X[2:3], y[2:3], Xq[2:3], mask[2:3])[0]
        _close(out[2], ols, floor=1.0)
    two = Newton(K, scale=2).predict(_t(X), _t(y), _t(Xq), _t(mask))
    _close(two, _per_prompt(naive_newton(K, 2.0), X, y, Xq, mask), floor=1.0)  # d = 1, K ≥ 1: all ~0
    if n and K >= 1:  # at scale 2 a single point predicts 0
        _close(two[2], np.zeros(Xq.shape[1]), floor=1.0)


@pytest.mark.parametrize("K", STEPS)
def test_newton_float64_compute_on_float32_inputs(K):
    X, y, Xq, mask = _case(8, 4, seed=K)
    X32, y32, q32 = (_t(a).float() for a in (X, y, Xq))
    out = Newton(K, dtype=torch.float64).predict(X32, y32, q32, _t(mask))
    assert out.dtype == torch.float32
    ref = _per_prompt(naive_newton(K), X32.double().numpy(), y32.double().numpy(), q32.double().numpy(), mask)
    _close(out, ref, rtol=1e-6)


@pytest.mark.parametrize("n,d", [(2, 6), (4, 6), (6, 6), (12, 5), (30, 3)])
def test_newton_20_is_min_norm_ols_on_well_conditioned_contexts(n, d):
    rng = np.random.default_rng(n + d)
    B, extra = 3, 2  # `extra` masked slots of garbage after the context
    X = np.stack([np.concatenate([_well_conditioned(n, d, rng), rng.standard_normal((extra, d))]) for _ in range(B)])
    X = X * np.array([1e-3, 1.0, 1e3])[:, None, None]  # Newton is scale invariant: M_k(cS) = M_k(S)/c
    y = rng.standard_normal((B, n + extra))
    Xq = rng.standard_normal((B, 4, d))
    mask = np.arange(n + extra) < n
    mask = np.broadcast_to(mask, (B, n + extra)).copy()
    expected = _per_prompt(naive_ols, X, y, Xq, mask)
    out = Newton(20).predict(_t(X), _t(y), _t(Xq), _t(mask))
    for b in range(B):  # per prompt: the three prompts differ by a factor 1e6 in scale
        _close(out[b], expected[b])


def _rank_one(rng, d=4):
    point = rng.standard_normal(d)
    X = np.stack(
        [
            np.tile(point, (5, 1)),  # one point repeated
            np.outer(rng.standard_normal(5), point),  # collinear points
            np.concatenate([point[None], np.zeros((4, d))]),  # one point and zero rows
        ]
    )
    return X, rng.standard_normal((3, 5)), rng.standard_normal((3, 2, d))


@pytest.mark.parametrize("K", [1, 5, 20])
def test_newton_rank_one_contexts_at_scale_2_predict_zero(K):
    X, y, Xq = _rank_one(np.random.default_rng(K))
    out = Newton(K, scale=2).predict(_t(X), _t(y), _t(Xq))
    # relative to the OLS prediction, which is O(1) here
    _close(out, np.zeros((3, 2)), floor=np.abs(_per_prompt(naive_ols, X, y, Xq, np.ones((3, 5), bool))).max())
    # K = 0 does not: M₀ = αS ≠ 0
    assert torch.count_nonzero(Newton(0, scale=2).predict(_t(X), _t(y), _t(Xq))) == 6


@pytest.mark.parametrize("K", [0, 1, 5, 20])
def test_newton_rank_one_contexts_at_fus_start_are_solved_from_the_start(K):
    X, y, Xq = _rank_one(np.random.default_rng(K))
    _close(Newton(K).predict(_t(X), _t(y), _t(Xq)), _per_prompt(naive_ols, X, y, Xq, np.ones((3, 5), bool)))


@pytest.mark.parametrize("K", [0, 1, 3, 8])
def test_both_starts_match_their_naive_loops_on_well_conditioned_contexts(K):
    # In the eigenbasis, 1 − αλm_K = (1 − cλ²/‖SSᵀ‖_F)^(2^K): c = 2 at K iterations and c = 1 at K + 1 agree only to
    # first order in λ²/‖SSᵀ‖_F ("one iteration ahead"), so each start is checked against its own exact reference.
    rng = np.random.default_rng(K)
    X = np.stack([_well_conditioned(8, 4, rng) for _ in range(3)])
    y, Xq = rng.standard_normal((3, 8)), rng.standard_normal((3, 2, 4))
    mask = np.ones((3, 8), bool)
    for c in (1.0, 2.0):
        _close(Newton(K, scale=c).predict(_t(X), _t(y), _t(Xq)), _per_prompt(naive_newton(K, c), X, y, Xq, mask))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("K", [30, 60, 200])
def test_newton_many_iterations_stay_exact_on_rank_deficient_contexts(K, dtype):  # at scale 2
    # Rounding errors in the directions whose iterate must stay 0 (null space; the rank-one top direction at
    # αλ² = 2) must not be amplified: the matrix form doubles them each step (float32: drift by K = 20, NaN by 30).
    rng = np.random.default_rng(K)
    d = 6
    point = rng.standard_normal(d)
    rank_one = np.stack([np.tile(point, (4, 1)), np.concatenate([point[None], np.zeros((3, d))])])
    X = np.concatenate([rank_one, np.stack([_well_conditioned(4, d, rng) for _ in range(2)])])  # then n = 4 < d
    y, Xq = rng.standard_normal((4, 4)), rng.standard_normal((4, 2, d))
    args = [_t(a).to(dtype) for a in (X, y, Xq)]
    out = Newton(K, scale=2).predict(*args)
    assert out.dtype == dtype
    X, y, Xq = (a.double().numpy() for a in args)  # the reference sees the same rounded inputs
    ols = _per_prompt(naive_ols, X, y, Xq, np.ones((4, 4), bool))
    _close(out[:2], np.zeros((2, 2)), floor=np.abs(ols[:2]).max())
    _close(out[2:], ols[2:])
    # every prefix (rank t < d) of the rank-deficient prompts, and prefix t = 1 (rank one) of all
    x = np.concatenate([X, Xq], axis=1)
    yp = np.concatenate([y, rng.standard_normal((4, 2))], axis=1)
    ref = _per_prefix(naive_ols, x, yp)
    ref[:, :2] = 0.0  # t = 0: empty; t = 1: rank one
    ref[:2, :5] = 0.0  # repeated point / one point: rank one until the first query joins the context at t = 5
    _close(Newton(K, scale=2).predict_prefixes(_t(x).to(dtype), _t(yp).to(dtype)), ref, floor=np.abs(ols).max())
    # at Fu et al.'s start every prefix, rank one included, is the min-norm solution
    ref_fu = _per_prefix(naive_ols, x, yp)
    ref_fu[:, 0] = 0.0
    _close(Newton(K).predict_prefixes(_t(x).to(dtype), _t(yp).to(dtype)), ref_fu, floor=np.abs(ols).max())


@pytest.mark.parametrize("K", STEPS)
def test_newton_zero_and_duplicated_contexts_are_finite(K):
    rng = np.random.default_rng(0)
    d = 3
    base = rng.standard_normal((2, d))
    X = np.stack([np.zeros((6, d)), np.concatenate([base, base, base]), rng.standard_normal((6, d))])
    y = np.stack([np.zeros(6), rng.standard_normal(6), rng.standard_normal(6)])
    Xq = rng.standard_normal((3, 2, d))
    mask = np.array([[True] * 6, [True] * 6, [False] * 6])
    learner = Newton(K)
    out = learner.predict(_t(X), _t(y), _t(Xq), _t(mask))
    _close(out, _per_prompt(naive_newton(K), X, y, Xq, mask))
    assert torch.count_nonzero(out[0]) == 0 and torch.count_nonzero(out[2]) == 0
    _close(learner.predict_prefixes(_t(X), _t(y)), _per_prefix(naive_newton(K), X, y), floor=1.0)


# ----------------------------------------------------------------------------------------------------------------
# prefixes and vector targets


@pytest.mark.parametrize("K", STEPS)
@pytest.mark.parametrize("T,d", PREFIX_SHAPES)
def test_newton_prefix_fast_path_matches_generic_path_and_naive_loop(T, d, K):
    rng = np.random.default_rng(T * 10 + d)
    x, y = rng.standard_normal((3, T, d)), rng.standard_normal((3, T))
    learner = Newton(K)
    expected = _per_prefix(naive_newton(K), x, y)
    _close(learner.predict_prefixes(_t(x), _t(y)), expected, floor=1.0)
    _close(MaskedLearner.scalar_prefixes(learner, _t(x), _t(y)), expected, floor=1.0)
    x32, y32 = _t(x).float(), _t(y).float()
    out = Newton(K, dtype=torch.float64).predict_prefixes(x32, y32)
    assert out.dtype == torch.float32
    _close(out, _per_prefix(naive_newton(K), x32.double().numpy(), y32.double().numpy()), rtol=1e-6, floor=1.0)


def test_newton_vector_targets_are_independent_columns():
    X, _, Xq, mask = _case(7, 3, seed=3)
    Y = np.random.default_rng(4).standard_normal((*X.shape[:2], 2))
    learner = Newton(5)
    out = learner.predict(_t(X), _t(Y), _t(Xq), _t(mask))
    assert out.shape == (X.shape[0], Xq.shape[1], 2)
    for k in range(2):
        _close(out[..., k], _per_prompt(naive_newton(5), X, Y[..., k], Xq, mask))
    cols = np.stack([_per_prefix(naive_newton(5), X, Y[..., k]) for k in range(2)], axis=-1)
    _close(learner.predict_prefixes(_t(X), _t(Y)), cols)


# ----------------------------------------------------------------------------------------------------------------
# registry


def test_registry_names_and_parameters():
    learner = make_learner("newton:5:float64=1")
    assert isinstance(learner, Newton) and learner.steps == 5 and learner.dtype == torch.float64
    assert learner.name == "newton:5:float64=1" and learner.scale == 1.0
    assert make_learner("newton:0").steps == 0 and make_learner("newton:0").dtype is None
    assert make_learner("newton:3:scale=2").scale == 2.0 and make_learner("newton:3:scale=2").name == "newton:3:scale=2"
    for bad in ("newton:3:scale=0", "newton:3:scale=2.5", "newton:3:scale=x"):
        with pytest.raises(ValueError, match="scale"):
            make_learner(bad)


@pytest.mark.parametrize("bad", [-1, 1.5, "3"])
def test_newton_rejects_bad_steps(bad):
    with pytest.raises(ValueError, match="steps"):
        Newton(bad)


@pytest.mark.parametrize("steps", [0, 1, 3, 5, 10])
def test_matrix_and_eigenbasis_forms_agree(steps):
    from iclab.algorithms.newton import newton_inverse_eigen, newton_inverse_matrix

    gen = torch.Generator().manual_seed(steps)
    X = torch.randn(64, 7, 5, generator=gen, dtype=torch.float64)
    X[:8, 3:] = 0  # rank-deficient contexts (n < d)
    S = X.transpose(1, 2) @ X
    for c in (1.0, 2.0):
        torch.testing.assert_close(
            newton_inverse_matrix(S, steps, c), newton_inverse_eigen(S, steps, c), rtol=1e-9, atol=1e-9
        )
