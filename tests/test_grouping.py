"""Reproductions train configs of one shape as one ensemble (iclab.experiments.grouping): grouping rules, and a
small reproduction whose models come back as their members, equal to their single runs."""

import json
from types import MappingProxyType

import pytest
import torch

from iclab.config import ExperimentConfig
from iclab.experiments.driver import Analysis, Reproduction, reproduce
from iclab.experiments.grouping import ensemble_config, group_configs
from iclab.report import Claim
from iclab.training import train

BASE = ExperimentConfig().replace(
    task={"d": 3, "n_points": 5},
    train={"steps": 30, "batch_size": 32, "eval_every": 10, "checkpoint_every": 10, "dtype": "float64"},
    eval={"n_prompts": 100},
)


def test_configs_differing_in_seed_and_per_member_fields_form_one_group():
    a = BASE.replace(name="a")
    b = BASE.replace(train={"seed": 1}, name="b")
    c = BASE.replace(task={"noise_var": 0.5}, train={"lr": 3e-3}, name="c")
    other_shape = BASE.replace(model={"layers": 2}, name="deep")
    groups = group_configs([a, other_shape, b, c])
    assert [[g.name for g in group] for group in groups] == [["a", "b", "c"], ["deep"]]
    group = ensemble_config(groups[0])
    assert group is not None and group.name == "a+2"
    assert group.ensemble.seeds == (0, 1, 0) and group.ensemble.noise_var == (0.0, 0.0, 0.5)
    assert group.ensemble.lr == (1e-3, 1e-3, 3e-3) and group.ensemble.pool_size == ()
    assert ensemble_config(groups[1]) is None  # one config: a run of its own
    assert ensemble_config([a, a.replace(name="twin")]) is None  # the same run twice: trained apart, as asked


class _Tiny(Reproduction):
    name = "tiny"
    summary = "three seeds of one model"
    scales = MappingProxyType({"smoke": None})

    def configs(self, scale, options):
        return [BASE.replace(train={"seed": s}, name=f"lsa-seed{s}") for s in range(3)] + [
            BASE.replace(model={"layers": 2}, name="lsa-2")
        ]

    def analyse(self, ctx):
        losses = {name: t.result.final_eval_half_mse for name, t in ctx.trained.items()}
        return Analysis({"losses": losses}, [("Results", "")], [])

    def claims(self, analysis, ctx):
        return [Claim("ran", "every model trained", 4, len(analysis.metrics["losses"]), "=", True)]


def test_a_reproduction_trains_its_seeds_as_one_ensemble_equal_to_single_runs(tmp_path):
    out = tmp_path / "tiny"
    result = reproduce(_Tiny(), out=out, progress=False, seed=5)
    assert sorted(p.name for p in (out / "runs").iterdir() if not p.name.startswith(".")) == ["lsa-2", "lsa-seed0+2"]
    members = out / "runs" / "lsa-seed0+2" / "members"
    assert sorted(p.name for p in members.iterdir()) == ["seed-5", "seed-6", "seed-7"]  # --seed offsets each seed
    for s in range(3):
        single = train(BASE.replace(train={"seed": 5 + s}))
        got = result["metrics"]["losses"][f"lsa-seed{s}"]
        assert got == pytest.approx(single.final_eval_half_mse, rel=1e-9)  # float64: members = single runs
        stored = json.loads((members / f"seed-{5 + s}" / "config.json").read_text())["config"]
        assert stored["train"]["seed"] == 5 + s
    assert set(result["metrics"]["phase_wall_time_s"]["per_run_train"]) == {"lsa-seed0+2", "lsa-2"}  # once per run
    reloaded = reproduce(_Tiny(), out=out, progress=False, seed=5, resume=True)  # resumable like any run
    assert reloaded["metrics"]["losses"] == pytest.approx(result["metrics"]["losses"], rel=1e-12)
    assert torch.isfinite(torch.tensor(list(result["metrics"]["losses"].values()))).all()


class _Broken(_Tiny):
    name = "broken"

    def analyse(self, ctx):
        raise RuntimeError("analysis bug")


class _Other(_Tiny):
    name = "other"


def test_reproduce_all_runs_every_paper_resumably_and_ends_with_the_report(tmp_path, monkeypatch):
    import iclab.experiments as experiments

    monkeypatch.setattr(experiments, "PAPERS", {"tiny": _Tiny(), "broken": _Broken(), "other": _Other()})
    said = []
    first = experiments.reproduce_all(out=tmp_path, progress=False, echo=said.append)
    assert first["done"] == ["tiny", "other"] and list(first["failed"]) == ["broken"]
    assert "analysis bug" in first["failed"]["broken"]
    assert first["report"] == tmp_path / "iclab-report.html" and first["counts"]["reproductions"] == 2
    again = experiments.reproduce_all(out=tmp_path, progress=False, echo=said.append)
    assert again["skipped"] == ["tiny", "other"] and again["done"] == []  # finished ones are not run again
    assert any("finished before, skipped" in line for line in said)
