"""`iclab reproduce fu` (Fu et al., layer ↔ Newton / GD alignment): the pipeline at a tiny scale through the Python
API (the CLI's --scale takes smoke | paper), the CLI's --json, refusal of an existing OUT, the pooling of a model's
seeds (mean similarity matrices before the peaks; one seed = the unpooled alignment), and the fits' helpers.

The smoke scale (≈ 5 minutes on two idle cores, two seeds per model) is run by hand; its numbers are in the module
docstring of iclab.experiments.fu.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from iclab.analysis.alignment import Alignment, align_activations, peaks_text, refined_peak
from iclab.cli import main
from iclab.experiments import fu
from iclab.experiments.fu import (
    SCALES,
    Fu,
    _fit_layers,
    _fits,
    converged_at,
    fu_claims,
    layer_alignment,
    line_fit,
    pool_alignments,
)
from iclab.experiments.garg import READABLE

MODELS = ("gpt-iso", "lsa-iso", "gpt-kappa10", "lsa-kappa10")  # in the order configs declares them
SLOPES = ("newton_slope", "gd_log2_slope")
SUMMARY = {"newton_slope", "newton_slope_se", "newton_r2", "gd_log2_slope", "gd_log2_slope_se", "gd_r2", "readable"}


def test_reproduce_fu_tiny(tmp_path, monkeypatch):
    """results.json schema, one claim set per model (its seeds pooled, the default 2) with measured values, per-seed
    peaks in the metrics and the report, figures, and no silent overwrite."""
    monkeypatch.setitem(Fu.scales, "smoke", SCALES["tiny"])  # the CLI's smoke scale, made tiny for this test
    out, js = tmp_path / "fu", tmp_path / "fu.json"
    assert main(["reproduce", "fu", "--out", str(out), "--json", str(js), "--no-progress"]) == 0
    result = json.loads(js.read_text())
    assert set(result) == {"name", "config", "metrics", "claims"} and result["name"] == "fu"
    assert result["config"]["seeds"] == 2
    assert set(result["config"]["runs"]) == {f"{m}-s{s}" for m in MODELS for s in (0, 1)}  # two seeds per model
    metrics = result["metrics"]
    assert metrics["setting"]["conditions"] == [1.0, 10.0] and metrics["setting"]["seeds"] == 2
    assert set(MODELS) <= set(metrics) and not any(k.endswith(("-s0", "-s1")) for k in metrics)
    for name in MODELS:
        m = metrics[name]
        assert set(m) >= SUMMARY, name
        assert m["runs"] == [f"{name}-s0", f"{name}-s1"]
        layers = SCALES["tiny"].gpt_layers if name.startswith("gpt") else SCALES["tiny"].lsa_layers
        assert len(m["alignment"]["best_newton"]) == layers and len(m["readable"]) == layers
        assert len(m["alignment"]["refined_gd"]) == layers
        assert len(m["per_block"]) == SCALES["tiny"].blocks
        assert [row["seed"] for row in m["per_seed"]] == [0, 1]
        # the pooled matrix is the mean of the seeds'; the per-seed peaks are each seed's own
        assert m["alignment"]["seeds_pooled"] == 2
        mean_nmse = np.mean([row["readout_nmse"] for row in m["per_seed"]], axis=0)
        assert np.allclose(m["alignment"]["readout_nmse"], mean_nmse)
        assert all(len(row["refined_newton"]) == layers for row in m["per_seed"])
        for fig in ("alignment_heatmaps", "alignment_best_newton", "alignment_best_gd"):
            assert (out / "figures" / name / f"{fig}.png").stat().st_size > 5_000
    ids = [c["id"] for c in result["claims"]]
    assert len(ids) == 14 == len(set(ids))  # one claim set per model, not per seed
    for cov in ("iso", "kappa10"):
        assert {f"gpt_{cov}_newton_linear", f"gpt_{cov}_gd_exponential", f"gpt_{cov}_readout_improves"} <= set(ids)
        assert {f"lsa_{cov}_newton_linear", f"lsa_{cov}_later_layers_match_more"} <= set(ids)
    for claim in result["claims"]:
        assert set(claim) == {"id", "description", "reference", "measured", "tolerance", "holds"}
        assert isinstance(claim["measured"], float) and isinstance(claim["holds"], bool)
    assert (
        "each seed's own peaks s0: "
        in next(c for c in result["claims"] if c["id"] == "gpt_iso_newton_linear")["description"]
    )
    assert (out / "figures" / "iterations_vs_layer.png").stat().st_size > 10_000
    assert (out / "report.md").exists() and (out / "report.html").exists()
    report = (out / "report.md").read_text()
    assert "GD peak per seed" in report and "s0: " in report and "s1: " in report
    saved = json.loads((out / "results.json").read_text())
    assert saved["claims"] == result["claims"]
    # an existing reproduction is never overwritten without --force: one-line error, exit code 2
    assert main(["reproduce", "fu", "--out", str(out), "--no-progress"]) == 2


def test_seeds_train_as_one_ensemble_per_model():
    assert Fu.Options().seeds == 2  # the default pools two seeds per model
    configs = Fu().configs(SCALES["smoke"], Fu.Options())
    names = [c.name for c in configs]
    assert names[:2] == ["gpt-iso-s0", "gpt-iso-s1"] and len(names) == 8
    assert [c.train.seed for c in configs[:2]] == [0, 1]
    assert {c.task.x_condition for c in configs} == {1.0, 10.0}
    assert [fu._model_name(c) for c in configs] == [m for m in MODELS for _ in (0, 1)]
    one = Fu().configs(SCALES["smoke"], Fu.Options(seeds=1))
    assert [c.name for c in one] == [fu._model_name(c) for c in one] == list(MODELS)


def test_bad_seeds_is_a_one_line_error(tmp_path, capsys):
    assert main(["reproduce", "fu", "--out", str(tmp_path / "fu"), "--seeds", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "seeds" in err
    assert not (tmp_path / "fu").exists()


def test_line_fit_matches_numpy():
    rng = np.random.default_rng(0)
    x = np.arange(7.0)
    y = 3 * x + 1 + rng.normal(size=7)
    slope, r2 = line_fit(x, y)
    assert slope == pytest.approx(np.polyfit(x, y, 1)[0])
    assert r2 == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2)  # R² of a simple regression = Pearson r²
    assert line_fit(x, 2 * x) == pytest.approx((2.0, 1.0))
    assert np.isnan(line_fit(x[:1], y[:1])[0])


# a trained 4-layer GPT's GD rows (isotropic smoke run, seed 0; grid 0, 1, 2, …, 256): layer 2 is tied at 8 and 16
# steps (0.9433, 0.9435), and its argmax 16 makes the argmax per layer 1, 2, 16, 32, which a line fits better than
# an exponential; the sub-grid peaks 2.43, 11.5, 40.5 grow by a near-constant factor
GPT_ISO_GD = np.array(
    [
        [0.0, 0.0843, 0.0828, 0.0815, 0.0816, 0.0823, 0.0824, 0.0817, 0.0808],
        [0.0, 0.8175, 0.8354, 0.8304, 0.8123, 0.7898, 0.7699, 0.7550, 0.7447],
        [0.0, 0.8256, 0.8877, 0.9263, 0.9433, 0.9435, 0.9348, 0.9238, 0.9141],
        [0.0, 0.8012, 0.8704, 0.9217, 0.9559, 0.9745, 0.9808, 0.9796, 0.9752],
    ]
)


def test_fits_of_sub_grid_peaks_undo_the_argmax_tie():
    grid = [0, 1, 2, 4, 8, 16, 32, 64, 128]
    argmax = np.asarray(grid)[GPT_ISO_GD.argmax(1)]
    peaks = refined_peak(GPT_ISO_GD, grid, log=True)
    assert argmax.tolist() == [1, 2, 16, 32]
    assert peaks_text(peaks[1:]) == "2.43 11.5 40.5"  # 40.6 from the unrounded similarities
    layers = np.array([1, 2, 3])
    by_argmax = _fits(np.zeros(4), argmax, layers, layers)
    by_peak = _fits(np.zeros(4), peaks, layers, layers)
    assert by_argmax["gd_r2"] < by_argmax["gd_r2_linear"]  # the tie decides the log-vs-linear contrast
    assert by_peak["gd_r2"] > 0.99 > by_peak["gd_r2_linear"]
    assert by_peak["gd_log2_slope"] == pytest.approx(np.polyfit(layers, np.log2(peaks[1:]), 1)[0])


def test_fit_layers_readable_and_up_to_convergence():
    best = np.array([0, 2, 4, 8, 8, 8])
    sims = np.array([0.1, 0.9, 0.9, 0.95, 0.97, 0.99])
    assert _fit_layers(best, sims, cap=8).tolist() == [1, 2, 3]  # layer 0 unreadable; 4, 5 converged
    assert _fit_layers(best, sims, cap=20).tolist() == [1, 2, 3, 4, 5]


GD_GRID = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)


def _alignment(newton: np.ndarray, gd: np.ndarray, nmse: np.ndarray, gd_steps=GD_GRID) -> Alignment:
    return Alignment(
        [f"layer {k}" for k in range(len(newton))], list(range(newton.shape[1])), list(gd_steps), newton, gd, nmse,
        "cos", None,
    )  # fmt: skip


def _vertex(row: np.ndarray, u: np.ndarray) -> float:
    """The vertex of the parabola through the row's maximum and its two neighbours (numpy's polyfit)."""
    i = int(row.argmax())
    a, b, _ = np.polyfit(u[i - 1 : i + 2], row[i - 1 : i + 2], 2)
    return -b / (2 * a)


def test_pooled_peak_is_the_peak_of_the_mean_similarity():
    """Two seeds' synthetic similarity matrices (bumps of different widths at different depths of the grids): the
    pooled alignment is their mean, and its sub-grid peak per layer is the parabola vertex of the mean row (numpy),
    not the mean of the seeds' peaks."""
    u_gd = np.log2(np.array(GD_GRID[1:], dtype=float))  # GD rows in log₂ steps (the 0 column below the bump)
    u_n = np.arange(9.0)

    def rows(centres, widths, u):
        return np.array([np.exp(-((u - c) ** 2) / (2 * w**2)) for c, w in zip(centres, widths, strict=True)])

    seed0 = _alignment(
        rows([1.3, 3.2, 5.4], [1.0, 1.2, 1.5], u_n),
        np.hstack([np.zeros((3, 1)), rows([1.6, 2.7, 4.1], [0.8, 1.0, 1.3], u_gd)]),
        np.array([0.5, 0.3, 0.2]),
    )
    seed1 = _alignment(
        rows([2.1, 4.6, 6.2], [2.0, 0.7, 1.0], u_n),
        np.hstack([np.zeros((3, 1)), rows([2.9, 4.4, 5.6], [1.6, 0.6, 0.9], u_gd)]),
        np.array([0.4, 0.3, 0.1]),
    )
    pooled = pool_alignments([seed0, seed1])
    mean_n, mean_gd = (seed0.newton + seed1.newton) / 2, (seed0.gd + seed1.gd) / 2
    assert np.allclose(pooled.newton, mean_n) and np.allclose(pooled.gd, mean_gd)
    assert np.allclose(pooled.readout_nmse, [0.45, 0.3, 0.15])
    expected_n = [_vertex(row, u_n) for row in mean_n]
    expected_gd = [2 ** _vertex(row[1:], u_gd) for row in mean_gd]
    assert pooled.refined_newton == pytest.approx(expected_n, rel=1e-9)
    assert pooled.refined_gd == pytest.approx(expected_gd, rel=1e-9)
    # the peak of the mean is not the mean of the peaks (in steps or in doublings)
    mean_of_peaks = (seed0.refined_gd + seed1.refined_gd) / 2
    mean_of_log_peaks = 2 ** ((np.log2(seed0.refined_gd) + np.log2(seed1.refined_gd)) / 2)
    assert np.abs(pooled.refined_gd - mean_of_peaks).min() > 0.05 * pooled.refined_gd.min()
    assert np.abs(np.log2(pooled.refined_gd) - np.log2(mean_of_log_peaks)).max() > 0.05
    assert np.abs(pooled.refined_newton - (seed0.refined_newton + seed1.refined_newton) / 2).max() > 0.05
    assert pool_alignments([seed0]) is seed0  # one seed: unpooled
    with pytest.raises(ValueError, match="grids"):
        pool_alignments([seed0, _alignment(seed1.newton, seed1.gd[:, :-1], seed1.readout_nmse, GD_GRID[:-1])])


def _pooled_only(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "per_seed"}


def _unpooled(model, x, y, newton_iters, blocks):
    """`layer_alignment` of one model before seeds were pooled (the code as it was), for the one-seed test."""
    names, acts = fu.layer_activations(model, x, y)
    iters = tuple(range(newton_iters + 1))
    full = align_activations(acts, x, y, names, newton_iters=iters)
    cap_n = converged_at(x, y, list(iters), "newton", float(full.newton.max(1)[-1]))
    cap_g = converged_at(x, y, list(full.gd_steps), "gd", float(full.gd.max(1)[-1]))
    layers_n = _fit_layers(full.best_newton, full.newton.max(1), cap_n)
    layers_g = _fit_layers(full.best_gd, full.gd.max(1), cap_g)
    fits = _fits(full.refined_newton, full.refined_gd, layers_n, layers_g)
    per_block = []
    for chunk in np.array_split(np.arange(x.shape[0]), blocks):
        a = align_activations(acts[:, chunk], x[chunk], y[chunk], names, newton_iters=iters)
        per_block.append(_fits(a.refined_newton, a.refined_gd, layers_n, layers_g))
    se = {f"{k}_se": float(np.std([b[k] for b in per_block], ddof=1) / np.sqrt(blocks)) for k in SLOPES}
    readable = full.newton.max(1) >= READABLE
    first = int(np.flatnonzero(readable)[0]) if readable.any() else 0
    return full, {
        **fits, **se, "readable": readable.tolist(), "newton_converged_at": cap_n, "gd_converged_at": cap_g,
        "fit_layers_newton": layers_n.tolist(), "fit_layers_gd": layers_g.tolist(), "per_block": per_block,
        "readout_first": float(full.readout_nmse[first]), "readout_last": float(full.readout_nmse[-1]),
    }  # fmt: skip


@pytest.fixture
def two_seeds(monkeypatch):
    """Two seeds' 'models' whose three layers are noisy Newton iterates (seed 0: iterations 1, 2, 4; seed 1: 1, 3, 5;
    each layer's activation is the iterate's prediction plus its own noise), and their prompts (d = 4, κ ≈ 11):
    readable layers, a convergence cap beyond them, so every fit and SE is a number. `layer_activations` is
    patched to return a 'model's' activations."""
    from iclab.analysis.alignment import newton_predictions

    gen = torch.Generator().manual_seed(2)
    scale = torch.tensor([1.0, 0.7, 0.5, 0.3], dtype=torch.float64)
    x = torch.randn(96, 8, 4, generator=gen, dtype=torch.float64) * scale
    y = torch.einsum("btd,bd->bt", x, torch.randn(96, 4, generator=gen, dtype=torch.float64))

    def acts(iters, seed):
        p = newton_predictions(x, y, iters).unsqueeze(-1)  # [K, B, T, 1]
        return p + 0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    monkeypatch.setattr(fu, "layer_activations", lambda m, x, y: ([f"blocks.{k}" for k in range(len(m))], m))
    return [acts((1, 2, 4), 0), acts((1, 3, 5), 1)], x, y


def test_one_seed_is_the_unpooled_alignment(two_seeds):
    """One seed reduces to the alignment as it was before pooling, exactly (matrices, fits, SEs, caps, layers)."""
    (m0, _), x, y = two_seeds
    full, summary = layer_alignment([m0], x, y, 8, 3)
    old_full, old = _unpooled(m0, x, y, 8, 3)
    assert np.array_equal(full.newton, old_full.newton) and np.array_equal(full.gd, old_full.gd)
    assert np.array_equal(full.readout_nmse, old_full.readout_nmse)
    assert full.to_dict() == old_full.to_dict()
    assert _pooled_only(summary) == old
    assert len(old["fit_layers_newton"]) == 3 and np.isfinite(old["newton_slope_se"])  # the fits test something
    assert summary["per_seed"][0]["refined_gd"] == old_full.refined_gd.tolist()


def test_two_seeds_pool_matrices_and_blocks(two_seeds):
    """Two seeds: the pooled matrices are the seeds' mean, the fits read its peaks, each block's fit reads the mean
    of the seeds' block matrices (seeds and prompts both enter the SE); a seed pooled with itself changes nothing."""
    (m0, m1), x, y = two_seeds
    full, summary = layer_alignment([m0, m1], x, y, 8, 3)
    a0, a1 = (_unpooled(m, x, y, 8, 3)[0] for m in (m0, m1))
    assert np.allclose(full.newton, (a0.newton + a1.newton) / 2) and np.allclose(full.gd, (a0.gd + a1.gd) / 2)
    per_seed = [row["refined_newton"] for row in summary["per_seed"]]
    assert per_seed == [a0.refined_newton.tolist(), a1.refined_newton.tolist()]
    layers_n, layers_g = np.array(summary["fit_layers_newton"]), np.array(summary["fit_layers_gd"])
    fits = _fits(full.refined_newton, full.refined_gd, layers_n, layers_g)
    assert {k: summary[k] for k in fits} == pytest.approx(fits)
    iters = tuple(range(9))
    seeds = [fu.layer_activations(m, x, y) for m in (m0, m1)]
    for b, chunk in enumerate(np.array_split(np.arange(x.shape[0]), 3)):
        b0, b1 = (align_activations(a[:, chunk], x[chunk], y[chunk], n, newton_iters=iters) for n, a in seeds)
        peak_n = refined_peak((b0.newton + b1.newton) / 2, iters)
        peak_g = refined_peak((b0.gd + b1.gd) / 2, b0.gd_steps, log=True)
        expected = _fits(peak_n, peak_g, layers_n, layers_g)
        assert summary["per_block"][b] == pytest.approx(expected, nan_ok=True)
    single = layer_alignment([m0], x, y, 8, 3)[1]
    assert summary["newton_slope"] != pytest.approx(single["newton_slope"])  # the second seed moves the fit
    doubled = layer_alignment([m0, m0], x, y, 8, 3)[1]
    assert _pooled_only(doubled) == _pooled_only(single)


def test_newton_iterates_as_layers_align_linearly():
    """Control: 'layers' that are Newton iterates 0, 2, 4, 6 (activations = their predictions) align to exactly
    those iterations, a slope of 2 per layer with R² = 1."""
    from iclab.analysis.alignment import newton_predictions

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 12, 4, generator=gen, dtype=torch.float64)
    y = torch.einsum("btd,bd->bt", x, torch.randn(400, 4, generator=gen, dtype=torch.float64))
    acts = newton_predictions(x, y, (0, 2, 4, 6)).unsqueeze(-1)  # [K, B, T, 1]
    a = align_activations(acts, x, y, newton_iters=tuple(range(9)))
    assert a.best_newton.tolist() == [0, 2, 4, 6]
    assert line_fit(np.arange(4), a.best_newton) == pytest.approx((2.0, 1.0))


def test_converged_at_is_the_first_iterate_near_least_squares():
    """converged_at against a direct check: the returned Newton iteration / GD step count has cos ≥ the threshold
    with least squares (numpy lstsq per prompt and prefix), the one before it does not."""
    from iclab.analysis.alignment import gd_predictions, newton_predictions
    from iclab.experiments.fu import CONVERGED, converged_at

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(60, 8, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 0.8, 0.6], dtype=torch.float64)
    y = torch.einsum("btd,bd->bt", x, torch.randn(60, 3, generator=gen, dtype=torch.float64))
    ls = np.array(
        [
            [x[b, t].numpy() @ np.linalg.lstsq(x[b, :t].numpy(), y[b, :t].numpy(), rcond=None)[0] for t in range(2, 8)]
            for b in range(60)
        ]
    ).ravel()

    def cos(p):
        p = p[:, 2:].numpy().ravel()
        return p @ ls / np.linalg.norm(p) / np.linalg.norm(ls)

    for kind, grid, preds in (
        ("newton", list(range(13)), lambda g: newton_predictions(x, y, g)),
        ("gd", [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512], lambda g: gd_predictions(x, y, g)),
    ):
        for ceiling in (0.9, 0.95):
            k = converged_at(x, y, grid, kind, ceiling)
            assert cos(preds([k])[0]) >= min(CONVERGED, ceiling), kind
            i = grid.index(k)
            assert 0 < i < len(grid) - 1 and cos(preds([grid[i - 1]])[0]) < ceiling, kind


def _summary(kind, x_condition, newton, gd, fit_layers, **fits):
    """A model's alignment summary for fu_claims: newton / gd = (grid argmax, sub-grid peaks) per layer, the same
    fitted layers for both fits, GD converged at 64 steps, and the given fit numbers."""
    alignment = {"best_newton": newton[0], "refined_newton": newton[1], "best_gd": gd[0], "refined_gd": gd[1]}
    return {
        "kind": kind, "x_condition": x_condition, "alignment": alignment, "gd_converged_at": 64,
        "fit_layers_newton": fit_layers, "fit_layers_gd": fit_layers, **fits,
    }  # fmt: skip


def test_two_fitted_layers_say_their_fits_are_vacuous():
    """With two fitted layers any line fits (R² = 1 on both scales): the claims then test the slopes only, and say
    so in their text; with three or more they do not."""
    m = _summary(
        "GPT", 1.0, ([0, 3, 5, 8], [0, 3.2, 5.1, 7.6]), ([1, 2, 4, 16], [1, 2.2, 4.5, 14.3]), [2, 3],
        newton_slope=3.0, newton_slope_se=0.5, newton_r2=1.0, gd_log2_slope=2.0, gd_log2_slope_se=0.25, gd_r2=1.0,
        gd_r2_linear=1.0, readout_first=0.45, readout_last=0.25,
    )  # fmt: skip
    claims = {c.id: c for c in fu_claims("gpt-iso", m, "smoke")}
    assert claims["gpt_iso_newton_linear"].holds and "R² is vacuous" in claims["gpt_iso_newton_linear"].description
    assert claims["gpt_iso_gd_exponential"].holds and "vacuous" in claims["gpt_iso_gd_exponential"].description
    m3 = {**m, "fit_layers_newton": [1, 2, 3], "fit_layers_gd": [1, 2, 3], "newton_r2": 0.5}
    claims = {c.id: c for c in fu_claims("gpt-iso", m3, "smoke")}
    assert "vacuous" not in claims["gpt_iso_newton_linear"].description
    assert not claims["gpt_iso_newton_linear"].holds  # R² 0.5 < 0.8 with three layers
    assert "smoke scale" in claims["gpt_iso_newton_linear"].description  # a failing GPT claim says why
    assert (
        "sub-grid peak estimates 0, 3.2, 5.1, 7.6; grid argmax 0, 3, 5, 8"
        in claims["gpt_iso_newton_linear"].description
    )
    assert "sub-grid peak estimates 1, 2.2, 4.5, 14.3" in claims["gpt_iso_gd_exponential"].description
    m4 = {**m3, "gd_r2": 0.9}  # log fit below the linear one: fails, and says how close GD's convergence is
    gd = {c.id: c for c in fu_claims("gpt-iso", m4, "smoke")}["gpt_iso_gd_exponential"]
    assert not gd.holds and "matches 14.3 GD steps, and GD converges" in gd.description and "at 64" in gd.description


def test_lsa_monotone_claim_reads_the_sub_grid_peaks():
    """later_layers_match_more: a GD step count that never falls with depth, on the sub-grid peaks (an argmax flipped
    by a tie between doublings does not decide it; a peak that falls does)."""
    m = _summary(
        "LSA", 10.0, ([4, 7, 7, 11], [3.5, 7.0, 7.4, 11.5]), ([2, 16, 8, 64], [2.3, 9.8, 10.9, 49.8]), [0, 1, 2, 3],
        newton_slope=2.4, newton_slope_se=0.2, newton_r2=0.9, gd_log2_slope=1.3, gd_log2_slope_se=0.1, gd_r2=0.9,
        gd_r2_linear=0.75, readout_first=0.56, readout_last=0.14,
    )  # fmt: skip
    claim = {c.id: c for c in fu_claims("lsa-kappa10", m, "smoke")}["lsa_kappa10_later_layers_match_more"]
    assert claim.holds and claim.measured == pytest.approx(49.8)
    m["alignment"] = {**m["alignment"], "best_gd": [2, 8, 8, 64], "refined_gd": [2.3, 9.8, 9.7, 49.8]}
    assert not {c.id: c for c in fu_claims("lsa-kappa10", m, "smoke")}["lsa_kappa10_later_layers_match_more"].holds
