"""Layer ↔ iteration alignment (Fu et al.): references against iclab's learners, readouts against lstsq, controls
whose layers ARE algorithm iterations by construction, and a small trained LSA."""

import json

import numpy as np
import pytest
import torch

from iclab.algorithms.construct import construct_gd
from iclab.algorithms.gd import GD
from iclab.algorithms.newton import Newton
from iclab.analysis.alignment import (
    align,
    align_activations,
    fit_readouts,
    gd_predictions,
    layer_activations,
    newton_predictions,
    peaks_text,
    plot_alignment,
    refined_peak,
    similarity_matrix,
)
from iclab.config import EvalConfig, ExperimentConfig, TrainConfig, model_config, task_config
from iclab.evaluation import prefix_predictions
from iclab.models.gpt import GPT
from iclab.training import train


def _regression(batch: int, points: int = 11, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noiseless linear regression prompts, x, w ~ N(0, I): x [B, T, d], y [B, T] (float64)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, points, d, generator=g, dtype=torch.float64)
    w = torch.randn(batch, d, generator=g, dtype=torch.float64)
    return x, torch.einsum("btd,bd->bt", x, w)


NEWTON_GRID = list(range(13))
GD_GRID = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256]


def test_refined_peak_is_the_vertex_of_a_sampled_parabola():
    """Rows sampled from parabolas (in the iteration count for Newton, in log₂ steps for GD) give their vertices
    exactly; one row per case, all in one call ([K, I] → [K])."""
    u = np.array(NEWTON_GRID, dtype=float)
    vertices = np.array([4.3, 7.0, 0.6, 11.45, 5.5])
    rows = 1 - 0.01 * (u[None] - vertices[:, None]) ** 2  # [5, 13]
    got = refined_peak(rows, NEWTON_GRID)
    assert got.shape == (5,)
    np.testing.assert_allclose(got, vertices, rtol=0, atol=1e-9)
    g = np.array(GD_GRID[1:], dtype=float)
    steps = np.array([11.7, 3.0, 100.0, 42.0])
    rows = np.c_[np.zeros(4), 0.9 - 0.03 * (np.log2(g)[None] - np.log2(steps)[:, None]) ** 2]  # GD 0 steps: 0
    np.testing.assert_allclose(refined_peak(rows, GD_GRID, log=True), steps, rtol=1e-9)
    assert not np.allclose(refined_peak(rows, GD_GRID, log=False), steps, rtol=1e-3)  # the log coordinate matters


def test_refined_peak_falls_back_to_the_argmax_where_no_parabola_applies():
    up = np.linspace(0.1, 0.9, 13)
    assert refined_peak(np.stack([up, up[::-1]]), NEWTON_GRID).tolist() == [12.0, 0.0]  # argmax at either end
    # GD's 1 step next to 0 steps (no log₂ 0): the argmax, 1, though the row would put a parabola's vertex below 1
    row = np.array([[0.0, 0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1]])
    assert refined_peak(row, GD_GRID, log=True).tolist() == [1.0]
    # neighbours not evenly spaced in the fitted coordinate: a linear fit on the doubling grid's 2, 4, 8
    assert refined_peak(np.array([[0.0, 0.1, 0.5, 0.9, 0.6, 0.2, 0.1, 0.1, 0.1, 0.1]]), GD_GRID).tolist() == [4.0]
    # a top flat to rounding (curvature ~1e-16): the argmax, not a vertex from round-off
    assert refined_peak(np.array([[0.1, 0.5, 0.5 + 1e-16, 0.5, 0.1]]), range(5)).tolist() == [2.0]


def test_refined_peak_of_a_two_point_tie_is_the_midpoint_and_stays_within_half_a_step():
    row = np.array([[0.2, 0.6, 0.9, 0.9, 0.6, 0.2] + [0.1] * 7])
    assert refined_peak(row, NEWTON_GRID).tolist() == [2.5]
    gd = np.array([[0.0, 0.8, 0.9, 0.93, 0.95, 0.95, 0.93, 0.9, 0.8, 0.7]])  # tied at 8 and 16 steps
    np.testing.assert_allclose(refined_peak(gd, GD_GRID, log=True), [2**3.5])
    rows = np.random.default_rng(0).random((200, 13))
    shift = refined_peak(rows, NEWTON_GRID) - rows.argmax(1)
    assert np.all(np.abs(shift) <= 0.5) and np.any(np.abs(shift) > 0.25)


def test_gd_closed_form_equals_gd_learner():
    x, y = _regression(32)
    steps = [0, 1, 2, 5, 9]
    got = gd_predictions(x, y, steps, eta=0.15)  # [J, B, T]
    assert got.shape == (5, 32, 11)
    assert torch.all(got[0] == 0)
    for j, k in enumerate(steps[1:], 1):
        torch.testing.assert_close(got[j], GD([0.15] * k).predict_prefixes(x, y), rtol=1e-10, atol=1e-10)


def test_gd_default_step_is_one_over_lambda_max_per_prefix():
    x, y = _regression(16)
    got = gd_predictions(x, y, [3])[0]
    for b in range(2):
        for t in range(1, 11):
            X, Y = x[b, :t], y[b, :t]
            H = X.T @ X / t
            eta = 1 / torch.linalg.eigvalsh(H)[-1]
            w = torch.zeros(5, dtype=torch.float64)
            for _ in range(3):
                w = w - eta * (H @ w - X.T @ Y / t)
            torch.testing.assert_close(got[b, t], x[b, t] @ w, rtol=1e-10, atol=1e-10)


def test_newton_predictions_equal_newton_learner():
    x, y = _regression(16)
    got = newton_predictions(x, y, [0, 2, 5])
    for i, k in enumerate([0, 2, 5]):
        torch.testing.assert_close(got[i], Newton(k).predict_prefixes(x, y), rtol=1e-10, atol=1e-10)


def test_readouts_equal_lstsq_and_similarities_are_defined():
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(3, 200, 4, generator=g, dtype=torch.float64)
    target = torch.randn(200, generator=g, dtype=torch.float64)
    coef, bias = fit_readouts(acts, target, ridge=0.0)
    for k in range(3):
        design = np.c_[acts[k].numpy(), np.ones(200)]
        want = np.linalg.lstsq(design, target.numpy(), rcond=None)[0]
        np.testing.assert_allclose(np.r_[coef[k].numpy(), bias[k].item()], want, rtol=1e-9, atol=1e-12)
    a = torch.randn(2, 50, generator=g, dtype=torch.float64)
    for kind in ("cos", "nsd"):
        sim = similarity_matrix(a, torch.cat([a, 3 * a, torch.zeros(1, 50, dtype=torch.float64)]), kind)
        assert sim.shape == (2, 5)
        torch.testing.assert_close(sim.diagonal(), torch.ones(2, dtype=torch.float64))
        assert torch.all(sim[:, 4] == 0)  # against an all-zero prediction
    assert torch.allclose(similarity_matrix(a, 3 * a, "cos").diagonal(), torch.ones(2, dtype=torch.float64))
    assert torch.all(similarity_matrix(a, 3 * a, "nsd").diagonal() < 0.7)  # nsd sees the scale, cos does not
    with pytest.raises(ValueError, match="choose one of: cos, error_cos, nsd"):
        similarity_matrix(a, a, "l2")


def test_control_layers_that_are_newton_iterations_align_with_the_identity(tmp_path):
    """A fake cache whose layer k holds Newton iteration k's prediction (plus noise, randomly rotated): the
    analysis must find iteration k for layer k, and GD step counts that grow with k."""
    x, y = _regression(600, seed=2)
    iters = list(range(8))
    g = torch.Generator().manual_seed(3)
    pred = newton_predictions(x, y, iters)  # [K, B, T]
    noise = 0.1 * torch.randn(*pred.shape, 15, generator=g, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    acts = torch.cat([pred.unsqueeze(-1), noise], -1) @ rotation  # [K, B, T, 16]
    result = align_activations(acts, x, y, newton_iters=iters)
    assert result.newton.shape == (8, 8) and result.gd.shape == (8, len(result.gd_steps))
    np.testing.assert_array_equal(result.best_newton, iters)
    assert result.newton.max(1).min() > 0.99
    assert np.all(np.diff(result.best_gd) >= 0) and result.best_gd[-1] >= 8 * result.best_gd[0]
    summary = json.loads(json.dumps(result.to_dict()))
    assert summary["best_newton"] == iters and len(summary["newton"]) == 8
    assert np.all(np.abs(result.refined_newton - iters) <= 0.5) and np.all(np.diff(result.refined_newton) > 0)
    assert summary["refined_newton"] == result.refined_newton.tolist()
    assert summary["refined_gd"] == refined_peak(result.gd, result.gd_steps, log=True).tolist()
    paths = plot_alignment(result, tmp_path)
    assert all(p.exists() and p.stat().st_size > 0 for p in paths.values())


def test_control_constructed_gd_lsa_aligns_with_its_gd_steps():
    """An LSA built to do 3 GD steps (step η, P = η/N): layer l IS l + 1 GD steps. Read at the full prefix
    (N = T − 1 context points, where the construction's 1/N is GD's), the analysis recovers 1, 2, 3."""
    x, y = _regression(1000, seed=4)
    model = construct_gd(5, 10, [0.3, 0.3, 0.3])
    names, acts = layer_activations(model, x, y)
    assert names == [f"blocks.{i}.hook_resid_post" for i in range(3)] and acts.shape == (3, 1000, 11, 6)
    # the final layer's query y-slot is minus the model's own prefix prediction
    torch.testing.assert_close(-acts[-1, ..., -1], prefix_predictions(model, x, y, x_query=x), rtol=1e-10, atol=1e-10)
    result = align_activations(acts, x, y, names, gd_steps=range(8), gd_eta=0.3, min_prefix=10)
    np.testing.assert_array_equal(result.best_gd, [1, 2, 3])
    assert result.gd.max(1).min() > 0.98  # the readout also leans on x_q a little (fitted on 500 prompts)
    # a readout fitted to y rescales an under-converged iterate (the best linear predictor of y from it), so the
    # scale-aware "nsd" similarity matches later steps: "cos" is the default for this reason
    scaled = align_activations(acts, x, y, names, gd_steps=range(8), gd_eta=0.3, min_prefix=10, similarity="nsd")
    assert np.all(scaled.best_gd > [1, 2, 3])


def test_gpt_activations_are_read_at_the_x_tokens():
    model = GPT(model_config(name="gpt", layers=2, heads=2, width=16, max_points=12), 5).double()
    x, y = _regression(4)
    _, acts = layer_activations(model, x, y)
    assert acts.shape == (2, 4, 11, 16)
    readout = model.ln_final(acts[-1]) @ model.W_U + model.b_U  # the model's own read-out of the last layer
    torch.testing.assert_close(readout[..., 0], model.predict_prefixes(x, y))
    with pytest.raises(ValueError, match="supported: GPT, LSA"):
        layer_activations(Newton(2), x, y)


def test_trained_lsa_layers_align_with_increasing_iterations():
    """A 3-layer LSA trained on linear regression (d = 5, 10 points, x ~ N(0, I)): per-layer readouts improve
    with depth, and the best-matching Newton iteration and GD step count never decrease with depth.

    Measured (seed 0, ~4 s): best Newton iterations [0, 5, 8], best GD steps [1, 4, 16] (the first layer is one
    GD step, as von Oswald found; later layers are GD++-like and need ever more GD steps), readout nmse
    [0.58, 0.35, 0.24] over prefixes 2..10."""
    task = task_config("linear", d=5, n_points=10, x_dist="gaussian", x_scale=1.0)
    cfg = ExperimentConfig(
        task=task,
        model=model_config(name="lsa", layers=3, init_scale=0.02),
        train=TrainConfig(steps=1000, batch_size=128, lr=2e-3, eval_every=500, checkpoint_every=1000, progress=False),
        eval=EvalConfig(n_prompts=256),
        name="lsa-align",
    )
    model = train(cfg).model.double()
    x, y = _regression(1000, seed=5)
    result = align(model, x, y)
    assert result.newton.shape == (3, 11) and result.gd.shape == (3, 16)
    assert np.all(np.diff(result.readout_nmse) < 0)
    assert np.all(np.diff(result.best_newton) >= 0) and np.all(np.diff(result.best_gd) >= 0)
    assert result.best_gd[-1] > result.best_gd[0]


def test_peaks_text_has_at_most_three_significant_figures():
    assert peaks_text([0, 1.0, 2.4321, 11.52, 40.62, 1234.5, 16384]) == "0 1 2.43 11.5 40.6 1230 16384"
    assert peaks_text([1024, 2048.0, 8192]) == "1024 2048 8192"  # grid step counts print exactly
    assert peaks_text([0.5, 7.0], ", ") == "0.5, 7"
