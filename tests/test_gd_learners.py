"""GD, preconditioned GD, GD++ and debiased GD learners against naive numpy references, one prompt (and one
prefix) at a time.

References, written from the math (docs/papers.md §1, §7), not from iclab code:
* GD: K steps from w = 0 on L(w) = 1/(2N) Σ_i (wᵀx_i − y_i)², N = number of present points (at least 1),
  w ← w − η_l A ∇L with an optional [d, d] preconditioner A (non-symmetric here, to pin its orientation).
* GD++: the LSA token stream. Context tokens carry y-slots r_i (start y_i), the query token a slot s (start 0);
  layer l adds −(η_l/N) Σ_i r_i x_iᵀx_j to the y-slot of every token j (context and query), with the inputs
  before the layer's transform, then maps every input x_j ← (I − γ_l XᵀX) x_j. Prediction −s. Written as an
  explicit loop over tokens.
* Debiased GD: ŷ = c_L Σ_i y_i (x_i − x̄)ᵀ x_q over the L present points, c_L = η/L or the optimal
  c_L = 1/(m₂(L + d) + σ²/τ²); an empty context predicts 0.
Tolerance: 1e-5 relative to the largest reference value, in float64 (observed ≲ 1e-14).
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
from iclab.algorithms.gd import GD, DebiasedGD, GDPlusPlus
from iclab.algorithms.registry import LearnerSpecError, make_learner
from iclab.config import TaskConfig
from iclab.tasks.linear import LinearRegressionTask
from iclab.theory import debiased_gd_step

_close = partial(assert_rel_close, rtol=1e-5)

SHAPES = [(0, 4), (1, 4), (3, 6), (6, 6), (12, 5), (7, 1)]  # (n, d): empty, n < d, n = d, n > d, d = 1
PREFIX_SHAPES = [(1, 3), (5, 1), (6, 4), (9, 8)]  # (T, d): every prefix length t < d, = d, > d
ETAS = {"one step": [0.4], "tied": [0.3] * 3, "per-step": [0.5, 0.1, 0.9, 0.25]}


def _case(n, d, seed, batch=5, m=3):
    """Gaussian data (x scaled by 1/√d so that GD steps stay moderate) with garbage in the masked slots and a
    random mask: prompt 0 complete, prompt 1 empty, prompt 2 a single point."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, n, d)) / np.sqrt(d)
    y = rng.standard_normal((batch, n))
    Xq = rng.standard_normal((batch, m, d)) / np.sqrt(d)
    mask = rng.random((batch, n)) < 0.7
    mask[0], mask[1], mask[2] = True, False, False
    if n:
        mask[2, rng.integers(n)] = True
    return X, y, Xq, mask


def _precond(d, seed):
    """A non-symmetric, well-conditioned [d, d] preconditioner: a transposed A would give different answers."""
    rng = np.random.default_rng(seed)
    return np.eye(d) + 0.3 * rng.standard_normal((d, d))


def naive_gd(etas, precond=None):
    def fn(X, y, Xq):
        N = max(X.shape[0], 1)
        w = np.zeros(Xq.shape[1])
        for eta in etas:
            grad = sum(((w @ x - yi) * x for x, yi in zip(X, y)), np.zeros_like(w)) / N
            w = w - eta * (grad if precond is None else precond @ grad)
        return Xq @ w

    return fn


def naive_gdpp(etas, gammas):
    def fn(X, y, Xq):
        n, d = X.shape
        N = max(n, 1)
        ctx, q, r, s = X.copy(), Xq.copy(), y.astype(float).copy(), np.zeros(Xq.shape[0])
        for eta, gamma in zip(etas, gammas):
            # the y-slot update of one layer reads the inputs and slots before the layer
            dr = [-eta / N * sum(r[i] * ctx[i] @ ctx[j] for i in range(n)) for j in range(n)]
            ds = [-eta / N * sum(r[i] * ctx[i] @ qj for i in range(n)) for qj in q]
            transform = np.eye(d) - gamma * sum((np.outer(x, x) for x in ctx), np.zeros((d, d)))
            ctx = np.array([transform @ x for x in ctx]).reshape(n, d)
            q = np.array([transform @ x for x in q])
            r, s = r + np.array(dr), s + np.array(ds)
        return -s

    return fn


def naive_debiased(step):
    """step(L, d) → c_L."""

    def fn(X, y, Xq):
        L, d = X.shape
        if L == 0:
            return np.zeros(Xq.shape[0])
        xbar = X.mean(axis=0)
        v = sum((yi * (x - xbar) for x, yi in zip(X, y)), np.zeros(d))
        return step(L, d) * (Xq @ v)

    return fn


def _optimal_step(m2, rho):
    return lambda L, d: 1.0 / (m2 * (L + d) + rho)


# ----------------------------------------------------------------------------------------------------------------
# GD and preconditioned GD


@pytest.mark.parametrize("etas", ETAS.values(), ids=ETAS.keys())
@pytest.mark.parametrize("n,d", SHAPES)
def test_gd_matches_naive_loop_on_masked_contexts(n, d, etas):
    X, y, Xq, mask = _case(n, d, seed=10 * n + d)
    _close(GD(etas).predict(_t(X), _t(y), _t(Xq), _t(mask)), _per_prompt(naive_gd(etas), X, y, Xq, mask))
    A = _precond(d, seed=d)
    pgd = GD(etas, precond=_t(A))
    assert pgd.name == f"pgd:{len(etas)}"
    _close(pgd.predict(_t(X), _t(y), _t(Xq), _t(mask)), _per_prompt(naive_gd(etas, A), X, y, Xq, mask))
    # no mask: every slot is a context point
    full = np.ones((X.shape[0], n), dtype=bool)
    _close(GD(etas).predict(_t(X), _t(y), _t(Xq)), _per_prompt(naive_gd(etas), X, y, Xq, full))


@pytest.mark.parametrize("precond", [False, True])
@pytest.mark.parametrize("etas", ETAS.values(), ids=ETAS.keys())
@pytest.mark.parametrize("T,d", PREFIX_SHAPES)
def test_gd_prefix_fast_path_matches_generic_path_and_naive_loop(T, d, etas, precond):
    rng = np.random.default_rng(T * 10 + d)
    x, y = rng.standard_normal((3, T, d)) / np.sqrt(d), rng.standard_normal((3, T))
    A = _precond(d, seed=T) if precond else None
    learner = GD(etas, precond=None if A is None else _t(A))
    expected = _per_prefix(naive_gd(etas, A), x, y)
    _close(learner.predict_prefixes(_t(x), _t(y)), expected)
    _close(MaskedLearner.predict_prefixes(learner, _t(x), _t(y)), expected)


def test_gd_vector_targets_are_independent_columns():
    X, _, Xq, mask = _case(6, 3, seed=3)
    Y = np.random.default_rng(4).standard_normal((*X.shape[:2], 2))
    etas, A = ETAS["per-step"], _precond(3, seed=5)
    learner = GD(etas, precond=_t(A))
    out = learner.predict(_t(X), _t(Y), _t(Xq), _t(mask))
    assert out.shape == (X.shape[0], Xq.shape[1], 2)
    for k in range(2):
        _close(out[..., k], _per_prompt(naive_gd(etas, A), X, Y[..., k], Xq, mask))
    x, Yp = X[:, :5], Y[:, :5]
    cols = np.stack([_per_prefix(naive_gd(etas, A), x, Yp[..., k]) for k in range(2)], axis=-1)
    _close(learner.predict_prefixes(_t(x), _t(Yp)), cols)


def test_gd_rejects_bad_arguments():
    for etas in ([], [float("nan")], [0.1, float("inf")]):
        with pytest.raises(ValueError, match="etas"):
            GD(etas)
    for shape in ((3,), (2, 3)):
        with pytest.raises(ValueError, match="precond"):
            GD([0.1], precond=torch.ones(shape))
    learner = GD([0.1], precond=torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="precond"):  # preconditioner dimension ≠ d
        learner.predict(torch.ones(1, 2, 4), torch.ones(1, 2), torch.ones(1, 1, 4))
    with pytest.raises(ValueError, match="precond"):
        learner.predict_prefixes(torch.ones(1, 3, 4), torch.ones(1, 3))


# ----------------------------------------------------------------------------------------------------------------
# GD++


GDPP = {"one step": ([0.4], [0.2]), "per-step": ([0.5, 0.2, 0.8], [0.3, 0.05, 0.5]), "zero gamma": ([0.3] * 3, [0] * 3)}


@pytest.mark.parametrize("steps", GDPP.values(), ids=GDPP.keys())
@pytest.mark.parametrize("n,d", SHAPES)
def test_gdpp_matches_naive_token_loop_on_masked_contexts(n, d, steps):
    X, y, Xq, mask = _case(n, d, seed=7 * n + d, batch=4, m=2)
    learner = GDPlusPlus(*steps)
    expected = _per_prompt(naive_gdpp(*steps), X, y, Xq, mask)
    _close(learner.predict(_t(X), _t(y), _t(Xq), _t(mask)), expected)
    if not any(steps[1]):  # γ = 0 is plain GD
        _close(expected, _per_prompt(naive_gd(steps[0]), X, y, Xq, mask), rtol=1e-12)


@pytest.mark.parametrize("T,d", PREFIX_SHAPES)
def test_gdpp_prefixes_match_naive_loop(T, d):
    rng = np.random.default_rng(T + d)
    x, y = rng.standard_normal((2, T, d)) / np.sqrt(d), rng.standard_normal((2, T))
    learner = GDPlusPlus(*GDPP["per-step"])
    expected = _per_prefix(naive_gdpp(*GDPP["per-step"]), x, y)
    _close(learner.predict_prefixes(_t(x), _t(y)), expected)
    _close(MaskedLearner.predict_prefixes(learner, _t(x), _t(y)), expected)


def test_gdpp_rejects_mismatched_gammas():
    with pytest.raises(ValueError, match="gammas"):
        GDPlusPlus([0.1, 0.2], [0.1])


# ----------------------------------------------------------------------------------------------------------------
# debiased GD


DEBIASED = {
    "eta=0.5": (lambda: DebiasedGD(0.5), lambda L, d: 0.5 / L),
    "eta=-1.5": (lambda: DebiasedGD(-1.5), lambda L, d: -1.5 / L),
    "optimal": (lambda: DebiasedGD(), _optimal_step(1.0, 0.0)),
    "optimal m2=0.3 rho=0.4": (lambda: DebiasedGD(m2=0.3, noise_to_prior=0.4), _optimal_step(0.3, 0.4)),
}


@pytest.mark.parametrize("kind", DEBIASED)
@pytest.mark.parametrize("n,d", SHAPES)
def test_debiased_gd_matches_naive_sum_on_masked_contexts(n, d, kind):
    make, step = DEBIASED[kind]
    X, y, Xq, mask = _case(n, d, seed=3 * n + d)
    out = make().predict(_t(X), _t(y), _t(Xq), _t(mask))
    _close(out, _per_prompt(naive_debiased(step), X, y, Xq, mask))
    assert torch.count_nonzero(out[1]) == 0  # the empty prompt
    if n:  # one point: x_i − x̄ = 0
        _close(out[2], np.zeros(Xq.shape[1]))


@pytest.mark.parametrize("kind", DEBIASED)
@pytest.mark.parametrize("T,d", PREFIX_SHAPES)
def test_debiased_gd_prefix_fast_path_matches_generic_path_and_naive_loop(T, d, kind):
    make, step = DEBIASED[kind]
    rng = np.random.default_rng(5 * T + d)
    x, y = rng.standard_normal((3, T, d)), rng.standard_normal((3, T))
    learner = make()
    expected = _per_prefix(naive_debiased(step), x, y)
    _close(learner.predict_prefixes(_t(x), _t(y)), expected)
    _close(MaskedLearner.predict_prefixes(learner, _t(x), _t(y)), expected)


def test_debiased_gd_default_step_is_the_theory_step():
    # debiased_gd_step is 1/(m₂(L + d) + σ²/τ²), for scalars and tensors of counts
    for L, d, sigma2, tau2, m2 in [(1, 5, 0.0, 1.0, 1.0), (40, 5, 0.1, 0.2, 1.0), (7, 3, 0.5, 2.0, 1 / 12)]:
        assert debiased_gd_step(L, d, sigma2, tau2, m2) == pytest.approx(1 / (m2 * (L + d) + sigma2 / tau2), 1e-15)
    L = torch.arange(1, 6, dtype=torch.float64)
    _close(debiased_gd_step(L, 4, 0.3, 1.5, 0.7), 1 / (0.7 * (L.numpy() + 4) + 0.3 / 1.5), rtol=1e-15)
    # the learner uses it: c_L from theory at σ²/τ² = noise_to_prior, τ² = 1
    X, y, Xq, mask = _case(9, 4, seed=2)
    learner = DebiasedGD(m2=0.7, noise_to_prior=0.2)
    theory = naive_debiased(lambda L, d: debiased_gd_step(L, d, sigma2=0.2, tau2=1.0, m2=0.7))
    _close(learner.predict(_t(X), _t(y), _t(Xq), _t(mask)), _per_prompt(theory, X, y, Xq, mask))


def test_debiased_gd_rejects_bad_arguments():
    with pytest.raises(ValueError, match="eta"):
        DebiasedGD(float("inf"))
    for kwargs in ({"m2": 0.0}, {"m2": float("nan")}, {"noise_to_prior": -0.1}):
        with pytest.raises(ValueError, match="m2, noise_to_prior"):
            DebiasedGD(**kwargs)


# ----------------------------------------------------------------------------------------------------------------
# degenerate contexts: never NaN


LEARNERS = {
    "gd": lambda d: GD(ETAS["per-step"]),
    "pgd": lambda d: GD(ETAS["tied"], precond=_t(_precond(d, seed=0))),
    "gd++": lambda d: GDPlusPlus(*GDPP["per-step"]),
    "debiased eta": lambda d: DebiasedGD(0.5),
    "debiased optimal": lambda d: DebiasedGD(noise_to_prior=0.1),
}
NAIVE = {
    "gd": lambda d: naive_gd(ETAS["per-step"]),
    "pgd": lambda d: naive_gd(ETAS["tied"], _precond(d, seed=0)),
    "gd++": lambda d: naive_gdpp(*GDPP["per-step"]),
    "debiased eta": lambda d: naive_debiased(lambda L, d: 0.5 / L),
    "debiased optimal": lambda d: naive_debiased(_optimal_step(1.0, 0.1)),
}


@pytest.mark.parametrize("name", LEARNERS)
def test_zero_and_duplicated_contexts_are_finite_and_exact(name):
    rng = np.random.default_rng(1)
    d = 3
    point = rng.standard_normal(d) / 2
    X = np.stack([np.zeros((5, d)), np.tile(point, (5, 1)), np.zeros((5, d))])  # zero, one point ×5, all masked
    y = np.stack([np.zeros(5), rng.standard_normal(5), rng.standard_normal(5)])
    Xq = rng.standard_normal((3, 2, d))
    mask = np.array([[True] * 5, [True] * 5, [False] * 5])
    learner, naive = LEARNERS[name](d), NAIVE[name](d)
    out = learner.predict(_t(X), _t(y), _t(Xq), _t(mask))
    # floor 1: debiased GD on repeated points is 0 up to the rounding of Σ y_i x_i − x̄ Σ y_i, the data are O(1)
    _close(out, _per_prompt(naive, X, y, Xq, mask), floor=1.0)
    assert torch.count_nonzero(out[0]) == 0 and torch.count_nonzero(out[2]) == 0
    _close(learner.predict_prefixes(_t(X), _t(y)), _per_prefix(naive, X, y), floor=1.0)


# ----------------------------------------------------------------------------------------------------------------
# registry


def test_registry_parses_fixed_steps():
    gd = make_learner("gd:3:eta=0.1")
    assert isinstance(gd, GD) and gd.etas == [0.1] * 3 and gd.precond is None and gd.name == "gd:3:eta=0.1"

    task = LinearRegressionTask(TaskConfig(d=3, x_dist="gaussian", x_scale=0.8, x_cov_diag=(1.0, 2.0, 0.5)))
    pgd = make_learner("pgd:2:eta=0.05", task)
    assert isinstance(pgd, GD) and pgd.etas == [0.05] * 2 and pgd.name == "pgd:2:eta=0.05"
    A = np.diag(1 / (0.64 * np.array([1.0, 2.0, 0.5])))  # inverse input second moment
    _close(pgd.precond, A, rtol=1e-12)
    X, y, Xq, mask = _case(5, 3, seed=8)
    _close(pgd.predict(_t(X), _t(y), _t(Xq), _t(mask)), _per_prompt(naive_gd([0.05] * 2, A), X, y, Xq, mask))

    gdpp = make_learner("gd++:2:eta=0.1:gamma=0.01")
    assert isinstance(gdpp, GDPlusPlus) and (gdpp.etas, gdpp.gammas) == ([0.1] * 2, [0.01] * 2)
    assert gdpp.name == "gd++:2:eta=0.1:gamma=0.01"

    deb = make_learner("debiased_gd:0.5")
    assert isinstance(deb, DebiasedGD) and deb.eta == 0.5 and deb.name == "debiased_gd:0.5"


def test_registry_debiased_gd_takes_the_optimal_step_from_the_task():
    task = LinearRegressionTask(TaskConfig(d=4, x_dist="gaussian", x_scale=0.8, w_scale=1.5, noise_var=0.2))
    learner = make_learner("debiased_gd", task)
    assert learner.eta is None and learner.name == "debiased_gd"
    assert learner.m2 == pytest.approx(0.64) and learner.noise_to_prior == pytest.approx(0.2 / 2.25)
    X, y, Xq, mask = _case(7, 4, seed=9)
    # c_L = 1/(m₂(L + d) + σ²/τ²) with m₂ = 0.64, σ² = 0.2, τ² = 2.25
    expected = _per_prompt(naive_debiased(_optimal_step(0.64, 0.2 / 2.25)), X, y, Xq, mask)
    _close(learner.predict(_t(X), _t(y), _t(Xq), _t(mask)), expected)


@pytest.mark.parametrize(
    "spec,match",
    [
        ("gd", "K"),
        ("gd:0:eta=0.1", "K"),
        ("gd:abc:eta=0.1", "K"),
        ("gd:3:eta=nan", "eta"),
        ("gd:3:eta=abc", "eta"),
        ("gd:3:4", "positional"),
        ("gd:3:step=0.1", "step"),
        ("gd:3", "task"),
        ("pgd:2:eta=0.05", "task"),
        ("pgd:2", "task"),
        ("gd++:2:eta=0.1", "gamma"),
        ("gd++:2:gamma=0.1", "gamma"),
        ("gd++:2:eta=0.1:gamma=inf", "gamma"),
        ("gd++:2", "task"),
        ("debiased_gd:abc", "ETA"),
        ("debiased_gd:inf", "ETA"),
        ("debiased_gd:1:2", "positional"),
        ("debiased_gd:eta=1", "eta"),
        ("debiased_gd", "task"),
    ],
)
def test_registry_bad_arguments_are_one_line_errors_with_usage(spec, match):
    with pytest.raises(LearnerSpecError, match=match) as info:
        make_learner(spec)
    message = str(info.value)
    assert "\n" not in message and "usage:" in message
