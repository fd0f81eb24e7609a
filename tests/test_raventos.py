"""`iclab reproduce raventos` (Raventós et al., task diversity): the threshold locator against hand-computed
crossings, the paired log-ratio standard error against a bootstrap, and the pipeline end to end through the CLI at
the "tiny" test scale (seconds; its claims are not expected to hold, only to be present with measured values).

The smoke scale (minutes) is run by hand; its numbers are in iclab/experiments/raventos.py and /tmp/docs-raventos.md.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from iclab.cli import main
from iclab.config import ConfigError
from iclab.experiments import raventos, reproduce
from iclab.experiments.raventos import _log_ratio_se
from iclab.experiments.raventos_claims import locate_threshold

CLAIMS = {
    "small M: fresh-task error ≫ ridge",
    "small M: model tracks dMMSE",
    "small M: pool-task error ≈ dMMSE",
    "large M: model ≈ ridge on fresh tasks",
    "threshold M* located",
    "threshold vs the paper (d = 8)",
}


def test_locate_threshold_interpolates_the_first_upward_crossing():
    x = np.array([1.0, 3.0, 5.0, 7.0])
    # r crosses 0 between 3 and 5: at 3 + 2 · 0.5 / (0.5 + 1.5) = 3.5; the later dip below 0 is ignored
    assert locate_threshold(x, np.array([-2.0, -0.5, 1.5, -0.1])) == (pytest.approx(3.5), "located")
    # exactly 0 at a grid point counts as crossed there
    assert locate_threshold(x, np.array([-1.0, 0.0, 1.0, 1.0])) == (pytest.approx(3.0), "located")
    assert locate_threshold(x, np.array([0.2, 1.0, 1.0, 1.0])) == (None, "below grid")
    assert locate_threshold(x, np.array([-1.0, -1.0, -0.5, -0.1])) == (None, "above grid")
    assert locate_threshold(x, np.array([-1.0, math.nan, 1.0, 1.0])) == (None, "undefined")
    with pytest.raises(ValueError, match="increasing"):
        locate_threshold(np.array([1.0, 1.0]), np.array([-1.0, 1.0]))
    with pytest.raises(ValueError, match="as long as r"):
        locate_threshold(x, np.array([-1.0, 1.0]))


def test_log_ratio_standard_error_matches_a_bootstrap():
    rng = np.random.default_rng(0)
    n = 4000
    common = rng.exponential(1.0, n)  # paired prompts: correlated per-prompt errors
    a, b = common + rng.exponential(0.5, n), 0.5 * common + rng.exponential(0.2, n)
    idx = rng.integers(0, n, (2000, n))
    boot = np.log(a[idx].mean(1) / b[idx].mean(1))
    assert _log_ratio_se(a, b) == pytest.approx(boot.std(), rel=0.1)


def test_configs_are_one_ensemble_of_pool_sizes_and_seeds():
    from iclab.experiments.grouping import ensemble_config, group_configs

    sc = raventos.SCALES["smoke"]
    configs = raventos.Raventos().configs(sc, raventos.RaventosOptions(seeds=3))
    assert len(configs) == 3 * len(sc.log2_pools)
    (group,) = group_configs(configs)  # pool sizes and seeds: one ensemble run
    ens = ensemble_config(group)
    assert ens is not None and ens.ensemble.pool_size == tuple(2**k for k in sc.log2_pools) * 3
    paper = raventos.SCALES["paper"]
    cfg = raventos.Raventos().configs(paper, raventos.RaventosOptions())[0]
    # Raventós's code: d = 8, 16 positions (15 context pairs + the query), σ² = 0.25, 8 layers, 2 heads, width 128
    assert (cfg.task.d, cfg.task.n_points + cfg.task.n_queries, cfg.task.noise_var) == (8, 16, 0.25)
    assert (cfg.model.layers, cfg.model.heads, cfg.model.width) == (8, 2, 128)
    assert (cfg.train.batch_size, cfg.train.lr, cfg.train.steps) == (256, 1e-3, 500_000)
    assert paper.log2_pools == tuple(range(1, 21))


def test_reproduce_raventos_tiny_through_the_cli(tmp_path, capsys, monkeypatch):
    """The pipeline at the tiny scale (as --scale smoke): results.json, claims with measured values, figures,
    --json, and an existing OUT refused with exit code 2."""
    monkeypatch.setitem(raventos.SCALES, "smoke", raventos.SCALES["tiny"])
    out, js = tmp_path / "rav", tmp_path / "rav.json"
    code = main(["reproduce", "raventos", "--out", str(out), "--json", str(js), "--seeds", "2", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "Errors vs task-pool size M" in printed and "Threshold M* per seed" in printed

    result = json.loads(js.read_text())
    assert result["name"] == "raventos" and {c["id"] for c in result["claims"]} == CLAIMS
    for claim in result["claims"]:
        assert set(claim) == {"id", "description", "reference", "measured", "tolerance", "holds"}
        assert isinstance(claim["measured"], float) and isinstance(claim["holds"], bool)
    m = result["metrics"]
    assert {"setting", "pool_sizes", "fresh", "pool", "distance", "threshold", "wall_time_s"} <= set(m)
    assert m["pool_sizes"] == [2, 16] and m["seeds"] == 2
    assert np.array(m["fresh"]["model"]).shape == (2, 2, 2) and np.array(m["distance"]["to_ridge"]).shape == (2, 2)
    assert len(m["threshold"]["per_seed_status"]) == 2
    assert len(result["config"]["runs"]) == 4 and result["config"]["seeds"] == 2
    # the fresh-task baselines: ridge is one number for every M, dMMSE one per M (its own pool)
    assert len(m["fresh"]["ridge"]) == 2 and len(m["fresh"]["dmmse"]) == 2
    runs = [p.name for p in (out / "runs").iterdir()]
    assert runs == ["raventos-m2e1-seed0+3"], runs  # 2 pool sizes × 2 seeds: one ensemble run
    for fig in ("errors_vs_pool_size", "distance_vs_pool_size"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 10_000, fig
    assert (out / "report.md").exists() and (out / "report.html").exists()

    assert main(["reproduce", "raventos", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists" in err and len(err.splitlines()) == 1


def test_bad_seeds_fail_before_writing(tmp_path):
    with pytest.raises(ConfigError, match="seeds"):
        reproduce("raventos", scale="smoke", out=tmp_path / "rav", progress=False, seeds=0)
    assert not (tmp_path / "rav").exists()
