"""iclab.metrics against independent numpy computations: scalar and vector targets, the one reduction rule (sum
over outputs, mean over prompts and queries), dims, dtypes, NaN handling; and the call sites that use it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iclab import metrics
from iclab.config import model_config, task_config
from iclab.evaluation import pointwise_errors
from iclab.models import make_model
from iclab.tasks import make_task


def _data(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape), rng.normal(size=shape)


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3)], ids=["scalar", "vector"])
def test_squared_error_metrics_match_numpy(shape):
    pred, target = _data(shape)
    sq = (pred - target) ** 2
    per_query = sq.sum(axis=-1) if len(shape) == 3 else sq  # the rule: sum over the k outputs …
    p, t = torch.from_numpy(pred), torch.from_numpy(target)
    np.testing.assert_allclose(metrics.squared_error(p, t).numpy(), per_query, rtol=1e-12)
    np.testing.assert_allclose(
        metrics.half_mse(p, t).item(), 0.5 * per_query.mean(), rtol=1e-12
    )  # … mean over the rest
    np.testing.assert_allclose(metrics.mse(p, t).item(), per_query.mean(), rtol=1e-12)
    np.testing.assert_allclose(metrics.nmse(p, t, 4).item(), per_query.mean() / 4, rtol=1e-12)
    np.testing.assert_allclose(metrics.half_mse(p, t, reduction="sum").item(), 0.5 * per_query.sum(), rtol=1e-12)
    np.testing.assert_allclose(metrics.mse(p, t, reduction="none").numpy(), per_query, rtol=1e-12)
    np.testing.assert_allclose(metrics.nmse(p, t, 4, reduction="none").numpy(), per_query / 4, rtol=1e-12)
    np.testing.assert_allclose(metrics.half_mse(p, t, dim=1).numpy(), 0.5 * per_query.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(metrics.mse(p, t, dim=0).numpy(), per_query.mean(axis=0), rtol=1e-12)


def test_scalar_half_mse_is_bitwise_the_inline_formula_it_replaced():
    pred, target = (torch.from_numpy(a).float() for a in _data((64, 11)))
    assert torch.equal(metrics.half_mse(pred, target), 0.5 * ((pred - target) ** 2).mean())
    assert metrics.half_mse(pred, target).dtype == torch.float32
    wide = metrics.half_mse(pred, target, reduction="sum", dtype=torch.float64)
    assert wide.dtype == torch.float64 and torch.equal(wide, 0.5 * ((pred - target) ** 2).double().sum())


def test_vector_targets_cast_before_summing_outputs():
    pred, target = (torch.from_numpy(a).float() for a in _data((4, 6, 3)))
    expected = 0.5 * ((pred - target) ** 2).double().sum()
    assert torch.equal(metrics.half_mse(pred, target, reduction="sum", dtype=torch.float64), expected)


def test_vector_flag_overrides_the_shape():
    pred, target = _data((2, 3, 4))
    p, t = torch.from_numpy(pred), torch.from_numpy(target)
    np.testing.assert_allclose(metrics.mse(p, t, vector=False).item(), ((pred - target) ** 2).mean(), rtol=1e-12)
    np.testing.assert_allclose(metrics.mse(p, t).item(), ((pred - target) ** 2).sum(-1).mean(), rtol=1e-12)
    # broadcasting: K readouts [K, N] against one target [N]
    many = torch.from_numpy(pred.reshape(2, 12))
    np.testing.assert_allclose(
        metrics.nmse(many, torch.from_numpy(target.reshape(-1)[:12]), 3, dim=-1, vector=False).numpy(),
        ((pred.reshape(2, 12) - target.reshape(-1)[:12]) ** 2).mean(-1) / 3,
        rtol=1e-12,
    )


def test_nan_predictions_propagate_into_squared_errors():
    pred, target = _data((3, 4))
    pred[1, 2] = np.nan
    p, t = torch.from_numpy(pred), torch.from_numpy(target)
    assert np.isnan(metrics.mse(p, t).item())
    per = metrics.half_mse(p, t, reduction="none").numpy()
    assert np.isnan(per[1, 2]) and np.isfinite(np.delete(per.ravel(), 1 * 4 + 2)).all()


def test_error_rate_and_accuracy_scalar_labels_match_numpy():
    rng = np.random.default_rng(1)
    target = np.where(rng.random((6, 9)) < 0.5, -1.0, 1.0)
    pred = rng.normal(size=(6, 9))
    pred[0, :3] = 0.0  # sign 0 := +1
    pred[2, 4] = np.nan  # a NaN prediction is an error
    wrong = (np.where(pred >= 0, 1.0, -1.0) != target) | np.isnan(pred)
    p, t = torch.from_numpy(pred), torch.from_numpy(target)
    np.testing.assert_array_equal(metrics.misclassified(p, t).numpy(), wrong.astype(float))
    np.testing.assert_allclose(metrics.error_rate(p, t).item(), wrong.mean(), rtol=1e-12)
    np.testing.assert_allclose(metrics.accuracy(p, t).item(), 1 - wrong.mean(), rtol=1e-12)
    np.testing.assert_allclose(metrics.error_rate(p, t, dim=0).numpy(), wrong.mean(axis=0), rtol=1e-12)
    assert metrics.misclassified(p, t)[2, 4] == 1.0


def test_error_rate_and_accuracy_vector_targets_match_numpy():
    rng = np.random.default_rng(2)
    target = rng.dirichlet(np.ones(4), size=(5, 7))  # [B, T, k] class probabilities
    pred = rng.normal(size=(5, 7, 4))
    pred[3, 1, 2] = np.nan  # any NaN output makes the prediction an error
    wrong = (np.nanargmax(np.nan_to_num(pred, nan=-np.inf), -1) != target.argmax(-1)) | np.isnan(pred).any(-1)
    p, t = torch.from_numpy(pred), torch.from_numpy(target)
    np.testing.assert_array_equal(metrics.misclassified(p, t).numpy(), wrong.astype(float))
    np.testing.assert_allclose(metrics.error_rate(p, t).item(), wrong.mean(), rtol=1e-12)
    np.testing.assert_allclose(metrics.accuracy(p, t).item(), 1 - wrong.mean(), rtol=1e-12)


def test_unknown_reduction_is_an_error():
    with pytest.raises(ValueError, match="reduction"):
        metrics.mse(torch.zeros(2), torch.zeros(2), reduction="median")


@pytest.mark.parametrize("name", ["linear", "softmax_regression"])
def test_evaluation_and_training_loss_follow_the_rule(name):
    """The evaluation protocol's pointwise errors and a model's training loss are the metrics module's numbers,
    summed over the outputs for vector targets (the training loss used to average over them)."""
    task = make_task(task_config(name=name, d=3, n_points=6))
    prompts = task.sample(8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pred = torch.randn(prompts.y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = prompts.y.numpy()
    per_point = ((pred.numpy() - y) ** 2).sum(-1) if y.ndim == 3 else (pred.numpy() - y) ** 2
    np.testing.assert_allclose(pointwise_errors(pred, prompts, "half_mse").numpy(), 0.5 * per_point, rtol=1e-12)
    np.testing.assert_allclose(pointwise_errors(pred, prompts, "nmse").numpy(), per_point / 3, rtol=1e-12)
    k = None if y.ndim == 2 else y.shape[-1]
    model = make_model(
        model_config(name="gpt", width=8, max_points=8), 3, k=k, generator=torch.Generator().manual_seed(0)
    )
    model = model.double()
    with torch.no_grad():
        out = model.predict_prefixes(prompts.x, prompts.y).numpy()
        loss = model.training_loss(prompts).item()
    expected = ((out - y) ** 2).sum(-1).mean() if k else ((out - y) ** 2).mean()
    np.testing.assert_allclose(loss, 0.5 * expected, rtol=1e-12)
