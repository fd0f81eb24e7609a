"""Reference learners against naive numpy loops, the LSA construction against them, and step-size tuning.

The naive references are written here, per prompt, from the math (docs/conventions.md §4):
* GD: W ← W − η (1/N) Σ_i (W x_i − y_i) x_i, from W = 0; ŷ = W x_q.
* GD++: explicit per-token transforms x_j ← (I − γ_l G_l) x_j with G_l = Σ_i x_i x_iᵀ over the *current* context
  inputs, where the y-step of a layer uses the inputs before that layer's transform. Two independent forms: the
  token stream itself, and the equivalent weight form W ← W − η ∇L(W) BᵀB on the original inputs, with B the
  product of the transforms applied so far (so (B x_i)ᵀ(B x_j) is the score the layer sees).
"""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize, minimize_scalar

from iclab.algorithms.construct import construct_gd, construct_gdpp, gd_blocks
from iclab.algorithms.gd import GD, GDPlusPlus, gd_predict, gdpp_predict
from iclab.algorithms.least_squares import OLS, Ridge, ols_weights, ridge_weights
from iclab.algorithms.tuning import closed_form_gd1_eta, tune_steps
from iclab.config import task_config
from iclab.tasks.linear import LinearRegressionTask

SEEDS = range(12)


# ----------------------------------------------------------------------------------------------------------------
# naive references (numpy, one prompt at a time)


def naive_gd(X: np.ndarray, y: np.ndarray, Xq: np.ndarray, etas) -> np.ndarray:
    n, d = X.shape
    W = np.zeros(d)
    for eta in etas:
        grad = np.zeros(d)
        for i in range(n):
            grad += (W @ X[i] - y[i]) * X[i]
        W = W - eta * grad / n
    return Xq @ W


def naive_gdpp_tokens(X, y, Xq, etas, gammas) -> np.ndarray:
    """The token stream: y-slots r (context) and s (queries), explicit per-token x transforms."""
    n = X.shape[0]
    xs = [X[i].copy() for i in range(n)]
    qs = [Xq[j].copy() for j in range(len(Xq))]
    r = [float(v) for v in y]
    s = [0.0] * len(Xq)
    for eta, gamma in zip(etas, gammas):
        # y-step from the inputs before this layer's transform
        new_r = [r[j] - eta / n * sum(r[i] * (xs[i] @ xs[j]) for i in range(n)) for j in range(n)]
        s = [s[j] - eta / n * sum(r[i] * (xs[i] @ qs[j]) for i in range(n)) for j in range(len(qs))]
        gram = sum(np.outer(xi, xi) for xi in xs)
        xs = [xi - gamma * gram @ xi for xi in xs]
        qs = [qj - gamma * gram @ qj for qj in qs]
        r = new_r
    return -np.array(s)


def naive_gdpp_weights(X, y, Xq, etas, gammas) -> np.ndarray:
    """Weight form: preconditioned GD on the original inputs, preconditioner BᵀB from the explicit transforms."""
    n, d = X.shape
    W = np.zeros(d)
    B = np.eye(d)
    xs = [X[i].copy() for i in range(n)]  # the transformed context tokens, B x_i
    for eta, gamma in zip(etas, gammas):
        grad = sum((W @ X[i] - y[i]) * X[i] for i in range(n)) / n
        W = W - eta * grad @ B.T @ B
        gram = sum(np.outer(xi, xi) for xi in xs)
        step = np.eye(d) - gamma * gram
        xs = [step @ xi for xi in xs]
        B = step @ B
    return Xq @ W


def _draw_case(seed: int):
    """Random sizes, float64 data and step sizes for one acceptance case."""
    rng = np.random.default_rng(seed)
    d, n, k, m = int(rng.integers(1, 13)), int(rng.integers(1, 21)), int(rng.integers(1, 5)), int(rng.integers(2, 5))
    batch = 3
    x = rng.uniform(-0.5, 0.5, size=(batch, n + m, d))
    w = rng.standard_normal((batch, d))
    y = np.einsum("btd,bd->bt", x, w) + 0.1 * rng.standard_normal((batch, n + m))
    etas = rng.uniform(0.2, 1.5, size=k).tolist()
    gammas = rng.uniform(0.0, 0.1, size=k).tolist()
    return x[:, :n], y[:, :n], x[:, n:], etas, gammas


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _close(actual: torch.Tensor | np.ndarray, expected: np.ndarray, tol: float = 1e-6) -> None:
    actual = np.asarray(actual.detach() if isinstance(actual, torch.Tensor) else actual, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max()))
    err = float(np.abs(actual - expected).max())
    assert err <= tol * scale, f"max abs error {err:.3g} > {tol:g} × {scale:.3g}"


def _naive_batch(fn, x_ctx, y_ctx, x_q, *steps) -> np.ndarray:
    return np.stack([fn(x_ctx[b], y_ctx[b], x_q[b], *steps) for b in range(x_ctx.shape[0])])


# ----------------------------------------------------------------------------------------------------------------
# (1) acceptance: constructed LSA == K steps of GD / GD++


@pytest.mark.parametrize("variant", ["untied", "heads2", "tied"])
@pytest.mark.parametrize("seed", SEEDS)
def test_constructed_lsa_equals_gd(seed, variant):
    x_ctx, y_ctx, x_q, etas, _ = _draw_case(seed)
    d, n = x_ctx.shape[2], x_ctx.shape[1]
    if variant == "tied":
        etas = [etas[0]] * len(etas)
    model = construct_gd(d, n, etas, heads=2 if variant == "heads2" else 1, tied=variant == "tied")
    assert model.config.layers == len(etas)
    pred = model.predict(_t(x_ctx), _t(y_ctx), _t(x_q))
    assert pred.dtype == torch.float64 and pred.shape == x_q.shape[:2]
    expected = _naive_batch(naive_gd, x_ctx, y_ctx, x_q, etas)
    _close(pred, expected)
    _close(gd_predict(_t(x_ctx), _t(y_ctx), _t(x_q), etas), expected)


@pytest.mark.parametrize("variant", ["untied", "heads2", "tied"])
@pytest.mark.parametrize("seed", SEEDS)
def test_constructed_lsa_equals_gdpp(seed, variant):
    x_ctx, y_ctx, x_q, etas, gammas = _draw_case(seed)
    d, n = x_ctx.shape[2], x_ctx.shape[1]
    if variant == "tied":
        etas, gammas = [etas[0]] * len(etas), [gammas[0]] * len(gammas)
    model = construct_gdpp(d, n, etas, gammas, heads=2 if variant == "heads2" else 1, tied=variant == "tied")
    pred = model.predict(_t(x_ctx), _t(y_ctx), _t(x_q))
    expected = _naive_batch(naive_gdpp_weights, x_ctx, y_ctx, x_q, etas, gammas)
    _close(pred, expected)
    _close(gdpp_predict(_t(x_ctx), _t(y_ctx), _t(x_q), etas, gammas), expected)


def test_construction_blocks_and_validation():
    blocks = gd_blocks(3, eta=0.6, n=4, gamma=0.25)
    kq = np.zeros((4, 4))
    kq[:3, :3] = np.eye(3)
    np.testing.assert_array_equal(blocks["W_Q"].numpy(), kq)
    np.testing.assert_array_equal(blocks["W_K"].numpy(), kq)
    np.testing.assert_array_equal(blocks["W_V"].numpy(), np.diag([-1.0, -1.0, -1.0, -1.0]))
    np.testing.assert_array_equal(blocks["W_O"].numpy(), np.diag([0.25, 0.25, 0.25, 0.15]))
    # other heads of a multi-head construction are zero
    model = construct_gd(3, 4, [0.5], heads=3)
    assert torch.count_nonzero(model.weights[0].W_V[1:]) == 0
    with pytest.raises(ValueError, match="gammas"):
        construct_gdpp(3, 4, [0.5, 0.5], [0.1])
    with pytest.raises(ValueError, match="tied"):
        construct_gd(3, 4, [0.5, 0.4], tied=True)


# ----------------------------------------------------------------------------------------------------------------
# (2) batched GD / GD++ against the naive loops


@pytest.mark.parametrize("seed", SEEDS)
def test_gd_predict_matches_naive_loop(seed):
    x_ctx, y_ctx, x_q, etas, _ = _draw_case(seed)
    expected = _naive_batch(naive_gd, x_ctx, y_ctx, x_q, etas)
    _close(gd_predict(_t(x_ctx), _t(y_ctx), _t(x_q), etas), expected, tol=1e-10)
    _close(GD(etas).predict(_t(x_ctx), _t(y_ctx), _t(x_q)), expected, tol=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
def test_gdpp_predict_matches_naive_loops(seed):
    x_ctx, y_ctx, x_q, etas, gammas = _draw_case(seed)
    by_tokens = _naive_batch(naive_gdpp_tokens, x_ctx, y_ctx, x_q, etas, gammas)
    by_weights = _naive_batch(naive_gdpp_weights, x_ctx, y_ctx, x_q, etas, gammas)
    _close(by_tokens, by_weights, tol=1e-10)  # the two naive forms agree with each other
    _close(gdpp_predict(_t(x_ctx), _t(y_ctx), _t(x_q), etas, gammas), by_weights, tol=1e-10)
    _close(GDPlusPlus(etas, gammas).predict(_t(x_ctx), _t(y_ctx), _t(x_q)), by_weights, tol=1e-10)


def test_gdpp_with_zero_gamma_is_gd_and_last_gamma_is_inert():
    x_ctx, y_ctx, x_q, etas, gammas = _draw_case(99)
    args = (_t(x_ctx), _t(y_ctx), _t(x_q))
    _close(gdpp_predict(*args, etas, [0.0] * len(etas)), gd_predict(*args, etas).numpy(), tol=1e-12)
    # the last layer's x-transform happens after its y-step: it cannot change the prediction
    changed = [*gammas[:-1], gammas[-1] + 0.3]
    _close(gdpp_predict(*args, etas, changed), gdpp_predict(*args, etas, gammas).numpy(), tol=1e-12)
    with pytest.raises(ValueError, match="gammas"):
        gdpp_predict(*args, [0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="gammas"):
        GDPlusPlus([0.1, 0.2], [0.1])


def test_gd_predict_is_differentiable_in_etas():
    # one step: ŷ = η u with u = (1/N) Σ_i y_i x_iᵀ x_q, so ∂ŷ/∂η = u
    x_ctx, y_ctx, x_q, _, _ = _draw_case(5)
    etas = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    pred = gd_predict(_t(x_ctx), _t(y_ctx), _t(x_q), etas)
    (grad,) = torch.autograd.grad(pred.sum(), etas)
    u = np.einsum("bn,bnd,bmd->b", y_ctx, x_ctx, x_q).sum() / x_ctx.shape[1]
    assert abs(grad.item() - u) <= 1e-10 * max(1.0, abs(u))


# ----------------------------------------------------------------------------------------------------------------
# (3) least squares against numpy


def _rank_deficient(rng, n, d, rank):
    return rng.standard_normal((n, rank)) @ rng.standard_normal((rank, d))


OLS_CASES = {
    "n<d": (4, 7, None),
    "n=d": (6, 6, None),
    "n>d": (15, 5, None),
    "rank-deficient n>d": (12, 6, 3),
    "rank-deficient n<d": (5, 9, 2),
    "d=1": (8, 1, None),
}


@pytest.mark.parametrize("case", OLS_CASES)
def test_ols_matches_numpy_lstsq_and_pinv(case):
    n, d, rank = OLS_CASES[case]
    rng = np.random.default_rng(list(OLS_CASES).index(case))
    batch = 4
    X = np.stack(
        [rng.standard_normal((n, d)) if rank is None else _rank_deficient(rng, n, d, rank) for _ in range(batch)]
    )
    y = rng.standard_normal((batch, n))
    Xq = rng.standard_normal((batch, 3, d))
    w = ols_weights(_t(X), _t(y)).numpy()
    for b in range(batch):
        ref = np.linalg.lstsq(X[b], y[b], rcond=None)[0]  # the minimum-norm solution
        np.testing.assert_allclose(w[b], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
        np.testing.assert_allclose(w[b], np.linalg.pinv(X[b]) @ y[b], rtol=1e-5, atol=1e-5 * np.abs(ref).max())
        if rank is None and n <= d:  # full row rank: interpolates the context exactly
            np.testing.assert_allclose(X[b] @ w[b], y[b], atol=1e-9)
    pred = OLS().predict(_t(X), _t(y), _t(Xq)).numpy()
    np.testing.assert_allclose(pred, np.einsum("bmd,bd->bm", Xq, w), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lam", [1e-3, 0.5, 10.0])
@pytest.mark.parametrize("shape", [(4, 7), (6, 6), (15, 5)])
def test_ridge_matches_numpy_solve(shape, lam):
    n, d = shape
    rng = np.random.default_rng(n * 100 + d)
    X = rng.standard_normal((3, n, d))
    y = rng.standard_normal((3, n))
    Xq = rng.standard_normal((3, 2, d))
    w = ridge_weights(_t(X), _t(y), lam).numpy()
    for b in range(3):
        ref = np.linalg.solve(X[b].T @ X[b] + lam * np.eye(d), X[b].T @ y[b])
        np.testing.assert_allclose(w[b], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    pred = Ridge(lam).predict(_t(X), _t(y), _t(Xq)).numpy()
    np.testing.assert_allclose(pred, np.einsum("bmd,bd->bm", Xq, w), rtol=1e-12, atol=1e-12)


def test_ridge_tends_to_ols_and_rejects_bad_lambda():
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((2, 20, 4)), rng.standard_normal((2, 20))
    np.testing.assert_allclose(
        ridge_weights(_t(X), _t(y), 1e-10).numpy(), ols_weights(_t(X), _t(y)).numpy(), rtol=1e-7, atol=1e-9
    )
    for lam in (0.0, -1.0):
        with pytest.raises(ValueError, match="lambda"):
            Ridge(lam)


# ----------------------------------------------------------------------------------------------------------------
# (4) step-size tuning


VO_TASK = task_config("linear", d=10, n_points=10)  # x ~ U(−0.5, 0.5)^10, w ~ N(0, I), noiseless
N_TUNE = 1000


def _mc_eta(task: LinearRegressionTask, n_prompts: int, seed: int) -> tuple[float, float]:
    """argmin_η of the MC ½·MSE of one GD step on fixed float64 prompts (scipy), and its delta-method SE."""
    p = task.sample(n_prompts, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def loss(eta: float) -> float:
        pred = gd_predict(p.x_ctx, p.y_ctx, p.x_q, [eta])
        return 0.5 * ((pred - p.y_q) ** 2).mean().item()

    eta_hat = minimize_scalar(loss, bracket=(0.0, 1.0), tol=1e-10).x
    # ŷ = η u, so η̂ = mean(u y)/mean(u²); influence function (u y − η̂ u²)/mean(u²), summed per prompt
    u = gd_predict(p.x_ctx, p.y_ctx, p.x_q, [1.0]).numpy()
    yq = p.y_q.numpy()
    mean_u2 = (u**2).mean()
    assert abs(eta_hat - (u * yq).mean() / mean_u2) <= 1e-6 * eta_hat  # the scalar minimiser converged
    psi = ((u * yq - eta_hat * u**2) / mean_u2).mean(axis=1)
    return eta_hat, float(psi.std(ddof=1) / np.sqrt(n_prompts))


@pytest.mark.parametrize(
    "config",
    [
        VO_TASK,
        task_config("linear", d=4, n_points=8, n_queries=2, x_dist="gaussian", x_scale=0.8, w_scale=1.5, noise_var=0.3),
    ],
    ids=["vO-uniform", "gaussian-noisy"],
)
def test_tune_one_step_closed_form_is_the_mc_minimiser(config):
    task = LinearRegressionTask(config)
    tuned = tune_steps(task, 1, n_prompts=200)
    assert tuned.method == "closed form" and tuned.gammas == (0.0,)
    assert tuned.etas[0] == closed_form_gd1_eta(task)
    eta_mc, se = _mc_eta(task, 40_000, seed=1)
    assert abs(tuned.etas[0] - eta_mc) < 4 * se, f"closed form {tuned.etas[0]:.5g} vs MC {eta_mc:.5g} ± {se:.2g}"


def test_an_ill_conditioned_input_covariance_has_no_closed_form_step():
    """x_condition ≠ 1 makes Σ anisotropic (log-spaced eigenvalues): the i.i.d.-coordinate closed form does not
    apply, so the one-step η is tuned numerically and beats the isotropic formula on the task's own prompts."""
    config = task_config("linear", d=4, n_points=8, x_dist="gaussian", x_condition=100.0)
    task = LinearRegressionTask(config)
    assert closed_form_gd1_eta(task) is None
    tuned = tune_steps(task, 1, n_prompts=4000, seed=5)
    assert tuned.method.startswith("L-BFGS")
    isotropic = closed_form_gd1_eta(LinearRegressionTask(task_config("linear", d=4, n_points=8, x_dist="gaussian")))
    p = task.sample(4000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    u = gd_predict(p.x_ctx, p.y_ctx, p.x_q, [1.0])
    loss = lambda eta: 0.5 * ((eta * u - p.y_q) ** 2).mean().item()  # noqa: E731
    assert tuned.half_mse <= loss(isotropic) + 1e-12


def test_tune_one_step_numerical_is_exact_minimiser_on_its_prompts():
    # No closed form for a non-isotropic input covariance: L-BFGS must find η̂ = Σuy / Σu² on its own prompts.
    task = LinearRegressionTask(task_config("linear", d=3, n_points=6, x_dist="gaussian", x_cov_diag=(0.5, 1.0, 2.0)))
    assert closed_form_gd1_eta(task) is None
    tuned = tune_steps(task, 1, n_prompts=2000, seed=5)
    assert tuned.method.startswith("L-BFGS")
    p = task.sample(2000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    u = gd_predict(p.x_ctx, p.y_ctx, p.x_q, [1.0])
    eta_hat = ((u * p.y_q).sum() / (u**2).sum()).item()
    assert abs(tuned.etas[0] - eta_hat) <= 1e-6 * eta_hat
    assert abs(tuned.half_mse - 0.5 * ((eta_hat * u - p.y_q) ** 2).mean().item()) <= 1e-10


@pytest.fixture(scope="module")
def tuned_vo():
    task = LinearRegressionTask(VO_TASK)
    runs = {
        "gd1": dict(steps=1),
        "gd2": dict(steps=2),
        "gd2_tied": dict(steps=2, tied=True),
        "gdpp2": dict(steps=2, plus_plus=True),
        "gdpp2_tied": dict(steps=2, plus_plus=True, tied=True),
    }
    out = {name: tune_steps(task, n_prompts=N_TUNE, **kw) for name, kw in runs.items()}
    prompts = task.sample(N_TUNE, generator=torch.Generator().manual_seed(777), dtype=torch.float64)
    return task, prompts, out


def _half_mse(pred: torch.Tensor, prompts) -> float:
    return 0.5 * ((pred - prompts.y_q) ** 2).mean().item()


def test_tuned_losses_are_the_losses_of_the_returned_steps(tuned_vo):
    _, p, out = tuned_vo
    for name, r in out.items():
        pred = gdpp_predict(p.x_ctx, p.y_ctx, p.x_q, r.etas, r.gammas)
        assert abs(r.half_mse - _half_mse(pred, p)) <= 1e-10 * r.half_mse, name
        assert len(r.etas) == len(r.gammas) == (1 if name == "gd1" else 2)
    for name in ("gd2", "gd2_tied"):
        assert out[name].gammas == (0.0, 0.0)
    for name in ("gd2_tied", "gdpp2_tied"):
        assert out[name].etas[0] == out[name].etas[1] and out[name].gammas[0] == out[name].gammas[1]


def test_tuned_loss_orderings(tuned_vo):
    _, _, out = tuned_vo
    loss = {name: r.half_mse for name, r in out.items()}
    # each richer family contains the poorer one, on the same tuning prompts
    assert loss["gd2"] < loss["gd1"]
    assert loss["gdpp2"] < loss["gd2"]
    assert loss["gdpp2_tied"] < loss["gd2_tied"]
    assert loss["gd2"] <= loss["gd2_tied"] * (1 + 1e-9)
    assert loss["gdpp2"] <= loss["gdpp2_tied"] * (1 + 1e-9)


def test_tuned_two_step_gd_is_the_global_minimum(tuned_vo):
    # K-step GD from 0 is symmetric in its steps (ŷ = x_qᵀ[I − Π_l(I − η_l Ŝ)]Ŝ⁻¹(1/N)Xᵀy), so a tuner started on
    # η₁ = η₂ can stall on that line. Compare with Nelder–Mead from asymmetric starts on the same prompts.
    _, p, out = tuned_vo

    def loss(etas) -> float:
        return _half_mse(gd_predict(p.x_ctx, p.y_ctx, p.x_q, list(etas)), p)

    best = min(
        minimize(loss, x0, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-13, "maxiter": 2000}).fun
        for x0 in [(10.0, 3.0), (3.0, 10.0)]
    )
    assert out["gd2"].half_mse <= best * (1 + 1e-6), f"tuned {out['gd2'].half_mse:.6g} vs Nelder–Mead {best:.6g}"


def test_tune_steps_rejects_zero_steps():
    with pytest.raises(ValueError, match="steps"):
        tune_steps(LinearRegressionTask(VO_TASK), 0)
