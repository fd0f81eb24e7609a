"""`iclab reproduce ahn` (Ahn et al., LSA learns preconditioned GD): the pipeline at the "tiny" test scale through
the CLI (its claims are not expected to hold, only to be present with measured values), the paper scale's settings,
and the numerical pieces it adds (iclab.algorithms.preconditioned, iclab.analysis.compare.layer_preconditioners,
the alignment measures) against closed forms and independent references.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from iclab import theory
from iclab.algorithms.gd import gd_predict
from iclab.algorithms.preconditioned import LayerwisePGD, layerwise_pgd_predict, tune_preconditioners
from iclab.analysis.compare import layer_preconditioners
from iclab.cli import main
from iclab.config import ConfigError
from iclab.experiments import ahn, reproduce
from iclab.experiments.ahn import precond_alignment, xblock_ratio
from iclab.experiments.grouping import group_configs
from iclab.models.lsa import LSA, LSAConfig
from iclab.tasks import make_task

CLAIMS = {"pgd1_closed_form"} | {
    f"{t}_{c}"
    for t in ("iso", "sigma")
    for c in (
        "one_layer_matches_pgd",
        "deep_beats_pgd",
        "loss_drops_with_layers",
        "preconditioner_aligned",
        "one_layer_step_matches_pgd",
        "is_gdpp_own_steps",
    )
}
FIGURES = ("loss_vs_layers_iso", "loss_vs_layers_sigma", "preconditioners_sigma", "eigenvalues_sigma")


def _prompts(b=64, n=20, d=5, m=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=g, dtype=torch.float64)
    w = torch.randn(b, d, generator=g, dtype=torch.float64)
    xq = torch.randn(b, m, d, generator=g, dtype=torch.float64)
    return x, torch.einsum("bnd,bd->bn", x, w), xq


def test_layerwise_pgd_equals_gd_with_one_preconditioner():
    """Equal A_l = η_l·P reproduce iclab's GD with preconditioner P (an independent loop over the residuals)."""
    x, y, xq = _prompts()
    p = torch.diag(torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5], dtype=torch.float64))
    etas = [0.7, 0.3, 0.2]
    mine = layerwise_pgd_predict(x, y, xq, torch.stack([e * p for e in etas]))
    ref = gd_predict(x, y, xq, etas, precond=p)
    torch.testing.assert_close(mine, ref, rtol=1e-10, atol=1e-12)


def test_layerwise_pgd_one_step_numpy():
    """One step from 0: ŷ = x_qᵀ A (1/N) Xᵀy, written in numpy."""
    x, y, xq = _prompts(b=4)
    a = torch.randn(5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mine = layerwise_pgd_predict(x, y, xq, a[None]).numpy()
    X, Y, Q, A = x.numpy(), y.numpy(), xq.numpy(), a.numpy()
    ref = np.stack([Q[b] @ A @ X[b].T @ Y[b] / X.shape[1] for b in range(X.shape[0])])
    np.testing.assert_allclose(mine, ref, rtol=1e-10)


def test_tuned_one_step_preconditioner_is_the_closed_form():
    """The numerically optimised 1-step A on x ~ N(0, Σ), w ~ N(0, Σ⁻¹) is the linear family's A* (theory)."""
    task = make_task(ahn.TASKS["sigma"])
    tuned = tune_preconditioners(task, 1, n_prompts=20_000, max_iter=100, rounds=2)
    sigma = task.x_second_moment().numpy()
    a_star, risk = theory.optimal_preconditioner(np.diag(sigma), np.diag(1 / sigma), 20, 0.0)
    rel = np.linalg.norm(tuned.preconds[0].numpy() - a_star) / np.linalg.norm(a_star)
    assert rel < 0.05, rel
    assert tuned.half_mse == pytest.approx(0.5 * risk, rel=0.05)


def test_layer_preconditioners_read_a_constructed_pgd():
    """An LSA whose layer l has KQ_xx = M_l, OV_yy = c_l (other blocks 0) is PGD with A_l = −N c_l M_lᵀ: the
    reader returns A_l / N and the model predicts as LayerwisePGD."""
    d, n = 5, 20
    model = LSA(LSAConfig(layers=2), d).double()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer, c in zip([model.layer_weights(l) for l in range(2)], (-0.04, -0.02)):
            for name in ("W_Q", "W_K", "W_V", "W_O"):
                getattr(layer, name).zero_()
            layer.W_K[0, :d, :d] = torch.eye(d)
            layer.W_Q[0, :d, :d] = torch.eye(d) + 0.3 * torch.randn(d, d, generator=g, dtype=torch.float64)
            layer.W_O[0] = torch.eye(d + 1)
            layer.W_V[0, d, d] = c
    a = layer_preconditioners(model)
    for l, c in enumerate((-0.04, -0.02)):
        w = model.layer_weights(l)
        torch.testing.assert_close(a[l], -c * w.W_Q[0, :d, :d].T.detach())
    x, y, xq = _prompts(n=n)
    torch.testing.assert_close(model.predict(x, y, xq), LayerwisePGD(a * n).predict(x, y, xq), rtol=1e-9, atol=1e-11)
    assert xblock_ratio(model) == [0.0, 0.0]


def test_gdpp_projection_keeps_the_form_and_drops_the_rest():
    """A model already of the form KQ = blockdiag(κ·T, 0), OV = blockdiag(ρ·I, v) is its own projection (same
    predictions); entries off that form are dropped and the fitted κ, ρ, v kept."""
    d = 5
    t = torch.diag(torch.tensor([1.0, 1.0, 4.0, 16.0, 1.0], dtype=torch.float64))
    model = LSA(LSAConfig(layers=2), d).double()
    with torch.no_grad():
        for layer, (kappa, rho, v) in zip(
            [model.layer_weights(l) for l in range(2)], ((0.02, -0.03, -0.5), (0.01, 0.02, -0.7))
        ):
            for name in ("W_Q", "W_K", "W_V", "W_O"):
                getattr(layer, name).zero_()
            layer.W_K[0] = torch.eye(d + 1)
            layer.W_Q[0, :d, :d] = kappa * t
            layer.W_O[0] = torch.eye(d + 1)
            layer.W_V[0, :d, :d] = rho * torch.eye(d)
            layer.W_V[0, d, d] = v
    x, y, xq = _prompts()
    proj = ahn.gdpp_projection(model, t)
    torch.testing.assert_close(proj.predict(x, y, xq), model.predict(x, y, xq), rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        noisy = LSA(LSAConfig(layers=2), d).double()
        noisy.load_state_dict(model.state_dict())
        for layer in (noisy.layer_weights(l) for l in range(2)):
            layer.W_V[0, 0, d] = 0.3  # y → x₀: not GD++
            layer.W_Q[0, d, 0] = 0.2  # a y-row in KQ
    proj = ahn.gdpp_projection(noisy, t)
    for l in range(2):
        for circuit in ("KQ", "OV"):
            torch.testing.assert_close(
                getattr(proj.layer_weights(l), circuit),
                getattr(model.layer_weights(l), circuit),
                rtol=1e-10,
                atol=1e-12,
            )


def test_precond_alignment_closed_form():
    t = torch.diag(torch.tensor([1.0, 1.0, 4.0, 16.0, 1.0], dtype=torch.float64))
    al = precond_alignment(0.7 * t, t)
    assert al["eta"] == pytest.approx(0.7) and al["cos"] == pytest.approx(1.0)
    assert al["rel_distance"] == pytest.approx(0.0, abs=1e-12) and al["off_diagonal"] == 0.0
    al = precond_alignment(torch.eye(5, dtype=torch.float64), t)  # cos = tr T / (√5 ‖T‖)
    assert al["cos"] == pytest.approx(23 / (5**0.5 * (3 + 16 + 256) ** 0.5))


def test_configs_group_seeds_and_paper_settings():
    sc = ahn.SCALES["smoke"]
    configs = ahn.Ahn().configs(sc, ahn.Options(seeds=3))
    assert len(configs) == 2 * len(sc.layers) * 3
    assert len(group_configs(configs)) == 2 * len(sc.layers)  # seeds of one (task, L) train as one ensemble
    paper = ahn.SCALES["paper"]
    cfg = ahn.Ahn().configs(paper, ahn.Options(seeds=5))[-1]
    # Ahn et al.'s code: d = 5, N = 20, Σ eigenvalues D² with D = diag(1, 1, 1/2, 1/4, 1), w ~ N(0, Σ⁻¹), noiseless
    assert (cfg.task.d, cfg.task.n_points, cfg.task.noise_var) == (5, 20, 0.0)
    assert cfg.task.x_cov_diag == (1.0, 1.0, 0.25, 0.0625, 1.0) and cfg.task.w_cov_diag == (1.0, 1.0, 4.0, 16.0, 1.0)
    assert (cfg.model.layers, cfg.train.batch_size, cfg.train.steps, cfg.train.lr) == (4, 20_000, 20_000, 1e-2)
    assert (cfg.train.beta1, cfg.train.beta2) == (0.99, 0.9)
    model = LSA(cfg.model, 5)
    # init std 0.05, not their 1e-4: their P, Q are single matrices, iclab's KQ, OV products of two factors, whose
    # gradient at 1e-4 (~1e-12) is below Adam's eps (module docstring)
    assert model.layer_weights(0).W_Q.std().item() == pytest.approx(0.05, rel=0.2)


def test_reproduce_ahn_tiny_through_the_cli(tmp_path, capsys, monkeypatch):
    """The pipeline at the tiny scale (as --scale smoke): results.json, claims with measured values, figures,
    --json, and an existing OUT refused with exit code 2."""
    monkeypatch.setitem(ahn.SCALES, "smoke", ahn.SCALES["tiny"])
    out, js = tmp_path / "ahn", tmp_path / "ahn.json"
    code = main(["reproduce", "ahn", "--out", str(out), "--json", str(js), "--seeds", "2", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "Task sigma" in printed and "cos(A_l, Σ⁻¹)" in printed

    result = json.loads(js.read_text())
    assert result["name"] == "ahn" and {c["id"] for c in result["claims"]} == CLAIMS
    for claim in result["claims"]:
        assert set(claim) == {"id", "description", "reference", "measured", "tolerance", "holds"}
        assert isinstance(claim["measured"], float) and isinstance(claim["holds"], bool)
    m = result["metrics"]
    assert {"setting", "tasks", "wall_time_s", "phase_wall_time_s"} <= set(m)
    for key in ("iso", "sigma"):
        t = m["tasks"][key]
        assert set(t["trained"]) == set(t["references"]) == {"1", "2"}
        assert len(t["trained"]["2"]["members"]) == 2 and len(t["trained"]["2"]["members"][0]["alignment"]) == 2
        assert np.array(t["trained"]["2"]["members"][0]["preconds"]).shape == (2, 5, 5)
    assert len(result["config"]["runs"]) == 8 and result["config"]["seeds"] == 2
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "ahn-iso-1-s0+1", "ahn-iso-2-s0+1", "ahn-sigma-1-s0+1", "ahn-sigma-2-s0+1"
    ]  # fmt: skip
    for fig in FIGURES:
        assert (out / "figures" / f"{fig}.png").stat().st_size > 10_000, fig
    assert (out / "report.md").exists() and (out / "report.html").exists()

    assert main(["reproduce", "ahn", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists" in err and len(err.splitlines()) == 1


def test_bad_seeds_fail_before_writing(tmp_path):
    with pytest.raises(ConfigError, match="seeds"):
        reproduce("ahn", scale="smoke", out=tmp_path / "ahn", progress=False, seeds=0)
    assert not (tmp_path / "ahn").exists()
