"""Non-linear, sequence and classification task families: moments against closed forms (Monte Carlo, 4 standard
errors), fast batched evaluation against naive per-prompt numpy references, exact structure, seeding and pools."""

import math

import numpy as np
import pytest
import torch

from iclab.config import TaskConfig, task_config
from iclab.tasks import Prompts, make_task
from iclab.tasks.nonlinear import DecisionTreeTask
from iclab.tasks.sequences import stable_ar_coefficients


def _sample(config: TaskConfig, batch: int, seed: int = 0, **kw) -> Prompts:
    kw.setdefault("dtype", torch.float64)
    return make_task(config).sample(batch, generator=torch.Generator().manual_seed(seed), **kw)


def _assert_mean(values, expected: float, k: float = 4.0) -> None:
    """Mean of i.i.d. values within k standard errors of `expected`."""
    values = np.asarray(values, dtype=np.float64).ravel()
    mean, se = values.mean(), values.std(ddof=1) / np.sqrt(values.size)
    assert abs(mean - expected) < k * se, f"MC mean {mean:.5g} ± {se:.2g} vs {expected:.5g}"


def _np(p: Prompts) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in p.params.items()}


# --- Garg's classes ----------------------------------------------------------------------------------------------
GAUSS = {"x_dist": "gaussian", "x_scale": 1.0}


@pytest.mark.parametrize("inputs", ["gaussian", "uniform"])
def test_quadratic_and_relu_net_target_variance(inputs):
    tau, d = 1.3, 4
    x_kw = GAUSS if inputs == "gaussian" else {"x_dist": "uniform", "x_scale": 0.8}
    m2 = 1.0 if inputs == "gaussian" else 0.8**2 / 3  # E x_i²
    m4 = 3.0 if inputs == "gaussian" else 0.8**4 / 5  # E x_i⁴
    # one point per prompt: the values are i.i.d. over (function, input)
    quad = _sample(task_config(name="quadratic", d=d, n_points=1, w_scale=tau, **x_kw), 20_000)
    _assert_mean(quad.f[:, 0], 0.0)
    _assert_mean(quad.f[:, 0] ** 2, tau**2 * d * m4 / 3)  # τ²d for N(0, I): the √3 normalisation
    relu = _sample(task_config(name="relu_net", d=d, n_points=1, hidden=16, w_scale=tau, **x_kw), 20_000)
    _assert_mean(relu.f[:, 0], 0.0)
    _assert_mean(relu.f[:, 0] ** 2, tau**2 * d * m2)  # τ²E‖x‖²: the √(2/H) normalisation


def test_quadratic_and_relu_net_match_naive_numpy():
    quad = _sample(task_config(name="quadratic", d=3, n_points=5, n_queries=2, noise_var=0.1), 4)
    relu = _sample(task_config(name="relu_net", d=3, n_points=5, n_queries=2, hidden=7, w_scale=0.7), 4)
    for b in range(4):
        x, w = quad.x[b].numpy(), quad.params["w_sq"][b].numpy()
        expected = [sum(w[i] * xt[i] ** 2 for i in range(3)) / math.sqrt(3) for xt in x]
        np.testing.assert_allclose(quad.f[b].numpy(), expected, rtol=1e-12, atol=1e-14)
        x, W, a = relu.x[b].numpy(), relu.params["W"][b].numpy(), relu.params["a"][b].numpy()
        expected = [math.sqrt(2 / 7) * sum(a[h] * max(W[h] @ xt, 0.0) for h in range(7)) for xt in x]
        np.testing.assert_allclose(relu.f[b].numpy(), expected, rtol=1e-12, atol=1e-14)
    assert quad.w is None and relu.w is None  # not linear: no task vector
    assert relu.params["W"].shape == (4, 7, 3) and relu.params["a"].shape == (4, 7)


def _naive_tree(node: int, x: np.ndarray, feature: np.ndarray, leaf: np.ndarray) -> float:
    if node >= feature.size:  # a leaf
        return leaf[node - feature.size]
    return _naive_tree(2 * node + 1 + int(x[feature[node]] > 0), x, feature, leaf)


def test_decision_tree_matches_a_recursive_walk_and_has_depth_many_decisions():
    depth, d = 3, 5
    p = _sample(task_config(name="decision_tree", d=d, depth=depth, n_points=60, n_queries=4, **GAUSS), 6)
    feature, leaf = p.params["feature"], p.params["leaf"]
    assert feature.dtype == torch.long and feature.shape == (6, 2**depth - 1) and leaf.shape == (6, 2**depth)
    assert feature.min() >= 0 and feature.max() < d
    for b in range(6):
        expected = [_naive_tree(0, xt, feature[b].numpy(), leaf[b].numpy()) for xt in p.x[b].numpy()]
        np.testing.assert_array_equal(p.f[b].numpy(), expected)
        assert len(np.unique(p.f[b].numpy())) <= 2**depth
    path = DecisionTreeTask.paths(p.x, p.params).numpy()  # [B, T, depth + 1]
    assert path.shape == (6, 64, depth + 1) and (path[..., 0] == 0).all()
    for level in range(depth):  # each step goes to a child: 2n + 1 (x_i <= 0) or 2n + 2 (x_i > 0)
        step = path[..., level + 1] - 2 * path[..., level]
        assert np.isin(step, (1, 2)).all()
    assert (path[..., -1] >= 2**depth - 1).all() and (path[..., -1] < 2 ** (depth + 1) - 1).all()
    # threshold 0: x_i = 0 goes left, x_i > 0 right
    stump = {"feature": torch.tensor([[1]]), "leaf": torch.tensor([[-1.0, 1.0]])}
    x = torch.tensor([[[5.0, 0.0], [-5.0, 1e-9], [0.0, -2.0]]])
    np.testing.assert_array_equal(DecisionTreeTask.paths(x, stump)[..., -1].numpy(), [[1, 2, 1]])
    assert make_task(task_config(name="decision_tree", d=2, depth=1)).evaluate(x, stump).tolist() == [[-1, 1, -1]]


def test_decision_tree_leaf_and_target_statistics():
    tau, depth, d = 1.5, 4, 6
    p = _sample(task_config(name="decision_tree", d=d, depth=depth, n_points=1, w_scale=tau, **GAUSS), 8000)
    leaf, feature = p.params["leaf"].numpy(), p.params["feature"].numpy()
    _assert_mean(leaf, 0.0)
    _assert_mean(leaf**2, tau**2)
    for i in range(d):  # node coordinates uniform on {0, …, d − 1}
        _assert_mean(feature == i, 1 / d)
    # the leaf reached is independent of its value: f ~ N(0, τ²) too
    _assert_mean(p.f[:, 0], 0.0)
    _assert_mean(p.f[:, 0] ** 2, tau**2)


# --- sine and Fourier --------------------------------------------------------------------------------------------
def test_sine_ranges_independence_and_values():
    amp, phase = (0.1, 5.0), (0.0, math.pi)
    config = task_config(name="sine", d=1, n_points=4, x_scale=5.0, amplitude=amp, phase=phase)
    p = _sample(config, 20_000)
    A, phi = p.params["amplitude"].numpy(), p.params["phase"].numpy()
    assert A.min() >= amp[0] and A.max() <= amp[1] and phi.min() >= phase[0] and phi.max() <= phase[1]
    for v, (lo, hi) in ((A, amp), (phi, phase)):  # U(lo, hi): mean and variance
        _assert_mean(v, (lo + hi) / 2)
        _assert_mean((v - (lo + hi) / 2) ** 2, (hi - lo) ** 2 / 12)
    r = np.corrcoef(A, phi)[0, 1]  # drawn independently (unlike the vO code); sd of r ≈ 1/√n
    assert abs(r) < 4 / math.sqrt(A.size), r
    assert np.abs(p.x.numpy()).max() <= 5.0
    np.testing.assert_allclose(p.f.numpy(), A[:, None] * np.sin(p.x[..., 0].numpy() + phi[:, None]), rtol=1e-12)


def test_fourier_values_period_and_normalisation():
    K, L, tau = 3, 2.0, 0.8
    config = task_config(name="fourier", d=1, n_points=6, frequencies=K, x_scale=L, w_scale=tau)
    p = _sample(config, 5)
    a, b = p.params["a"].numpy(), p.params["b"].numpy()
    assert a.shape == (5, K + 1) and b.shape == (5, K)
    x = p.x[..., 0].numpy()
    expected = a[:, :1] + sum(
        a[:, k : k + 1] * np.cos(k * np.pi * x / L) + b[:, k - 1 : k] * np.sin(k * np.pi * x / L)
        for k in range(1, K + 1)
    )
    np.testing.assert_allclose(p.f.numpy(), expected, rtol=1e-12, atol=1e-13)
    task = make_task(config)
    torch.testing.assert_close(task.targets(p.x + 2 * L, p), p.f)  # period 2L: spans the input range
    big = _sample(config, 20_000)
    _assert_mean(big.params["a"].numpy() ** 2, tau**2 / (K + 1))
    _assert_mean(big.params["b"].numpy() ** 2, tau**2 / (K + 1))
    _assert_mean(big.f[:, 0], 0.0)
    _assert_mean(big.f[:, 0] ** 2, tau**2)  # E f(x)² = τ² at every x


# --- sequences -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [1, 2, 3, 6])
def test_ar_coefficients_are_stationary(order):
    rho = 0.8
    a = stable_ar_coefficients(
        400, order, rho, generator=torch.Generator().manual_seed(1), device=torch.device("cpu"), dtype=torch.float64
    ).numpy()
    companion = np.zeros((400, order, order))
    companion[:, 0] = a
    companion[:, np.arange(1, order), np.arange(order - 1)] = 1.0
    moduli = np.abs(np.linalg.eigvals(companion))  # [400, p]
    assert moduli.max() <= rho + 1e-6  # (repeated roots are ill-conditioned: 1e-6, not 1e-12)
    assert np.quantile(moduli.max(axis=1), 0.9) > 0.6 * rho  # the disc is filled, not only its centre


def test_ar_structure_noise_and_stationary_start():
    rho, sigma2 = 0.9, 0.5
    config = task_config(name="ar", d=3, n_points=12, n_queries=2, noise_var=sigma2, spectral_radius=rho)
    p = _sample(config, 4000)
    x, y, f, a = p.x.numpy(), p.y.numpy(), p.f.numpy(), p.w.numpy()
    assert x.shape == (4000, 14, 3) and y.shape == f.shape == (4000, 14) and torch.equal(p.params["w"], p.w)
    np.testing.assert_array_equal(x[:, 1:, 1:], x[:, :-1, :-1])  # the window shifts by one lag
    np.testing.assert_array_equal(x[:, 1:, 0], y[:, :-1])  # and takes in the last target
    np.testing.assert_allclose(f, np.einsum("btp,bp->bt", x, a), rtol=1e-13, atol=1e-13)
    noise = y - f  # the innovations ε_t
    _assert_mean(noise, 0.0)
    _assert_mean(noise**2, sigma2)
    _assert_mean(noise[:, 1:] * noise[:, :-1], 0.0)  # white
    _assert_mean(noise[:, 3:] * x[:, 3:, 0], 0.0)  # independent of the past
    # AR(1), a ~ U(−ρ, ρ): after the burn-in E z_t² = σ² E[1/(1 − a²)] = σ² atanh(ρ)/ρ at every t
    ar1 = _sample(task_config(name="ar", d=1, n_points=5, noise_var=sigma2, spectral_radius=rho), 20_000)
    for t in (0, 5):
        _assert_mean(ar1.y[:, t] ** 2, sigma2 * math.atanh(rho) / rho)


def test_ar_without_noise_starts_from_standard_normal_values():
    p = _sample(task_config(name="ar", d=2, n_points=8), 5000)
    assert make_task(task_config(name="ar", d=2)).burn_in == 0
    np.testing.assert_allclose(p.y.numpy(), p.f.numpy(), rtol=1e-13, atol=1e-14)
    _assert_mean(p.x[:, 0].numpy() ** 2, 1.0)  # the first window is the initial N(0, 1) values


def test_linear_dynamics_orthogonal_and_trajectory():
    rho, d, sigma2 = 0.9, 4, 0.2
    config = task_config(name="linear_dynamics", d=d, n_points=9, noise_var=sigma2, spectral_radius=rho)
    p = _sample(config, 6000)
    W, x, y, f = p.params["W"].numpy(), p.x.numpy(), p.y.numpy(), p.f.numpy()
    assert make_task(config).vector_targets and x.shape == y.shape == f.shape == (6000, 10, d) and p.w is None
    np.testing.assert_allclose(W.transpose(0, 2, 1) @ W, np.broadcast_to(rho**2 * np.eye(d), W.shape), atol=1e-12)
    Q = W / rho  # Haar: E Q_ij = 0, E Q_ij² = 1/d, det = ±1 equally often
    _assert_mean(Q[:, 0, 1], 0.0)
    _assert_mean(Q[:, 2, 2] ** 2, 1 / d)
    _assert_mean(np.linalg.det(Q), 0.0)
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])  # y_t = x_{t+1}
    np.testing.assert_allclose(f, np.einsum("bij,btj->bti", W, x), rtol=1e-13, atol=1e-13)
    _assert_mean((y - f) ** 2, sigma2)
    _assert_mean(x[:, 0] ** 2, 1.0)  # s_0 ~ N(0, I)
    quiet = _sample(task_config(name="linear_dynamics", d=d, n_points=5), 3)
    np.testing.assert_allclose(quiet.y.numpy(), quiet.f.numpy(), rtol=1e-13, atol=1e-14)


def test_sequences_with_fewer_active_dimensions():
    p = _sample(task_config(name="ar", d=4, n_points=6, noise_var=0.1), 50, d_active=2)
    assert (p.w[:, 2:] == 0).all() and (p.x[..., 2:] == 0).all() and (p.w[:, :2] != 0).all()
    np.testing.assert_array_equal(p.x[:, 1:, 1].numpy(), p.x[:, :-1, 0].numpy())
    q = _sample(task_config(name="linear_dynamics", d=4, n_points=6, noise_var=0.1), 50, d_active=3)
    assert (q.x[..., 3:] == 0).all() and (q.y[..., 3:] == 0).all()
    W = q.params["W"]
    torch.testing.assert_close(W[:, :3, :3].mT @ W[:, :3, :3], 0.81 * torch.eye(3, dtype=W.dtype).expand(50, 3, 3))
    for name in ("ar", "linear_dynamics"):
        with pytest.raises(ValueError, match="d_active"):
            _sample(task_config(name=name, d=4), 2, d_active=5)
        with pytest.raises(ValueError, match="d_active"):
            _sample(task_config(name=name, d=4, pool_size=3), 2, d_active=2)


# --- softmax regression and classification -------------------------------------------------------------------------
def test_softmax_regression_probability_targets():
    config = task_config(name="softmax_regression", d=3, n_points=5, n_classes=4, w_scale=2.0, noise_var=0.3)
    p = _sample(config, 7)
    assert make_task(config).vector_targets and p.y.shape == p.f.shape == (7, 6, 4)
    assert torch.equal(p.y, p.f)  # no label noise: noise_var is ignored
    np.testing.assert_allclose(p.f.sum(-1).numpy(), 1.0, rtol=1e-14)
    logits = np.einsum("bkd,btd->btk", p.params["W"].numpy(), p.x.numpy())
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(p.f.numpy(), expected, rtol=1e-12)
    _assert_mean(_sample(config, 5000).params["W"].numpy() ** 2, 4.0)


def test_classification_labels_and_flips():
    q = 0.2
    config = task_config(name="classification", d=4, n_points=20, flip_prob=q, w_scale=0.5)
    p = _sample(config, 3000)
    x, w, y, f = p.x.numpy(), p.w.numpy(), p.y.numpy(), p.f.numpy()
    assert set(np.unique(y)) == set(np.unique(f)) == {-1.0, 1.0}
    np.testing.assert_array_equal(f, np.where(np.einsum("btd,bd->bt", x, w) >= 0, 1.0, -1.0))
    _assert_mean(y != f, q)  # flip rate
    _assert_mean((y != f)[f > 0], q)  # independent of the label
    task = make_task(config)
    assert task.targets(torch.zeros(3000, 1, 4, dtype=torch.float64), p).eq(1).all()  # sign(0) := +1
    clean = _sample(task_config(name="classification", d=4, n_points=20, noise_var=1.0), 10)
    assert torch.equal(clean.y, clean.f)  # flip_prob 0: noise_var does not apply


# --- every family ------------------------------------------------------------------------------------------------
FAMILIES = {
    "quadratic": {"d": 3},
    "relu_net": {"d": 3, "hidden": 5},
    "decision_tree": {"d": 3, "depth": 2},
    "sine": {"d": 1},
    "fourier": {"d": 1},
    "ar": {"d": 3, "noise_var": 0.1},
    "linear_dynamics": {"d": 3, "noise_var": 0.1},
    "softmax_regression": {"d": 3},
    "classification": {"d": 3, "flip_prob": 0.1},
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_reproducible_targets_and_dtype(name):
    config = task_config(name=name, n_points=6, n_queries=2, **FAMILIES[name])
    a, b, c = (_sample(config, 8, seed=s, dtype=torch.float32) for s in (3, 3, 4))
    for attr in ("x", "y", "f"):
        assert torch.equal(getattr(a, attr), getattr(b, attr)), attr
        assert getattr(a, attr).dtype == torch.float32 and len(getattr(a, attr)) == 8
    assert a.params.keys() == b.params.keys() and all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert not torch.equal(a.y, c.y)
    task = make_task(config)
    assert torch.equal(task.targets(a.x, a), a.f)
    expected_y = (8, 8, 3 if task.vector_targets else 1)[: 3 if task.vector_targets else 2]
    assert a.y.shape == expected_y and a.x.shape[:2] == (8, 8) and a.n_ctx == 6
    assert _sample(config, 2, n_points=9).x.shape[1] == 11


@pytest.mark.parametrize("name", list(FAMILIES))
def test_finite_pool(name):
    M = 3
    config = task_config(name=name, n_points=5, pool_size=M, pool_seed=7, **FAMILIES[name])
    task = make_task(config)
    p = task.sample(40, generator=torch.Generator().manual_seed(0))
    pool = task.pool_params("cpu", torch.float32)
    index = None
    for k, v in pool.items():  # every prompt's parameters are one of the M pool entries
        assert v.shape[0] == M
        same = (p.params[k].unsqueeze(1) == v.unsqueeze(0)).reshape(40, M, -1).all(-1)  # [B, M]
        index = same if index is None else index & same
    assert index.any(1).all() and index.any(0).sum() > 1  # all from the pool, more than one entry used
    # the pool is drawn once from pool_seed: the same in another task object and another dtype
    again = make_task(config).pool_params("cpu", torch.float64)
    assert all(torch.equal(again[k].to(v.dtype), v) for k, v in pool.items())
    assert torch.equal(task.targets(p.x, p), p.f)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(FAMILIES))
def test_sampling_on_cuda_stays_on_the_device(name):
    for pool_size in (0, 3):
        task = make_task(task_config(name=name, n_points=6, pool_size=pool_size, **FAMILIES[name]))
        p = task.sample(16, generator=torch.Generator("cuda").manual_seed(0))
        tensors = [p.x, p.y, p.f, *p.params.values()]
        assert all(t.device.type == "cuda" for t in tensors) and p.x.dtype == torch.float32
        assert torch.equal(task.targets(p.x, p), p.f)
