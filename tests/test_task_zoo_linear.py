"""Linear-type task families (linear priors and covariances, sparse, finite pools, mixtures) and the curriculum.

Moments are checked against Monte-Carlo standard errors: a mean of i.i.d. values must lie within K = 5 standard
errors of its expectation (P(|Z| > 5) ≈ 6e-7 per comparison, so a few hundred comparisons stay far from a false
alarm whatever the seed). Structure (supports, ranks, signs, pool membership) is checked exactly.
"""

import dataclasses
import itertools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch

from iclab.config import TaskConfig, change_family, task_config
from iclab.tasks import TASKS, Prompts, make_task
from iclab.tasks.curriculum import Curriculum
from iclab.tasks.linear import LinearConfig, LinearRegressionTask

K = 5.0


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sample(config: TaskConfig, batch: int, seed: int = 0, **kw) -> Prompts:
    kw.setdefault("dtype", torch.float64)
    return make_task(config).sample(batch, generator=_gen(seed), **kw)


def _assert_mean(values, expected: float, k: float = K) -> None:
    """Mean of i.i.d. values within k standard errors of `expected`."""
    values = np.asarray(values, dtype=np.float64).ravel()
    mean, se = values.mean(), values.std(ddof=1) / np.sqrt(values.size)
    assert abs(mean - expected) < k * se + 1e-15, f"MC mean {mean:.5g} ± {se:.2g} vs {expected:.5g}"


def _assert_frequency(hits, p: float, k: float = K) -> None:
    """Frequency of a Bernoulli(p) event within k binomial standard errors of p."""
    hits = np.asarray(hits, dtype=np.float64).ravel()
    se = np.sqrt(p * (1 - p) / hits.size)
    assert abs(hits.mean() - p) < k * se, f"frequency {hits.mean():.4f} vs {p:.4f} (se {se:.2g})"


def _flat_params(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, P] float64: every parameter of each prompt in one row (keys sorted)."""
    return torch.cat([params[k].double().reshape(len(params[k]), -1) for k in sorted(params)], dim=1)


# --- linear: Gaussian moments, ill-conditioned inputs, sign and low-rank priors -----------------------------------
def test_gaussian_linear_second_moments_and_noise():
    a, tau, sigma2, d = 0.8, 1.3, 0.3, 4
    config = task_config("linear", d=d, n_points=10, x_dist="gaussian", x_scale=a, w_scale=tau, noise_var=sigma2)
    p = _sample(config, 20_000)
    x, w, noise = p.x.reshape(-1, d).numpy(), p.w.numpy(), (p.y - p.f).numpy()
    for i, j in itertools.product(range(d), repeat=2):  # E[x xᵀ] = a²I, E[w wᵀ] = τ²I
        _assert_mean(x[:, i] * x[:, j], a**2 * (i == j))
        _assert_mean(w[:, i] * w[:, j], tau**2 * (i == j))
    _assert_mean(noise, 0.0)
    _assert_mean(noise**2, sigma2)
    _assert_mean(noise.reshape(-1) * p.x[..., 0].numpy().reshape(-1), 0.0)  # independent of the inputs
    task = make_task(config)
    np.testing.assert_allclose(task.x_second_moment().numpy(), [a**2] * d, rtol=1e-15)
    np.testing.assert_allclose(task.w_second_moment().numpy(), [tau**2] * d, rtol=1e-15)


@pytest.mark.parametrize("kappa", [10.0, 100.0])
def test_ill_conditioned_covariance_eigenvalues(kappa):
    a, d = 0.7, 5
    config = task_config("linear", d=d, n_points=99, x_dist="gaussian", x_scale=a, x_condition=kappa)
    x = _sample(config, 2000).x.reshape(-1, d)  # [N, d], N = 200 000 i.i.d. inputs
    n = x.shape[0]
    cov = (x.T @ x / n).numpy()  # the mean is known to be 0
    lam = a**2 * np.logspace(0, -np.log10(kappa), d) / np.logspace(0, -np.log10(kappa), d).mean()
    np.testing.assert_allclose(make_task(config).x_second_moment().numpy(), lam, rtol=1e-12)
    assert np.isclose(lam.mean(), a**2) and np.isclose(lam.max() / lam.min(), kappa)
    # eigenvalue i of the sample covariance ≈ λ_i + O(λ_i √(2/N)) (the diagonal entry; off-diagonal terms O(1/N))
    eig = np.sort(np.linalg.eigvalsh(cov))[::-1]
    se = lam * np.sqrt(2 / n)
    assert np.all(np.abs(eig - lam) < K * se), (eig, lam)
    cond = eig[0] / eig[-1]  # relative s.e. √(2/N) from each end
    assert abs(cond - kappa) < K * kappa * np.sqrt(4 / n), (cond, kappa)
    # eigenvectors are the axes: off-diagonal entries within K s.e. √(λ_i λ_j / N) of 0
    off = ~np.eye(d, dtype=bool)
    assert np.all(np.abs(cov[off]) < K * np.sqrt(np.outer(lam, lam) / n)[off])


def test_sign_prior_is_exactly_plus_minus_tau_and_balanced():
    tau, d, batch = 0.7, 6, 20_000
    w = _sample(task_config("linear", d=d, n_points=1, w_prior="sign", w_scale=tau), batch).w
    assert torch.equal(w.abs(), torch.full_like(w, tau))
    w = w.numpy()
    for i in range(d):
        _assert_frequency(w[:, i] > 0, 0.5)
        for j in range(i + 1, d):  # independent coordinates
            _assert_mean(w[:, i] * w[:, j], 0.0)
    w32 = _sample(task_config("linear", d=d, n_points=1, w_prior="sign", w_scale=tau), 64, dtype=torch.float32).w
    assert set(w32.unique().tolist()) == {-np.float32(tau), np.float32(tau)}


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_low_rank_prior_rank_and_norm(rank):
    tau, d, batch = 1.5, 16, 5000
    config = task_config("linear", d=d, n_points=1, w_prior="low_rank", w_rank=rank, w_scale=tau)
    w = _sample(config, batch).w
    ranks = torch.linalg.matrix_rank(w.reshape(batch, 4, 4))  # w = vec(W), W 4×4
    assert torch.equal(ranks, torch.full_like(ranks, rank))
    _assert_mean((w**2).sum(-1).numpy(), tau**2 * d)  # E‖w‖² = τ²d, as for the Gaussian prior
    np.testing.assert_allclose(make_task(config).w_second_moment().numpy(), [tau**2] * d, rtol=1e-15)


# --- sparse linear -----------------------------------------------------------------------------------------------
def test_sparse_support_size_uniformity_and_moments():
    d, k, tau, batch = 5, 2, 1.3, 20_000
    config = task_config(name="sparse_linear", d=d, n_points=3, sparsity=k, w_scale=tau)
    p = _sample(config, batch)
    w = p.w.numpy()
    support = w != 0
    assert np.all(support.sum(-1) == k)  # exactly k non-zeros per prompt
    # the support is uniform over the C(d, k) subsets, hence each coordinate in it with probability k/d
    codes = support @ (1 << np.arange(d))
    subsets = [sum(1 << i for i in s) for s in itertools.combinations(range(d), k)]
    for code in subsets:
        _assert_frequency(codes == code, 1 / len(subsets))
    for i in range(d):
        _assert_frequency(support[:, i], k / d)
        _assert_mean(w[support[:, i], i], 0.0)
        _assert_mean(w[support[:, i], i] ** 2, tau**2)  # non-zeros are N(0, τ²)
        _assert_mean(w[:, i] ** 2, tau**2 * k / d)
    task = make_task(config)
    np.testing.assert_allclose(task.w_second_moment().numpy(), [tau**2 * k / d] * d, rtol=1e-15)
    linear = LinearRegressionTask(change_family(config, "linear"))
    assert torch.equal(task.x_second_moment(), linear.x_second_moment())
    torch.testing.assert_close(p.f, torch.einsum("btd,bd->bt", p.x, p.w), rtol=0, atol=0)


@pytest.mark.parametrize("k", [1, 6])
def test_sparse_extreme_sparsities(k):
    w = _sample(task_config(name="sparse_linear", d=6, n_points=2, sparsity=k), 500).w
    assert torch.equal((w != 0).sum(-1), torch.full((500,), k))


# --- finite pools ------------------------------------------------------------------------------------------------
CONFIGS = {
    "linear": task_config("linear", d=4, n_points=3),
    "sign": task_config("linear", d=10, n_points=3, w_prior="sign"),  # 2¹⁰ vectors: a pool of 7 is distinct
    "low_rank": task_config("linear", d=4, n_points=3, w_prior="low_rank"),
    "sparse": task_config(name="sparse_linear", d=4, n_points=3, sparsity=2),
    "mixture": task_config("mixture", d=4, n_points=3, components=("linear", "sparse_linear:sparsity=1")),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_finite_pool(name):
    m, seed, batch = 7, 3, 7000
    config = dataclasses.replace(CONFIGS[name], pool_size=m, pool_seed=seed)
    task = make_task(config)
    pool = _flat_params(task.pool_params("cpu", torch.float64))  # [M, P]
    assert torch.unique(pool, dim=0).shape[0] == m  # M distinct functions
    # drawn once from pool_seed: a fresh task draws the same pool, and it is sample_params on the CPU in float64
    fresh = make_task(config).sample_params(m, generator=_gen(seed), device=torch.device("cpu"), dtype=torch.float64)
    assert torch.equal(_flat_params(fresh), pool)
    other = make_task(dataclasses.replace(config, pool_seed=seed + 1)).pool_params("cpu", torch.float64)
    assert not torch.equal(_flat_params(other), pool)
    # the same pool in every call and in float32 (rounded from the float64 draw)
    counts = torch.zeros(m)
    for s in (0, 1):
        rows = _flat_params(task.sample(batch, generator=_gen(s), dtype=torch.float64).params)  # [B, P]
        match = (rows[:, None, :] == pool[None]).all(-1)  # [B, M]
        assert torch.all(match.any(-1)), "a prompt's function is not in the pool"
        counts += torch.bincount(match.float().argmax(-1), minlength=m)
    assert torch.equal(_flat_params(task.pool_params("cpu", torch.float32)), pool.float().double())
    rows32 = _flat_params(task.sample(500, generator=_gen(2), dtype=torch.float32).params)
    assert torch.all((rows32[:, None, :] == pool.float().double()[None]).all(-1).any(-1))
    n = counts.sum().item()  # uniform usage of the M entries
    assert torch.all((counts / n - 1 / m).abs() < K * np.sqrt((1 / m) * (1 - 1 / m) / n)), counts


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(CONFIGS))
def test_finite_pool_is_the_same_on_cuda(name):
    task = make_task(dataclasses.replace(CONFIGS[name], pool_size=5, pool_seed=1))
    cpu = _flat_params(task.pool_params("cpu", torch.float64))
    assert torch.equal(_flat_params(task.pool_params("cuda", torch.float64)).cpu(), cpu)
    p = task.sample(200, generator=torch.Generator("cuda").manual_seed(0), dtype=torch.float64)
    rows = _flat_params(p.params).cpu()
    assert p.x.is_cuda and torch.all((rows[:, None, :] == cpu[None]).all(-1).any(-1))


# --- mixtures ----------------------------------------------------------------------------------------------------
def _selected_w(params: dict[str, torch.Tensor], c: int) -> torch.Tensor:
    """[B, d]: each prompt's w from its chosen component."""
    stacked = torch.stack([params[f"c{i}.w"] for i in range(c)], dim=1)  # [B, C, d]
    return stacked[torch.arange(len(stacked)), params["component"]]


def test_mixture_per_prompt_proportions_and_targets():
    comps, batch = ("linear", "sparse_linear:sparsity=1", "linear"), 6000
    config = task_config("mixture", d=4, n_points=5, components=comps)
    p = _sample(config, batch)
    comp = p.params["component"]
    assert comp.dtype == torch.long and p.w is None
    for i in range(len(comps)):
        _assert_frequency((comp == i).numpy(), 1 / len(comps))
    assert torch.equal((p.params["c1.w"] != 0).sum(-1), torch.ones(batch, dtype=torch.long))  # the sparse one
    torch.testing.assert_close(p.f, torch.einsum("btd,bd->bt", p.x, _selected_w(p.params, 3)), rtol=0, atol=0)
    assert torch.equal(p.y, p.f)  # noiseless


def test_mixture_per_batch_draws_one_family_per_call():
    config = task_config("mixture", d=3, n_points=2, components=("linear", "sparse_linear:sparsity=1"))
    task, gen = make_task(dataclasses.replace(config, mix_by="batch")), _gen(0)
    firsts = []
    for _ in range(600):
        p = task.sample(3, generator=gen)
        comp = p.params["component"]
        assert torch.all(comp == comp[0])
        torch.testing.assert_close(p.f, torch.einsum("btd,bd->bt", p.x, _selected_w(p.params, 2)))
        firsts.append(comp[0].item())
    _assert_frequency(np.array(firsts) == 0, 0.5)
    # with a pool: one family per call, its parameters from the pool's entries
    pooled = make_task(dataclasses.replace(config, mix_by="batch", pool_size=4))
    pool = pooled.pool_params("cpu", torch.float32)
    for s in range(5):
        p = pooled.sample(16, generator=_gen(s))
        assert torch.all(p.params["component"] == p.params["component"][0])
        match = (p.params["c0.w"][:, None] == pool["c0.w"][None]).all(-1)  # [B, M]
        assert torch.all(match.any(-1))


@dataclass(frozen=True)
class _ShiftedConfig(LinearConfig):
    name: ClassVar[str] = "shifted"


class _ShiftedLinear(LinearRegressionTask):
    """A linear family with a recognisable label noise: y = f + 100."""

    def add_noise(self, f, *, generator):
        return f + 100.0


class _ShiftedInputs(LinearRegressionTask):
    """A linear family whose inputs are U(9.5, 10.5)^d."""

    def sample_x(self, batch, n_total, *, generator, device, dtype):
        return super().sample_x(batch, n_total, generator=generator, device=device, dtype=dtype) + 10.0


@pytest.fixture
def shifted_family():
    """Registers the family "shifted" (a config class and a Task: one registration line) for one test."""
    registered = []

    def register(task_cls):
        TASKS.register(_ShiftedConfig, task_cls)
        registered.append(_ShiftedConfig.name)

    yield register
    for name in registered:
        TASKS.unregister(name)


def test_mixture_noise_is_each_components_own(shifted_family):
    shifted_family(_ShiftedLinear)
    sigma2 = 0.2
    config = task_config("mixture", d=3, n_points=20, noise_var=sigma2, components=("linear", "shifted"))
    p = _sample(config, 4000)
    noise, comp = (p.y - p.f).numpy(), p.params["component"].numpy()
    np.testing.assert_allclose(noise[comp == 1], 100.0, rtol=1e-12)
    _assert_mean(noise[comp == 0], 0.0)
    _assert_mean(noise[comp == 0] ** 2, sigma2)


def test_mixture_draws_each_components_own_inputs(shifted_family):
    shifted_family(_ShiftedInputs)
    config = task_config("mixture", d=3, n_points=4, components=("linear", "shifted"))
    p = _sample(config, 200, d_active=2)
    shifted = p.params["component"] == 1
    assert 0 < shifted.sum() < 200
    assert torch.all(p.x[shifted][..., :2] > 9) and torch.all(p.x[~shifted].abs() <= 0.5)
    assert torch.all(p.x[..., 2:] == 0)
    torch.testing.assert_close(p.f, torch.einsum("btd,bd->bt", p.x, _selected_w(p.params, 2)), rtol=0, atol=0)


def test_mixture_rejects_families_without_iid_inputs():
    with pytest.raises(ValueError, match=r"^task\.components: ar draw their own prompts"):
        task_config("mixture", d=3, components=("linear", "ar"))


def test_mixture_rejects_vector_with_scalar_targets():
    with pytest.raises(ValueError, match=r"task\.components.*softmax_regression") as err:
        task_config("mixture", d=3, components=("linear", "softmax_regression"))
    assert "\n" not in str(err.value)


def test_mixture_component_settings_are_checked():
    with pytest.raises(ValueError, match=r"^task\.sparsity: not a field of task 'linear'"):
        task_config("mixture", d=3, components=("linear:sparsity=2", "quadratic"))
    with pytest.raises(ValueError, match=r"^task\.components: must be NAME or NAME:FIELD=VALUE"):
        task_config("mixture", d=3, components=("linear:sparsity", "quadratic"))
    (_, sparse) = task_config("mixture", d=3, components=("linear", "sparse_linear:sparsity=2")).component_configs()
    assert sparse.sparsity == 2 and sparse.d == 3


# --- curriculum and d_active -------------------------------------------------------------------------------------
def test_garg_curriculum_schedule():
    c = Curriculum.garg()
    table = {0: (5, 11), 1999: (5, 11), 2000: (6, 13), 4000: (7, 15), 29_999: (19, 39), 30_000: (20, 41)}
    for step, expected in {**table, 10**6: (20, 41)}.items():
        assert c.at(step) == expected, step
    assert c.end_step == 30_000
    small = Curriculum.garg(d=10, n_points=11)
    assert (small.at(0), small.at(9_999), small.at(10_000), small.end_step) == ((5, 11), (9, 11), (10, 11), 10_000)
    assert Curriculum.garg(d=3, n_points=5).at(0) == (3, 5) and Curriculum.garg(d=3, n_points=5).end_step == 0
    custom = Curriculum(2, 9, 3, 4, 10, 4, every=10)
    assert [custom.at(s) for s in (9, 10, 20, 30)] == [(2, 4), (5, 8), (8, 10), (9, 10)]
    values = [c.at(s) for s in range(0, 40_000, 500)]
    assert values == sorted(values) and all(5 <= d <= 20 and 11 <= n <= 41 for d, n in values)


@pytest.mark.parametrize(
    ("field", "value"),
    [("dims_start", 0), ("dims_end", 4), ("dims_step", 0), ("points_start", 0), ("points_end", 10),
     ("points_step", 0), ("every", 0), ("dims_step", 1.5), ("every", True)],
)  # fmt: skip
def test_curriculum_validation(field, value):
    good = {f.name: getattr(Curriculum.garg(), f.name) for f in dataclasses.fields(Curriculum)}
    with pytest.raises(ValueError, match=rf"^curriculum\.{field}: ") as err:
        Curriculum(**{**good, field: value})
    assert "\n" not in str(err.value)
    Curriculum(**{**good, "dims_end": 5, "dims_step": 0})  # a fixed value needs no step
    with pytest.raises(ValueError, match="step"):
        Curriculum.garg().at(-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Curriculum.garg().every = 1


@pytest.mark.parametrize("name", ["linear", "sparse", "mixture"])
def test_d_active_zeroes_inactive_coordinates_before_evaluation(name):
    config = dataclasses.replace(CONFIGS[name], d=6, n_points=8, noise_var=0.1)
    full = _sample(config, 50, seed=4)
    p = _sample(config, 50, seed=4, d_active=2)
    assert torch.all(p.x[..., 2:] == 0) and torch.equal(p.x[..., :2], full.x[..., :2])  # same draws, masked
    for k in p.params:
        assert torch.equal(p.params[k], full.params[k])
    torch.testing.assert_close(p.f, make_task(config).evaluate(p.x, p.params), rtol=0, atol=0)
    if name != "mixture":  # only the active coordinates matter
        torch.testing.assert_close(p.f, torch.einsum("btd,bd->bt", p.x[..., :2], p.w[:, :2]))
    torch.testing.assert_close(p.y - p.f, full.y - full.f)  # noise unchanged
    same = _sample(config, 50, seed=4, d_active=6)
    assert torch.equal(same.x, full.x) and torch.equal(same.y, full.y)
    for bad in (0, 7, 2.5, True):
        with pytest.raises(ValueError, match=r"^d_active: "):
            _sample(config, 2, d_active=bad)


def test_curriculum_drives_sampling():
    c, task, gen = Curriculum.garg(d=8, n_points=15), make_task(task_config("linear", d=8, n_points=15)), _gen(0)
    for step in (0, 2000, 6000, 100_000):
        d_active, n = c.at(step)
        p = task.sample(4, generator=gen, n_points=n, d_active=d_active)
        assert p.x.shape == (4, n + 1, 8) and p.n_ctx == n
        assert torch.all(p.x[..., d_active:] == 0) and torch.all(p.x[..., :d_active] != 0)


# --- reproducibility and Task.targets, for every family above -----------------------------------------------------
FAMILIES = {
    **CONFIGS,
    "ill_conditioned": task_config("linear", d=4, n_points=3, x_dist="gaussian", x_condition=10.0, noise_var=0.1),
    "mixture_batch": dataclasses.replace(CONFIGS["mixture"], mix_by="batch", noise_var=0.1),
    "pooled_linear": dataclasses.replace(CONFIGS["linear"], pool_size=5),
    "pooled_mixture": dataclasses.replace(CONFIGS["mixture"], pool_size=5),
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_same_seed_same_prompts_other_seed_other_prompts(name):
    config = FAMILIES[name]
    a, b, c = (_sample(config, 16, seed=s, dtype=torch.float32) for s in (5, 5, 6))
    for key in ("x", "y", "f"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
        assert not torch.equal(getattr(a, key), getattr(c, key)), key
    assert a.params.keys() == b.params.keys()
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k]), k
        if a.params[k].is_floating_point():
            assert not torch.equal(a.params[k], c.params[k]), k


@pytest.mark.parametrize("name", list(FAMILIES))
def test_targets_reproduce_f_at_the_prompts_own_inputs(name):
    task = make_task(FAMILIES[name])
    p = task.sample(32, generator=_gen(0), dtype=torch.float64)
    assert torch.equal(task.targets(p.x, p), p.f)
    part = p[3:9]
    assert torch.equal(task.targets(part.x, part), p.f[3:9])
    x_new = 2.0 * p.x.flip(1)  # new inputs: the same functions
    w = p.w if p.w is not None else _selected_w(p.params, len(FAMILIES[name].components))
    torch.testing.assert_close(task.targets(x_new, p), torch.einsum("btd,bd->bt", x_new, w))
