"""`iclab reproduce he` (He et al., multi-head softmax attention): the smoke reproduction end to end through the CLI
(slow: it trains 1, 2, 4 heads and an LSA baseline, 1 000 steps each), and its one-line user errors.

Measured at smoke scale, seeds 0 / 1 / 2 (10 000 held-out prompts, debiased-GD optimum ½·MSE 0.1214, its Monte
Carlo value on these prompts 0.1211, 3 SE = 0.0061):
  ½·MSE / optimum (same prompts)  1 head 1.687 / 1.659 / 1.688; 2 heads 1.012 / 1.010 / 1.010;
                                  4 heads 1.013 / 1.009 / 1.010
  KQ, active heads                2 heads: off-diagonal mass ≤ 0.0036, diagonal cv ≤ 0.030;
                                  4 heads (one head idle in every seed, gain ≈ 0.01 vs 0.44): ≤ 0.076, ≤ 0.147
  OV                              last-entry mass ≥ 0.9958; zero-sum ≤ 0.0080
  implied step / optimal          2 heads 1.005 / 1.013 / 1.001; 4 heads 1.005 / 1.014 / 0.996
  length, worst softmax / LSA     0.777 / 0.784 / 0.780 (at L' = 20; at L' = 160 softmax ≈ 1.08x the optimum,
                                  LSA ≈ 48x)
tests/test_softmax.py trains 2 heads at this budget once more, for the attention-pattern fit.
"""

from __future__ import annotations

import json

import pytest

from iclab.cli import main
from iclab.config import ConfigError
from iclab.experiments import reproduce

CLAIMS = {
    "optimum_closed_form",
    "heads_2_within_5pct",
    "heads_4_within_5pct",
    "one_head_worse",
    "kq_diagonal_homogeneous",
    "ov_last_entry_zero_sum",
    "implied_step_matches",
    "softmax_length_generalises",
}
FIGURES = (
    "loss_vs_heads",
    "loss_vs_length",
    "training_curves",
    "circuits_1_head",
    "circuits_2_heads",
    "circuits_4_heads",
)


def _one_line_error(capsys, code: int, *mentions: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, repr(err)
    for m in mentions:
        assert m in lines[0], (m, lines[0])
    return lines[0]


@pytest.mark.slow
def test_reproduce_he_smoke(tmp_path, capsys):
    """Every claim holds at smoke scale; results.json, the report and the figures are written; no silent overwrite."""
    out, js = tmp_path / "he", tmp_path / "he.json"
    code = main(["reproduce", "he", "--out", str(out), "--json", str(js), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "Length generalisation" in printed and "step / optimal" in printed and "8/8 claims hold" in printed

    result = json.loads(js.read_text())
    assert set(result) == {"name", "config", "metrics", "claims"} and result["name"] == "he"
    assert {c["id"] for c in result["claims"]} == CLAIMS
    failed = [c for c in result["claims"] if not c["holds"]]
    assert not failed, failed
    for claim in result["claims"]:
        assert set(claim) == {"id", "description", "reference", "measured", "tolerance", "holds"}
    metrics = result["metrics"]
    assert set(metrics) == {"setting", "optimum", "heads", "lsa", "length", "wall_time_s", "phase_wall_time_s"}
    assert set(metrics["phase_wall_time_s"]["per_run_train"]) == {"he-1-head", "he-2-heads", "he-4-heads", "he-lsa"}
    assert set(metrics["heads"]) == {"1", "2", "4"}
    assert metrics["setting"] == {"d": 5, "L": 40, "noise_var": 0.1, "w_var": pytest.approx(0.2)}
    assert metrics["optimum"]["step"] == pytest.approx(1 / 45.5)
    length = metrics["length"]
    assert length["lengths"] == [10, 20, 40, 80, 160] and set(length["softmax"]) == {"1", "2", "4"}
    assert len(length["lsa"]) == 5 and len(length["optimum_closed_form"]) == 5
    # LSA is trained well at L = 40 (its own linear-family optimum), so the length claim is not a weak baseline.
    assert metrics["lsa"]["half_mse"] <= 1.02 * metrics["lsa"]["linear_family_optimum"], metrics["lsa"]

    saved = json.loads((out / "results.json").read_text())
    assert saved["claims"] == result["claims"] and saved["table"].startswith("Results")
    for fig in FIGURES:
        assert (out / "figures" / f"{fig}.png").stat().st_size > 10_000, fig
    assert (out / "report.html").exists() and (out / "report.md").exists()
    assert {p.name for p in (out / "runs").iterdir()} == {"he-1-head", "he-2-heads", "he-4-heads", "he-lsa"}

    # An existing reproduction is never overwritten without --force (shared code: one check is enough).
    assert main(["reproduce", "he", "--out", str(out), "--no-progress"]) == 2
    _one_line_error(capsys, 2, "already exists", "--force")


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        (["--scale", "huge"], ["scale", "huge"]),
        (["--layers", "2"], ["layers", "no options of its own"]),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, mentions):
    out = tmp_path / "he"
    code = main(["reproduce", "he", "--out", str(out), "--no-progress", *argv])
    _one_line_error(capsys, code, *mentions)
    assert not out.exists()


def test_unknown_scale_fails_before_writing(tmp_path):
    with pytest.raises(ConfigError, match=r"scale: unknown value 'huge'; choose one of: smoke, paper"):
        reproduce("he", scale="huge", out=tmp_path / "he", progress=False)
    assert not (tmp_path / "he").exists()
