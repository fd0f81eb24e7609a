"""iclab reproduce chan-transience: each claim's verdict on synthetic measurements whose findings are known, the
configs as two ensembles, and the pipeline at the tiny scale through the CLI (seconds; its claims are not expected
to hold). The smoke scale is run by hand; its numbers are in docs/papers.md §9."""

from __future__ import annotations

import json

import pytest

from iclab.cli import main
from iclab.experiments import chan_transience as chan
from iclab.experiments.chan_transience_claims import chan_claims

CHANCE = 1 / 16


def _metrics(icl=(0.97, 0.9, 0.3), iwl=(0.1, 0.6, 0.93), peak=0.8, final_icl=0.09, final_iwl=0.99, losses=(0.6, 0.05)):
    alphas = [
        {"alpha": a, "seeds": [{"icl": i, "iwl": w}] * 2} for a, i, w in zip((0.0, 1.0, 2.0), icl, iwl, strict=True)
    ]
    curve = {"step": [0, 100], "icl_accuracy": [0.1, peak], "eval_cross_entropy": [2.7, losses[0]]}
    transience = [
        {
            "curve": curve,
            "final": {"icl": final_icl, "iwl": final_iwl},
            "peak_icl": peak,
            "peak_step": 800,
            "loss_at_peak": losses[0],
            "final_loss": losses[1],
        }
    ] * 2
    setting = {
        "n_eval": 2000,
        "chance": CHANCE,
        "alpha_classes": 1024,
        "alpha_steps": 2000,
        "transient_classes": 256,
        "transient_burstiness": 4,
        "p_bursty": 0.9,
        "transient_steps": 4000,
    }
    return {"setting": setting, "alphas": alphas, "transience": transience, "seeds": 2}


def _verdicts(m):
    return {c.id: c.holds for c in chan_claims(m, "smoke")}


def test_claims_hold_on_measurements_that_show_the_findings():
    verdicts = _verdicts(_metrics())
    assert len(verdicts) == 7 and all(verdicts.values()), verdicts


@pytest.mark.parametrize(
    ("change", "broken"),
    [
        ({"icl": (0.9, 0.9, 0.9)}, "ICL falls with the Zipf exponent"),
        ({"iwl": (0.5, 0.6, 0.5)}, "IWL rises with the Zipf exponent"),
        ({"iwl": (0.1, 0.3, 0.93)}, "ICL and IWL coexist near α = 1"),
        ({"icl": (0.97, 0.9, 0.6), "iwl": (0.1, 0.6, 0.93)}, "ICL and IWL coexist near α = 1"),  # both at the end
        ({"peak": 0.3}, "ICL emerges first"),
        ({"final_icl": 0.5}, "ICL is transient"),
        ({"final_iwl": 0.7}, "IWL takes over"),
        ({"losses": (0.6, 0.5)}, "the loss keeps falling while ICL fades"),
    ],
)
def test_each_claim_fails_when_its_finding_is_absent(change, broken):
    assert not _verdicts(_metrics(**change))[broken]


def test_configs_form_one_ensemble_per_experiment():
    from iclab.experiments.grouping import ensemble_config, group_configs

    sc = chan.SCALES["smoke"]
    configs = chan.ChanTransience().configs(sc, chan.ChanOptions(seeds=2))
    groups = group_configs(configs)
    assert [len(g) for g in groups] == [2 * len(sc.alphas), 2]
    assert all(ensemble_config(g) is not None for g in groups)
    transient = next(c for c in configs if c.name == chan.transient_name(0))
    assert transient.task.n_classes == 2**sc.transient_log2_classes and transient.task.p_bursty == 0.9


def test_reproduce_chan_transience_tiny_through_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(chan.SCALES, "smoke", chan.SCALES["tiny"])
    out, js = tmp_path / "chan", tmp_path / "chan.json"
    code = main(["reproduce", "chan-transience", "--out", str(out), "--json", str(js), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "over the Zipf exponent" in printed and "Transience" in printed
    result = json.loads(js.read_text())
    assert result["name"] == "chan-transience" and len(result["claims"]) == 7
    m = result["metrics"]
    assert [e["alpha"] for e in m["alphas"]] == [0.0, 1.0, 2.0] and len(m["transience"]) == 2
    assert len(m["transience"][0]["curve"]["step"]) == 4  # steps 0, 2, 4, 6
    for name in ("zipf_alpha.png", "transience.png"):
        assert (out / "figures" / name).stat().st_size > 10_000
