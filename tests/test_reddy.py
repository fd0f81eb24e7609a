"""iclab reproduce reddy: the transition timings against hand-computed crossings, the claims against synthetic
measurements whose verdicts are known, and the whole pipeline at the tiny scale through the CLI (seconds; its
claims are not expected to hold). The smoke scale is run by hand; its numbers are in docs/papers.md §9."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from iclab.cli import main
from iclab.experiments import reddy
from iclab.experiments.reddy_claims import reddy_claims, rise_steps

CHANCE = 1 / 16


def _history(acc, score, every=50):
    steps = np.arange(len(acc)) * every
    return pd.DataFrame({"step": steps, "icl_accuracy": acc, "induction_score": score})


def test_rise_steps_interpolates_the_crossings():
    # plateau 0.0625 → final 0.8625: a gain of 0.8; 25 % at 0.2625, 50 % at 0.4625, 75 % at 0.6625
    acc = [0.0625, 0.0625, 0.0625, 0.0625, 0.3425, 0.8625, 0.8625]
    score = [0.1, 0.1, 0.1, 0.2, 0.5, 0.7, 0.7]  # 50 % of 0.1 → 0.7 is 0.4: between steps 150 (0.2) and 200 (0.5)
    t = rise_steps(_history(acc, score), CHANCE)
    assert t["t25"] == pytest.approx(150 + 50 * 0.2 / 0.28)
    assert t["t50"] == pytest.approx(200 + 50 * 0.12 / 0.52)
    assert t["t75"] == pytest.approx(200 + 50 * 0.32 / 0.52)
    assert t["induction_t50"] == pytest.approx(150 + 50 * 0.2 / 0.3)
    assert t["rise_over_plateau"] == pytest.approx((t["t75"] - t["t25"]) / t["t25"])
    # a linear ramp from step 0 scores 2, whatever its slope
    ramp = rise_steps(_history(list(np.linspace(0.25, 0.95, 41)), [0.1] * 41), 0.25)
    assert ramp["rise_over_plateau"] == pytest.approx(2.0)
    flat = rise_steps(_history([0.05, 0.06, 0.05], [0.1, 0.1, 0.1]), CHANCE)  # never above chance
    assert flat["t50"] is None and flat["rise_over_plateau"] is None and flat["induction_t50"] is None


def _metrics(icl_flag=0.95, iwl_iid=0.97, abrupt=True, ablated=CHANCE, iwl_ablated=0.95):
    ks, bs = (5, 7, 9), (0, 2)
    cells = []
    for b in bs:
        for k in ks:
            icl = icl_flag if (b, k) == (2, 9) else (0.3 if b else CHANCE)
            iwl = {5: iwl_iid, 7: 0.5, 9: 0.2}[k] if b == 0 else 0.1
            cells.append({"burstiness": b, "log2_classes": k, "seeds": [{"icl": icl, "iwl": iwl}] * 2})
    acc = [CHANCE] * 8 + ([0.5, icl_flag, icl_flag] if abrupt else [0.2, 0.4, icl_flag])
    score = [0.1] * 8 + [0.5, 0.8, 0.8]
    if not abrupt:
        acc = list(np.linspace(CHANCE, icl_flag, 11))
    transition = [rise_steps(_history(acc, score), CHANCE)] * 2
    both = [{"icl": 0.85, "iwl": 0.94, "icl_ablated": ablated, "iwl_ablated": iwl_ablated}] * 2
    return {
        "setting": {
            "n_eval": 2000,
            "chance": CHANCE,
            "eval_every": 50,
            "steps": 500,
            "flagship": {"burstiness": 2, "log2_classes": 9},
            "both_log2_classes": 6,
            "ablation": reddy.ABLATE,
        },
        "cells": cells,
        "both": both,
        "transition": transition,
        "flagship_ablation": [{"icl": icl_flag, "iwl": 0.1, "icl_ablated": ablated, "iwl_ablated": 0.1}] * 2,
        "seeds": 2,
    }


def _verdicts(m):
    return {c.id: c.holds for c in reddy_claims(m, "smoke")}


def test_claims_hold_on_measurements_that_show_the_findings():
    verdicts = _verdicts(_metrics())
    assert all(verdicts.values()), verdicts


@pytest.mark.parametrize(
    ("change", "broken"),
    [
        ({"icl_flag": 0.5}, "bursty prompts, many classes → in-context learning"),
        ({"iwl_iid": 0.6}, "i.i.d. prompts, few classes → in-weights learning"),
        ({"abrupt": False}, "the transition is abrupt"),
        ({"ablated": CHANCE + 0.1}, "ablating the induction head → ICL at chance"),
        ({"iwl_ablated": 0.8}, "ablating the induction head leaves IWL"),
    ],
)
def test_each_claim_fails_when_its_finding_is_absent(change, broken):
    verdicts = _verdicts(_metrics(**change))
    assert not verdicts[broken], verdicts


def test_configs_are_one_ensemble_of_cells_seeds_and_the_both_strategies_model():
    from iclab.experiments.grouping import ensemble_config, group_configs

    sc = reddy.SCALES["smoke"]
    configs = reddy.Reddy().configs(sc, reddy.ReddyOptions(seeds=2))
    assert len(configs) == 2 * (len(sc.burstiness) * len(sc.log2_classes) + 1)
    groups = group_configs(configs)
    assert len(groups) == 1 and ensemble_config(groups[0]) is not None
    iid = next(c for c in configs if c.name == reddy.cell_name(0, sc.log2_classes[0], 0))
    assert iid.task.p_bursty == 0 and iid.task.burstiness == sc.n_points // 2  # Reddy's B = 0
    both = next(c for c in configs if c.name == reddy.both_name(1))
    assert (both.task.p_novel, both.task.p_bursty, both.train.seed) == (0.5, 0.0, 1)


def test_reproduce_reddy_tiny_through_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(reddy.SCALES, "smoke", reddy.SCALES["tiny"])
    out, js = tmp_path / "reddy", tmp_path / "reddy.json"
    code = main(["reproduce", "reddy", "--out", str(out), "--json", str(js), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "Phase diagram: in-context accuracy" in printed and "Ablation (zero:blocks.1.attn.hook_z@0)" in printed
    result = json.loads(js.read_text())
    assert result["name"] == "reddy" and len(result["claims"]) == 10
    for claim in result["claims"]:
        assert isinstance(claim["measured"], float) and isinstance(claim["holds"], bool)
    m = result["metrics"]
    assert len(m["cells"]) == 4 and len(m["both"]) == 2 and set(m["curves"]) == {"0", "1"}
    for cell in m["cells"]:
        for seed in cell["seeds"]:
            assert 0 <= seed["icl"] <= 1 and 0 <= seed["iwl"] <= 1
    assert not math.isnan(m["both"][0]["icl_ablated"])
    for name in ("phase_diagram.png", "transition.png", "ablation.png"):
        assert (out / "figures" / name).stat().st_size > 10_000
    assert main(["reproduce", "reddy", "--out", str(out), "--no-progress"]) == 2  # never overwritten silently
