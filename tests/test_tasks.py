"""LinearRegressionTask moments (Monte Carlo, 4 standard errors), exact structure, seeding, and Prompts semantics."""

import numpy as np
import pytest
import torch

from iclab.config import ConfigError, TaskConfig, task_config
from iclab.tasks import Prompts, make_task
from iclab.tasks.linear import LinearRegressionTask


def _sample(config: TaskConfig, batch: int, seed: int = 0, **kw) -> Prompts:
    return LinearRegressionTask(config).sample(batch, generator=torch.Generator().manual_seed(seed), **kw)


def _assert_mean(values: np.ndarray, expected: float, k: float = 4.0) -> None:
    """Mean of i.i.d. values within k standard errors of `expected`."""
    values = values.ravel().astype(np.float64)
    mean, se = values.mean(), values.std(ddof=1) / np.sqrt(values.size)
    assert abs(mean - expected) < k * se, f"MC mean {mean:.5g} ± {se:.2g} vs {expected:.5g}"


def test_uniform_inputs_moments():
    a = 0.7
    p = _sample(task_config("linear", d=4, n_points=30, n_queries=2, x_scale=a), 3000, dtype=torch.float64)
    x = p.x.numpy()
    assert x.shape == (3000, 32, 4)
    assert np.abs(x).max() <= a  # support [−a, a]
    _assert_mean(x, 0.0)
    _assert_mean(x**2, a**2 / 3)  # variance of U(−a, a)
    _assert_mean(x**4, a**4 / 5)  # fourth moment (what the GD closed form uses)
    np.testing.assert_allclose(
        LinearRegressionTask(task_config("linear", d=4, x_scale=a)).x_second_moment().numpy(),
        [a**2 / 3] * 4,
        rtol=1e-15,
    )


def test_gaussian_inputs_with_diagonal_covariance():
    scale, diag = 0.8, (0.5, 1.0, 2.0, 4.0)
    config = task_config("linear", d=4, n_points=30, x_dist="gaussian", x_scale=scale, x_cov_diag=diag)
    x = _sample(config, 3000, dtype=torch.float64).x.numpy()
    for k, v in enumerate(diag):
        _assert_mean(x[..., k], 0.0)
        _assert_mean(x[..., k] ** 2, scale**2 * v)
    # coordinates are uncorrelated: E[x_0 x_3] = 0
    _assert_mean(x[..., 0] * x[..., 3], 0.0)
    task = LinearRegressionTask(config)
    np.testing.assert_allclose(task.x_second_moment().numpy(), scale**2 * np.array(diag), rtol=1e-15)


@pytest.mark.parametrize("w_cov_diag", [None, (0.25, 1.0, 3.0)])
def test_task_vector_moments(w_cov_diag):
    tau = 1.3
    config = task_config("linear", d=3, n_points=2, w_scale=tau, w_cov_diag=w_cov_diag)
    w = _sample(config, 40_000, dtype=torch.float64).w.numpy()
    assert w.shape == (40_000, 3)
    diag = np.ones(3) if w_cov_diag is None else np.array(w_cov_diag)
    for k in range(3):
        _assert_mean(w[:, k], 0.0)
        _assert_mean(w[:, k] ** 2, tau**2 * diag[k])
    np.testing.assert_allclose(LinearRegressionTask(config).w_second_moment().numpy(), tau**2 * diag, rtol=1e-15)


def test_targets_are_linear_and_noise_has_the_configured_variance():
    sigma2 = 0.3
    p = _sample(task_config("linear", d=5, n_points=20, n_queries=3, noise_var=sigma2), 2000, dtype=torch.float64)
    x, w, f, y = (t.numpy() for t in (p.x, p.w, p.f, p.y))
    np.testing.assert_allclose(f, np.einsum("btd,bd->bt", x, w), rtol=1e-13, atol=1e-14)  # f = wᵀx
    noise = y - f
    _assert_mean(noise, 0.0)
    _assert_mean(noise**2, sigma2)
    _assert_mean(noise * x[..., 0], 0.0)  # independent of the inputs
    # noiseless: y is f exactly
    quiet = _sample(task_config("linear", d=5, n_points=20), 10)
    assert torch.equal(quiet.y, quiet.f)


def test_sampling_is_reproducible_from_the_seed():
    config = task_config("linear", d=3, n_points=7, n_queries=2, noise_var=0.1)
    a, b, c = _sample(config, 16, seed=5), _sample(config, 16, seed=5), _sample(config, 16, seed=6)
    for name in ("x", "y", "w", "f"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert not torch.equal(getattr(a, name), getattr(c, name)), name
    # the generator advances: a second draw from one generator differs from the first
    task, gen = LinearRegressionTask(config), torch.Generator().manual_seed(5)
    first, second = task.sample(16, generator=gen), task.sample(16, generator=gen)
    assert torch.equal(first.x, a.x) and not torch.equal(second.x, first.x)


def test_sample_shapes_dtype_and_n_points_override():
    config = task_config("linear", d=3, n_points=7, n_queries=2)
    p = _sample(config, 5)
    assert p.x.dtype == torch.float32 and p.n_ctx == 7 and len(p) == 5
    assert (p.x.shape, p.y.shape, p.w.shape, p.f.shape) == ((5, 9, 3), (5, 9), (5, 3), (5, 9))
    assert (p.x_ctx.shape, p.y_ctx.shape, p.x_q.shape, p.y_q.shape, p.f_q.shape) == (
        (5, 7, 3),
        (5, 7),
        (5, 2, 3),
        (5, 2),
        (5, 2),
    )
    longer = _sample(config, 5, n_points=12, dtype=torch.float64)
    assert longer.x.shape == (5, 14, 3) and longer.n_ctx == 12 and longer.x.dtype == torch.float64


def test_prompts_slicing_and_to():
    p = _sample(task_config("linear", d=3, n_points=4, n_queries=2, noise_var=0.1), 10)
    part = p[2:5]
    assert len(part) == 3 and part.n_ctx == p.n_ctx
    for name in ("x", "y", "w", "f"):
        assert torch.equal(getattr(part, name), getattr(p, name)[2:5])
    assert torch.equal(part.x_q, p.x_q[2:5]) and torch.equal(part.y_ctx, p.y_ctx[2:5])
    bare = Prompts(x=p.x, y=p.y, n_ctx=4)
    assert bare[1:3].w is None and bare[1:3].f_q is None
    wide = p.to(dtype=torch.float64)
    assert wide.x.dtype == wide.y.dtype == wide.w.dtype == wide.f.dtype == torch.float64
    assert torch.equal(wide.x.float(), p.x)


def test_scaled_semantics():
    p = _sample(task_config("linear", d=3, n_points=4, n_queries=2, noise_var=0.2), 6, dtype=torch.float64)
    noise = p.y - p.f
    a, b = 2.5, -0.4
    xs = p.scaled(input_scale=a)  # x → αx, f → αf, w and noise unchanged
    torch.testing.assert_close(xs.x, a * p.x, rtol=0, atol=0)
    torch.testing.assert_close(xs.f, a * p.f)
    torch.testing.assert_close(xs.y - xs.f, noise)
    assert torch.equal(xs.w, p.w) and xs.n_ctx == p.n_ctx
    ts = p.scaled(target_scale=b)  # w → βw, f → βf, x and noise unchanged
    assert torch.equal(ts.x, p.x)
    torch.testing.assert_close(ts.w, b * p.w)
    torch.testing.assert_close(ts.f, b * p.f)
    torch.testing.assert_close(ts.y - ts.f, noise)
    both = p.scaled(input_scale=a, target_scale=b)
    for q in (xs, ts, both):  # the scaled prompts stay consistent: f = wᵀx
        torch.testing.assert_close(q.f, torch.einsum("btd,bd->bt", q.x, q.w))
    unchanged = p.scaled()
    assert torch.equal(unchanged.x, p.x) and torch.equal(unchanged.y, p.y)
    with pytest.raises(ValueError, match="noiseless values f"):
        Prompts(x=p.x, y=p.y, n_ctx=4).scaled(input_scale=2.0)


def test_make_task_and_config_validation():
    assert isinstance(make_task(task_config("linear")), LinearRegressionTask)
    with pytest.raises(ConfigError, match="x_cov_diag"):
        task_config("linear", d=2, x_cov_diag=(1.0, 2.0))  # needs x_dist="gaussian"
    with pytest.raises(ConfigError, match="x_cov_diag"):
        task_config("linear", d=2, x_dist="gaussian", x_cov_diag=(1.0,))
    with pytest.raises(ConfigError, match="linear"):
        task_config(name="lineer")


def test_covariance_task_samples_without_rebuilding_tensors():
    from iclab.tasks import make_task

    task = make_task(task_config("linear", d=3, x_dist="gaussian", x_scale=1.0, x_cov_diag=(1.0, 4.0, 9.0)))
    gen = torch.Generator().manual_seed(0)
    task.sample(4, generator=gen, dtype=torch.float64)
    cached = dict(task._cache)
    prompts = task.sample(20_000, generator=gen, dtype=torch.float64)
    assert task._cache.keys() == cached.keys() and all(task._cache[k] is v for k, v in cached.items())
    torch.testing.assert_close(
        prompts.x.var(dim=(0, 1)), torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64), rtol=0.05, atol=0
    )
