"""The evaluation protocol: prefix predictions against per-prompt numpy loops, metric conventions, bootstrap bands,
and Garg's least-squares curve against its closed form."""

import dataclasses

import numpy as np
import pytest
import torch

from iclab.algorithms.least_squares import OLS
from iclab.config import model_config, task_config
from iclab.evaluation import bootstrap_band, curves_table, error_curves, pointwise_errors, prefix_predictions
from iclab.models import LSA
from iclab.tasks import make_task


def _prompts(d=4, T=9, B=16, seed=0, noise=0.0):
    task = make_task(task_config("linear", d=d, n_points=T - 1, x_dist="gaussian", x_scale=1.0, noise_var=noise))
    return task, task.sample(B, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class _NoMaskOLS:
    """OLS through a predict() without a mask argument: the evaluation must zero absent points itself."""

    name = "ols-nomask"

    def predict(self, x_ctx, y_ctx, x_q):
        w = torch.einsum("bdn,bn->bd", torch.linalg.pinv(x_ctx), y_ctx)
        return torch.einsum("bmd,bd->bm", x_q, w)


@pytest.mark.parametrize("d,T", [(3, 8), (6, 5), (5, 6)])
def test_prefix_predictions_match_a_per_prompt_per_prefix_loop(d, T):
    _, p = _prompts(d=d, T=T)
    pred = prefix_predictions(_NoMaskOLS(), p.x, p.y)
    X, Y = p.x.numpy(), p.y.numpy()
    expected = np.zeros_like(Y)
    for b in range(X.shape[0]):
        for t in range(1, T):
            w = np.linalg.lstsq(X[b, :t], Y[b, :t], rcond=None)[0]
            expected[b, t] = X[b, t] @ w
    np.testing.assert_allclose(pred.numpy(), expected, rtol=1e-7, atol=1e-9)


def test_separate_queries_are_answered_from_the_prefix():
    _, p = _prompts(d=3, T=6)
    x_query = torch.randn(p.x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    pred = prefix_predictions(_NoMaskOLS(), p.x, p.y, x_query)
    X, Y, Q = p.x.numpy(), p.y.numpy(), x_query.numpy()
    for b in range(3):
        for t in range(1, 6):
            w = np.linalg.lstsq(X[b, :t], Y[b, :t], rcond=None)[0]
            assert pred[b, t].item() == pytest.approx(Q[b, t] @ w, rel=1e-7, abs=1e-9)


def test_vector_targets_are_one_problem_per_output():
    _, p = _prompts(d=3, T=5)
    y2 = torch.stack([p.y, 2 * p.y + 1], -1)  # [B, T, 2]
    pred = prefix_predictions(_NoMaskOLS(), p.x, y2)
    assert pred.shape == y2.shape
    torch.testing.assert_close(pred[..., 0], prefix_predictions(_NoMaskOLS(), p.x, p.y))
    torch.testing.assert_close(pred[..., 1], prefix_predictions(_NoMaskOLS(), p.x, 2 * p.y + 1))


def test_lsa_prefixes_see_absent_points_as_zero_tokens():
    # A trained-model learner without a mask: the generic path must equal running it on the true prefix.
    model = LSA(model_config("lsa", layers=2), 3, generator=torch.Generator().manual_seed(0)).double()
    _, p = _prompts(d=3, T=6)
    pred = prefix_predictions(model, p.x, p.y)
    for t in range(1, 6):
        direct = model.predict(p.x[:, :t], p.y[:, :t], p.x[:, t : t + 1])[:, 0]
        torch.testing.assert_close(pred[:, t], direct)


def test_metric_conventions():
    _, p = _prompts(d=4, T=5, noise=0.5)
    pred = torch.zeros_like(p.y)
    sq = p.y**2
    torch.testing.assert_close(pointwise_errors(pred, p, "mse"), sq)
    torch.testing.assert_close(pointwise_errors(pred, p, "half_mse"), sq / 2)
    torch.testing.assert_close(pointwise_errors(pred, p, "nmse"), sq / 4)
    torch.testing.assert_close(pointwise_errors(pred, p, "mse_noiseless"), p.f**2)
    with pytest.raises(ValueError, match="metric: unknown value 'rmse'; choose one of"):
        pointwise_errors(pred, p, "rmse")


def test_error_rate_of_averaging_is_the_angle_over_pi():
    """Linear classification, x ~ N(0, I): sign(ŵᵀx_q) disagrees with sign(wᵀx_q) with probability ∠(ŵ, w)/π. So
    averaging's (ŵ = (1/k) Σ y_i x_i) error rate against the noiseless labels must equal the mean of that angle
    over prompts, within 4 standard errors; against labels flipped with probability q it is q + (1 − 2q)·that."""
    from iclab.algorithms.local import Averaging

    q, k = 0.2, 6
    task = make_task(task_config(name="classification", d=3, n_points=k, x_dist="gaussian", x_scale=1.0, flip_prob=q))
    p = task.sample(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pred = prefix_predictions(Averaging(), p.x, p.y)[:, k]  # [B]: k context points, query x_k
    w_hat = (p.y[:, :k, None] * p.x[:, :k]).mean(1)
    angle = torch.arccos(torch.nn.functional.cosine_similarity(w_hat, p.w, dim=-1).clamp(-1, 1)) / torch.pi
    noiseless = pointwise_errors(pred[:, None], _at(p, k), "error_rate_noiseless")[:, 0]
    noisy = pointwise_errors(pred[:, None], _at(p, k), "error_rate")[:, 0]
    se = lambda e: (e.std() / len(e) ** 0.5).item()  # noqa: E731
    assert abs(noiseless.mean() - angle.mean()).item() < 4 * se(noiseless)
    assert abs(noisy.mean() - (q + (1 - 2 * q) * angle.mean())).item() < 4 * se(noisy)
    assert set(noisy.unique().tolist()) <= {0.0, 1.0}


def _at(p, t: int):
    """The prompts with only point t left (as pointwise_errors sees one column of predictions)."""
    return dataclasses.replace(p, x=p.x[:, t : t + 1], y=p.y[:, t : t + 1], f=p.f[:, t : t + 1], n_ctx=0)


def test_error_rate_conventions():
    _, p = _prompts(d=2, T=4)
    target = torch.tensor([[1.0, -1.0, 1.0, -1.0]]).expand(len(p), -1)
    pred = torch.tensor([[0.0, 0.0, -0.5, -2.0]]).expand(len(p), -1)  # sign 0 := +1
    errors = pointwise_errors(pred, p, "error_rate", target=target)
    torch.testing.assert_close(errors, torch.tensor([[0.0, 1.0, 1.0, 0.0]], dtype=torch.float64).expand(len(p), -1))
    probs = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]]], dtype=torch.float64)  # vector targets: argmax
    guess = torch.tensor([[[0.2, 0.7, 0.1], [0.0, 0.1, 0.9]]], dtype=torch.float64)
    assert pointwise_errors(guess, p, "error_rate", target=probs).tolist() == [[1.0, 0.0]]
    nan = torch.full((len(p), 4), float("nan"))
    assert pointwise_errors(nan, p, "error_rate", target=target).eq(1).all()


def test_bootstrap_band_covers_the_mean_with_the_normal_width():
    # Errors with known spread: the 95 % band of the mean should be ≈ ±1.96 σ/√B (within 10 %).
    gen = torch.Generator().manual_seed(0)
    errors = torch.randn(4000, 3, generator=gen, dtype=torch.float64) * torch.tensor(
        [1.0, 2.0, 0.5], dtype=torch.float64
    )
    lo, hi = bootstrap_band(errors, n_boot=2000, seed=1)
    mean = errors.mean(0)
    assert torch.all(lo < mean) and torch.all(mean < hi)
    half_width = (hi - lo) / 2
    expected = 1.96 * errors.std(0) / errors.shape[0] ** 0.5
    torch.testing.assert_close(half_width, expected, rtol=0.1, atol=0)


def test_least_squares_curve_is_garg_closed_form():
    # Noiseless x, w ~ N(0, I_d): min-norm least squares with k < d points leaves the component of w outside the
    # span of k points, E[(x_qᵀ(ŵ − w))²]/d = (d − k)/d; from k = d on it is exact (error 0).
    d, T, B = 8, 12, 3000
    _, p = _prompts(d=d, T=T, B=B, seed=3)
    curve = error_curves({"ols": OLS()}, p, metric="nmse", n_boot=200)["ols"]
    k = np.arange(T)
    expected = np.where(k < d, (d - k) / d, 0.0)
    errors = pointwise_errors(prefix_predictions(OLS(), p.x, p.y), p, "nmse")
    se = errors.std(0).numpy() / B**0.5
    assert np.all(np.abs(curve.mean - expected) <= 4 * se + 1e-9)
    assert np.all(curve.mean[d:] < 1e-8)
    rows = curves_table({"ols": curve})
    assert rows[0]["learner"] == "ols" and "k=0" in rows[0]


def test_shifted_queries_need_their_targets():
    _, p = _prompts()
    with pytest.raises(ValueError, match="x_query and target"):
        error_curves({"ols": OLS()}, p, x_query=p.x)
