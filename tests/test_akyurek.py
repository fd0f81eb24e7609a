"""`iclab reproduce akyurek` (Akyürek et al., model size × noise against GD / ridge / OLS, probes): the pipeline end
to end at the test scale "tiny" through the CLI (nothing is learned in 20 steps; the outputs' schema is checked), its
one-line user errors, and the squared prediction difference against an independent numpy computation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from iclab.algorithms.least_squares import OLS, Ridge
from iclab.cli import main
from iclab.experiments.akyurek import SCALES, _spd_per_k
from iclab.experiments.akyurek_claims import _diff_band
from iclab.tasks import make_task
from iclab.tasks.linear import LinearConfig

CLAIMS = {
    "smallest_closest_to_gd",
    "deep_noisy_closest_to_ridge",
    "depth_approaches_ridge",
    "width_approaches_ridge",
    "probe_rises_with_layer",
    "probe_beats_control",
}
FIGURES = ("closest_algorithm", "spd_per_k", "error_curves", "probes")


def _one_line_error(capsys, code: int, *mentions: str) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, repr(err)
    for m in mentions:
        assert m in lines[0], (m, lines[0])


def test_reproduce_akyurek_tiny(tmp_path, capsys, monkeypatch):
    """The CLI runs the grid (the "smoke" scale swapped for "tiny"), writes results.json, --json, the report and the
    four figures, trains each model size as one ensemble, and refuses an existing OUT."""
    monkeypatch.setitem(SCALES, "smoke", SCALES["tiny"])
    tiny = SCALES["tiny"]
    out, js = tmp_path / "ak", tmp_path / "ak.json"
    code = main(["reproduce", "akyurek", "--out", str(out), "--json", str(js), "--no-progress", "--seeds", "2"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "Squared prediction difference" in printed and "Probes at the last context token" in printed

    result = json.loads(js.read_text())
    assert set(result) == {"name", "config", "metrics", "claims"} and result["name"] == "akyurek"
    assert {c["id"] for c in result["claims"]} == CLAIMS
    for claim in result["claims"]:
        assert set(claim) == {"id", "description", "reference", "measured", "tolerance", "holds"}
        assert isinstance(claim["measured"], float) and not math.isnan(claim["measured"]), claim
        assert claim["holds"] or "does not hold at smoke scale" in claim["description"], claim
    m = result["metrics"]
    assert [s["key"] for s in m["models"]] == [s.key for s in tiny.models] == ["L1-W8", "L1-W16", "L2-W16"]
    assert m["noise_vars"] == list(tiny.noise_vars)
    # seeds and noise levels of one model size are one ensemble run
    assert set(m["phase_wall_time_s"]["per_run_train"]) == {f"gpt-{s.key}-noise0-seed0+3" for s in tiny.models}
    n = tiny.n_points
    for size in tiny.models:
        for noise in tiny.noise_vars:
            cell = m["grid"][size.key][f"{noise:g}"]
            assert cell["closest"] in {"GD", "ridge", "OLS"}
            # the three references of the claims, and one-step GD with one η for every k (reported, never "closest")
            assert set(cell["spd"]) == {"GD", "ridge", "OLS", "GD, one η"}
            assert all(len(v) == 2 for v in cell["spd"].values())
            assert all(len(v) == n for v in cell["spd_per_k"].values())
            assert set(cell["curves"]) == {"model", "GD", "ridge", "OLS"} and len(cell["curves"]["model"]) == n + 1
            # linear and MLP probes of w_OLS and Xᵀy, per hook (input tokens, then each layer)
            assert len(cell["probes"]) == 2 and set(cell["probes"][0]) == {"linear", "mlp"}
            for probes in (cell["probes"][0], cell["control"][1]):
                assert all(set(r2) == {"w_ols", "xty"} for r2 in probes.values())
                assert all(len(v) == size.layers + 1 for r2 in probes.values() for v in r2.values())
            if noise == 0:  # ridge at σ² = 0 is min-norm least squares itself
                assert cell["spd"]["ridge"] == pytest.approx(cell["spd"]["OLS"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["claims"] == result["claims"]
    for fig in FIGURES:
        assert (out / "figures" / f"{fig}.png").stat().st_size > 10_000, fig
    assert (out / "report.html").exists() and (out / "report.md").exists()

    assert main(["reproduce", "akyurek", "--out", str(out), "--no-progress"]) == 2
    _one_line_error(capsys, 2, "already exists", "--force")


def test_bad_seeds_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "ak"
    code = main(["reproduce", "akyurek", "--out", str(out), "--no-progress", "--seeds", "0"])
    _one_line_error(capsys, code, "seeds")
    assert not out.exists()


def test_spd_matches_numpy():
    """SPD of ridge to OLS and GD-free references on shared probes equals ((w_ridge − w_ols)ᵀ x_probe)² averaged,
    with the weights from numpy; a learner's SPD to itself is 0 and its implicit ŵ has cosine 1 with itself."""
    task = make_task(LinearConfig(d=3, n_points=6, noise_var=0.5))
    prompts = task.sample(40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ridge, ols = Ridge(0.5), OLS()
    out = _spd_per_k(ridge, {"ridge": ridge, "OLS": ols}, prompts, torch.Generator().manual_seed(1))
    assert out["spd"]["ridge"] == pytest.approx([0.0] * 6, abs=1e-18)
    assert out["cos"]["ridge"] == pytest.approx(1.0) and out["r2"] == pytest.approx(1.0)

    # the same probes again (same generator seed), with numpy weights
    gen = torch.Generator().manual_seed(1)
    x, y = prompts.x.numpy(), prompts.y.numpy()
    for k in range(1, 7):
        from iclab.analysis.implicit import probe_queries

        probes = probe_queries(prompts.x[:, :k], generator=gen).numpy()  # [B, P, d]
        diffs = []
        for b in range(len(x)):
            X, Y = x[b, :k], y[b, :k]
            w_r = np.linalg.solve(X.T @ X + 0.5 * np.eye(3), X.T @ Y)
            w_o = np.linalg.pinv(X) @ Y
            diffs.append(np.mean((probes[b] @ (w_r - w_o)) ** 2))
        assert out["spd"]["OLS"][k - 1] == pytest.approx(np.mean(diffs), rel=1e-6)
        assert out["se"]["OLS"][k - 1] == pytest.approx(np.std(diffs, ddof=1) / np.sqrt(len(x)), rel=1e-6)


def test_diff_band():
    """Mean of per-seed differences; SE the larger of the seed spread and the prompt Monte Carlo error."""
    mean, se = _diff_band([3.0, 5.0], [1.0, 1.0])
    assert mean == 3.0 and se == pytest.approx(np.std([2.0, 4.0], ddof=1) / np.sqrt(2))
    mean, se = _diff_band([3.0, 3.0], [1.0, 1.0], [0.3, 0.4], [0.0, 0.0])
    assert mean == 2.0 and se == pytest.approx(0.5 / 2)


def _synthetic_metrics(small_spd, large_spd, small_mse, large_mse, probe_last, seeds=2, linear_last=0.0):
    """A metrics dict of three models — 1 layer × width 16 (the smallest), 1 layer × width 32 (between) and 4 layers
    × width 32 (the largest) — × σ² ∈ {0, 0.5} (d = 3), with given mean SPDs per reference (the middle model's the
    mean of the two; seed jitter ±1 %), tight prompt SEs, held-out ½·MSE and the largest model's last-layer MLP
    (linear) probe R² of w_OLS `probe_last` (`linear_last`; input and control 0)."""
    rng = np.random.default_rng(0)
    middle = {r: (small_spd[r] + large_spd[r]) / 2 for r in small_spd}
    sizes = [(1, 16, small_spd, small_mse), (1, 32, middle, (small_mse + large_mse) / 2), (4, 32, large_spd, large_mse)]
    grid = {}
    for layers, width, spd, mse in sizes:
        key = f"L{layers}-W{width}"
        grid[key] = {}
        for noise in (0.0, 0.5):
            ref = dict(spd)
            if noise == 0:
                ref["ridge"] = ref["OLS"]
            per_seed = {r: list(v * (1 + 0.01 * rng.standard_normal(seeds))) for r, v in ref.items()}
            zeros = {"w_ols": [0.0] * (layers + 1), "xty": [0.0] * (layers + 1)}
            probes = [
                {
                    "mlp": {**zeros, "w_ols": [0.0] * layers + [probe_last]},
                    "linear": {**zeros, "w_ols": [0.0] * layers + [linear_last]},
                }
                for _ in range(seeds)
            ]
            control = [{"mlp": zeros, "linear": zeros} for _ in range(seeds)]
            grid[key][f"{noise:g}"] = {
                "spd": per_seed,
                "spd_prompt_se": {r: [0.001 * v] * seeds for r, v in ref.items()},
                "final_eval_half_mse": [mse * 0.5 * (3 + noise)] * seeds,
                "probes": probes,
                "control": control,
            }
    models = [{"key": f"L{la}-W{w}", "layers": la, "width": w} for la, w, _, _ in sizes]
    return {"setting": {"d": 3, "w_var": 1.0}, "models": models, "noise_vars": [0.0, 0.5], "grid": grid}


def test_claims_follow_the_orderings():
    """The paper's pattern (smallest ≈ GD, largest ≈ ridge, deeper and wider models closer to ridge, probes rise)
    holds every claim; swapping the smallest and largest models fails the algorithm claims; models at the plateau
    (½·MSE ≈ that of predicting 0) fail the closest-algorithm claims whatever their orderings."""
    from iclab.experiments.akyurek_claims import akyurek_claims

    gd_like, ridge_like = {"GD": 0.05, "ridge": 0.4, "OLS": 2.0}, {"GD": 0.4, "ridge": 0.05, "OLS": 1.0}
    paper = {c.id: c.holds for c in akyurek_claims(_synthetic_metrics(gd_like, ridge_like, 0.6, 0.3, 0.8), "smoke")}
    assert all(paper.values()), paper
    swapped = {c.id: c.holds for c in akyurek_claims(_synthetic_metrics(ridge_like, gd_like, 0.3, 0.6, 0.8), "x")}
    assert not any(
        swapped[c]
        for c in (
            "smallest_closest_to_gd",
            "deep_noisy_closest_to_ridge",
            "depth_approaches_ridge",
            "width_approaches_ridge",
        )
    )
    plateau = {c.id: c.holds for c in akyurek_claims(_synthetic_metrics(gd_like, ridge_like, 1.0, 1.0, 0.02), "x")}
    assert not any(plateau[c] for c in ("smallest_closest_to_gd", "deep_noisy_closest_to_ridge")), plateau
    # … and the SPD-to-ridge drops: a model on the plateau predicts ≈ 0, far from ridge, which makes any drop trivial
    assert not plateau["depth_approaches_ridge"] and not plateau["width_approaches_ridge"], plateau
    # a failed claim says why: here the models never left predicting 0, there the ordering is the opposite one
    text = {c.id: c.description for c in akyurek_claims(_synthetic_metrics(gd_like, ridge_like, 1.0, 1.0, 0.02), "x")}
    assert "does not hold at x scale: the models' ½·MSE is not below 0.8x" in text["smallest_closest_to_gd"]
    text = {c.id: c.description for c in akyurek_claims(_synthetic_metrics(ridge_like, gd_like, 0.3, 0.6, 0.8), "x")}
    assert "the measured ordering is the opposite one" in text["depth_approaches_ridge"]
    assert not plateau["probe_rises_with_layer"] and not plateau["probe_beats_control"], plateau
    # the probe claims read the MLP probe (Akyürek et al.: a non-linear encoding); the linear one is only quoted
    linear_only = akyurek_claims(_synthetic_metrics(gd_like, ridge_like, 0.6, 0.3, 0.0, linear_last=0.8), "x")
    assert not any(c.holds for c in linear_only if c.id.startswith("probe_")), linear_only
    assert all("a linear probe reads 0.800" in c.description for c in linear_only if c.id.startswith("probe_"))


def test_depth_and_width_claims_need_two_sizes():
    """The depth claim compares depths at the widest width, the width claim widths at the fewest layers: a grid
    without a second width (depth) has no width (depth) claim; the smallest and largest models are chosen by
    (layers, width)."""
    from iclab.experiments.akyurek_claims import akyurek_claims, largest, smallest

    gd_like, ridge_like = {"GD": 0.05, "ridge": 0.4, "OLS": 2.0}, {"GD": 0.4, "ridge": 0.05, "OLS": 1.0}
    m = _synthetic_metrics(gd_like, ridge_like, 0.6, 0.3, 0.8)
    assert smallest(m)["key"] == "L1-W16" and largest(m)["key"] == "L4-W32"
    depth_only = {**m, "models": [s for s in m["models"] if s["key"] != "L1-W16"]}
    ids = {c.id for c in akyurek_claims(depth_only, "x")}
    assert "depth_approaches_ridge" in ids and "width_approaches_ridge" not in ids
    width_only = {**m, "models": [s for s in m["models"] if s["key"] != "L4-W32"]}
    ids = {c.id for c in akyurek_claims(width_only, "x")}
    assert "width_approaches_ridge" in ids and "depth_approaches_ridge" not in ids
