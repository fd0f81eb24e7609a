"""`iclab reproduce garg`: the pipeline at a tiny budget (outputs, closed forms, refusal to overwrite).

The smoke scale itself trains for ~15 minutes of one CPU core, too long for the suite; its claims are measured in
README.md (seeds 0 and 1), like `iclab reproduce von-oswald --layers 3`. That a small GPT learns to track least
squares on this task is tested at a 1 000-step budget in tests/test_gpt.py."""

import dataclasses
import json

import numpy as np
import pytest

from iclab import theory
from iclab.cli import main
from iclab.experiments import garg, reproduce


@pytest.fixture
def tiny(monkeypatch):
    small = dataclasses.replace(garg.SCALES["smoke"], steps=20, n_eval=200, n_align=100)
    monkeypatch.setitem(garg.SCALES, "tiny", small)


def test_pipeline_writes_curves_alignment_claims_and_report(tmp_path, tiny):
    result = reproduce("garg", scale="tiny", out=tmp_path / "g", progress=False)
    m = result["metrics"]
    d, k = 5, np.array(m["k"])
    assert k.tolist() == list(range(11))  # 10 context points and the query: k = 0 … 10
    # Closed forms, computed independently of the module: min-norm least squares (d − k)/d, then 0; the best
    # single GD step (d + 1)/(k + d + 1) (Mahankali et al.), 1 at k = 0.
    np.testing.assert_allclose(m["least_squares_closed_form"], np.clip(d - k, 0, None) / d)
    np.testing.assert_allclose(m["one_gd_step_closed_form"], (d + 1) / (k + d + 1))
    assert theory.mahankali_excess_risk(d, 3, 0.0) / d == pytest.approx(6 / 9)
    claims = {c["id"]: c for c in result["claims"]}
    assert set(claims) == {
        "least_squares_closed_form",
        "tracks_least_squares_below_d",
        "tracks_least_squares_beyond_d",
        "beats_averaging_and_knn",
        "beats_one_gd_step",
        "later_layers_match_more_gd_steps",
        "later_layers_match_more_newton_iterations",
        "readout_improves_with_depth",
    }
    assert claims["least_squares_closed_form"]["holds"]  # the evaluator, whatever the model learnt
    ols = np.array(m["curves"]["least squares"]["mean"])
    assert np.all(ols[d:] < 1e-8)
    assert np.array(m["alignment"]["newton"]).shape == (4, 11)
    out = tmp_path / "g"
    saved = json.loads((out / "results.json").read_text())
    assert saved["name"] == "garg" and saved["claims"] == result["claims"]
    for name in ("error_vs_k.png", "training_curve.png", "alignment_heatmaps.png"):
        assert (out / "figures" / name).stat().st_size > 10_000
    assert "error_vs_k" in (out / "report.html").read_text()
    assert (out / "runs" / "gpt-d5" / "config.json").exists()


def test_cli_refuses_an_existing_output_and_layers(tmp_path, tiny, capsys):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "keep.txt").write_text("x")
    assert main(["reproduce", "garg", "--out", str(tmp_path / "g"), "--no-progress"]) == 2
    assert main(["reproduce", "garg", "--layers", "2", "--out", str(tmp_path / "h")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "already exists" in err[0] and "layers" in err[1] and "no options of its own" in err[1]
    assert (tmp_path / "g" / "keep.txt").read_text() == "x" and not (tmp_path / "h").exists()
