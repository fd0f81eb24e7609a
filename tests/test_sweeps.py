"""Sweeps (iclab.sweeps): spec validation, the local and ray executors on real runs, resume after SIGKILL, a
failing and a diverging trial recorded while the others finish, collect's table and figure."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from iclab.cli import main
from iclab.errors import SpecError
from iclab.sweeps import collect, expand, load_spec, parse_spec, run_sweep, sweep_status
from iclab.sweeps.store import SweepDir

TINY = {
    "task.d": 3,
    "task.n_points": 6,
    "train.steps": 40,
    "train.batch_size": 64,
    "train.eval_every": 10,
    "train.checkpoint_every": 10,
    "eval.n_prompts": 200,
}


def _spec(tmp_path, **changes):
    raw = {"name": "tiny", "base": {"overrides": dict(TINY)}, "grid": {"task.noise_var": [0.0, 0.5]}, "seeds": [0, 1]}
    raw.update(changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_expansion_names_cells_trials_and_units():
    spec = parse_spec(
        {"base": {"overrides": TINY}, "grid": {"task.noise_var": [0.0, 0.5], "model.layers": [1, 2]}, "seeds": "0-2"}
    )
    trials, units = expand(spec)
    assert len(trials) == 12 and len(units) == 4  # 2 x 2 cells, 3 seeds each as one ensemble
    assert units[1].name == "c001-noise_var=0_layers=2" and units[1].config.ensemble.seeds == (0, 1, 2)
    assert trials[4].config.train.seed == 1 and trials[4].member == "seed-1" and trials[4].unit == units[1].name
    assert trials[4].config.model.layers == 2 and trials[4].config.task.noise_var == 0.0
    zipped = parse_spec({"zip": {"task.d": [2, 4], "task.n_points": [5, 9]}, "seeds": [3], "ensemble": False})
    trials, units = expand(zipped)
    assert [(t.config.task.d, t.config.task.n_points, t.seed) for t in trials] == [(2, 5, 3), (4, 9, 3)]
    assert [u.name for u in units] == ["c000-d=2_n_points=5-seed3", "c001-d=4_n_points=9-seed3"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"grid": {"task.noise_var": [0.0, -1.0]}}, r"cell c001-noise_var=-1 .*task.noise_var: must be"),
        ({"grid": {"model.nope": [1]}}, r"cell c000.*model.nope: unknown field"),
        ({"grid": {"task.d": []}}, r"sweep.grid.task.d: must be a non-empty list"),
        ({"grid": {"d": [1]}}, r"sweep.grid: 'd' is not a config field"),
        ({"grid": {"train.seed": [1]}}, r"give seeds under 'seeds'"),
        ({"zip": {"task.d": [1, 2], "task.n_points": [3]}}, r"sweep.zip: lists must have equal lengths"),
        ({"seeds": [0, 0]}, r"sweep.seeds: must be distinct"),
        ({"seeds": "3-1"}, r"sweep.seeds"),
        ({"grid": {"task.noise_var": [0.0, 0]}}, r"is the same experiment as c000"),
        ({"resources": {"cpus": 0}}, r"sweep.resources.cpus: must be a number > 0"),
        ({"max_failures": -1}, r"sweep.max_failures"),
        ({"base": {"preset": "nope"}}, r"preset: unknown value 'nope'"),
        ({"base": {"overrides": {"train.lr": "fast"}}}, r"sweep.base.overrides: train.lr"),
        ({"bogus": 1}, r"sweep.bogus: unknown key"),
    ],
)
def test_bad_specs_are_one_line_errors_naming_the_field_and_cell(raw, message):
    with pytest.raises(SpecError, match=message) as info:
        expand(parse_spec(raw))
    assert "\n" not in str(info.value)


def test_the_cli_refuses_a_bad_spec_before_writing_anything(tmp_path, capsys):
    spec = _spec(tmp_path, grid={"task.noise_var": [0.0, -1.0]})
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: sweep: cell c001") and "\n" not in err
    assert not (tmp_path / "out").exists()
    (tmp_path / "bad.yaml").write_text("grid: [unclosed")
    assert main(["sweep", str(tmp_path / "bad.yaml")]) == 2
    assert "not valid YAML at line 1" in capsys.readouterr().err


def test_local_sweep_collects_every_trial_and_a_rerun_repeats_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    status = run_sweep(_spec(tmp_path), out=out)
    assert status["counts"]["done"] == 2
    table = collect(out)
    assert len(table) == 4 and set(table["state"]) == {"done"} and (table["step"] == 40).all()
    # an ensemble member equals its single run: seed 1 of the noiseless cell retrained alone
    from iclab.config import config_from_dict
    from iclab.training import train

    member = SweepDir(out).trial_path(SweepDir(out).record()["trials"][1])
    single = train(config_from_dict(json.loads((member / "config.json").read_text())["config"]))
    row = table[(table["task.noise_var"] == 0.0) & (table["seed"] == 1)].iloc[0]
    assert row["eval_half_mse"] == pytest.approx(single.final_eval_half_mse, rel=1e-4)  # float32 ensemble vs single
    before = {p.name: p.read_text() for p in (out / "outcomes").iterdir()}
    run_sweep(_spec(tmp_path), out=out)
    assert {p.name: p.read_text() for p in (out / "outcomes").iterdir()} == before  # nothing retrained
    assert pd.read_parquet(out / "results.parquet").equals(table)
    assert main(["sweep", "collect", str(out), "--x", "task.noise_var"]) == 0
    printed = capsys.readouterr().out
    assert "eval_half_mse mean" in printed and "4 done" in printed
    assert (out / "figures" / "eval_half_mse_vs_task.noise_var.png").stat().st_size > 5000
    assert main(["sweep", "collect", str(out), "--x", "task.nope"]) == 2


def test_a_failing_and_a_diverging_trial_are_recorded_and_the_others_finish(tmp_path, capsys):
    spec = _spec(tmp_path, grid={"train.lr": [1e-3, 1e30], "task.noise_var": [0.0, 0.5]}, seeds=[0], ensemble=False)
    out = tmp_path / "sweep"
    trials, units = expand(load_spec(spec))
    SweepDir(out).create(load_spec(spec), trials, units)  # the sweep as `iclab sweep` starts it, then a fault
    broken = SweepDir(out).unit_path(units[1].name)
    broken.parent.mkdir(parents=True)
    broken.write_text("a file where the run directory belongs")  # this unit cannot create its run: it fails
    assert main(["sweep", str(spec), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "1 unit(s) failed" in captured.err
    status = sweep_status(out)
    states = {u["unit"]: u["state"] for u in status["units"]}
    assert states[units[0].name] == "done" and states[units[1].name] == "failed"
    assert states[units[2].name] == states[units[3].name] == "diverged"  # lr 1e30
    failed = SweepDir(out).outcome(units[1].name)
    assert failed["error"].startswith("RunExistsError") and "is not an iclab run" in failed["error"]
    assert Path(failed["log"]).read_text().startswith("Traceback")
    assert "non-finite" in SweepDir(out).outcome(units[2].name)["error"]
    broken.unlink()  # fixed: a rerun retries the failed unit only
    assert main(["sweep", str(spec), "--out", str(out)]) == 0
    assert SweepDir(out).outcome(units[1].name)["attempts"] == 2
    assert SweepDir(out).outcome(units[0].name)["attempts"] == 1
    assert main(["sweep", "status", str(out)]) == 0
    assert "2 done, 2 diverged" in capsys.readouterr().out


def test_another_sweep_in_out_is_refused_and_a_second_writer_is_locked_out(tmp_path):
    out = tmp_path / "sweep"
    run_sweep(_spec(tmp_path, seeds=[0], grid={"task.noise_var": [0.0]}), out=out)
    with pytest.raises(Exception, match="holds another sweep"):
        run_sweep(_spec(tmp_path, seeds=[0], grid={"task.noise_var": [0.1]}), out=out)


def _four_units(tmp_path, *, steps, every):
    """A spec of four single-seed units long enough for a kill to land between them."""
    overrides = {**TINY, "train.steps": steps, "train.eval_every": every, "train.checkpoint_every": every}
    return _spec(tmp_path, base={"overrides": overrides}, grid={"task.noise_var": [0.0, 0.25, 0.5, 1.0]}, seeds=[0])


_KILLED_SWEEP = """
import sys
from iclab.sweeps import run_sweep
run_sweep(sys.argv[1], out=sys.argv[2])
"""


def test_a_sigkilled_sweep_resumes_without_repeating_finished_units(tmp_path):
    spec = _four_units(tmp_path, steps=400, every=20)
    out = tmp_path / "sweep"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SWEEP, str(spec), str(out)], stderr=subprocess.DEVNULL, env=os.environ
    )
    deadline = time.time() + 120
    outcomes = out / "outcomes"
    while time.time() < deadline and not (outcomes.exists() and len(list(outcomes.iterdir())) >= 1):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.read_text() for p in outcomes.iterdir()}
    assert 1 <= len(finished) < 4, "the kill should land mid-sweep"
    status = run_sweep(spec, out=out)
    assert status["counts"]["done"] == 4, status["table"]
    for name, text in finished.items():  # finished before the kill: not trained again
        assert (outcomes / name).read_text() == text


def test_a_run_cut_off_before_its_config_was_written_is_resumable(tmp_path):
    from iclab.runs import RunDir

    skeleton = tmp_path / "run"
    for sub in ("checkpoints", "figures"):
        (skeleton / sub).mkdir(parents=True)  # what RunDir.create makes before config.json
    run = RunDir.create(skeleton, {"train": {"seed": 0}}, resume=True)
    assert (run.path / "config.json").is_file()
    (tmp_path / "foreign" / "figures").mkdir(parents=True)
    (tmp_path / "foreign" / "figures" / "mine.png").write_bytes(b"x")  # someone's files: never taken over
    with pytest.raises(Exception, match="not an iclab run"):
        RunDir.create(tmp_path / "foreign", {"train": {"seed": 0}}, resume=True)


def test_ray_executor_gives_the_local_executors_numbers(tmp_path):
    pytest.importorskip("ray")
    spec = _spec(tmp_path)
    local = collect(run_sweep(spec, out=tmp_path / "local") and tmp_path / "local")
    status = run_sweep(spec, out=tmp_path / "ray", executor="ray", num_cpus=2)
    assert status["counts"]["done"] == 2
    remote = collect(tmp_path / "ray")
    columns = ["trial", "task.noise_var", "seed", "state", "step", "eval_half_mse", "train_half_mse"]
    pd.testing.assert_frame_equal(local[columns], remote[columns])  # same units, same seeds: the same numbers
    assert (tmp_path / "ray" / "ray" / "tune").is_dir()  # Tune's own experiment state (Tuner.restore reads it)


def test_a_process_pool_gives_the_sequential_numbers(tmp_path):
    spec = _spec(tmp_path, grid={"task.noise_var": [0.0, 0.5, 1.0]}, seeds=[0], ensemble=False)
    sequential = collect(run_sweep(spec, out=tmp_path / "one") and tmp_path / "one")
    pooled = collect(run_sweep(spec, out=tmp_path / "pool", workers=2) and tmp_path / "pool")
    columns = ["trial", "task.noise_var", "seed", "state", "step", "eval_half_mse"]
    pd.testing.assert_frame_equal(sequential[columns], pooled[columns])


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("examples/*.yaml")), ids=lambda p: p.name)
def test_every_example_spec_expands(path):
    trials, units = expand(load_spec(path))
    assert trials and units and len({t.name for t in trials}) == len(trials)


def _descendants(root):
    """Every live descendant process of `root` (parent links read from /proc)."""
    parents = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            parents[int(pid)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _kill(pids):
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_sigkilled_ray_sweep_is_restored_by_tune(tmp_path):
    pytest.importorskip("ray")
    spec = _four_units(tmp_path, steps=600, every=50)
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "iclab", "sweep", str(spec), "--out", str(out), "--executor", "ray", "--num-cpus", "2"]
    leftovers = set()  # Ray's agent processes outlive a SIGKILLed driver: this test ends them
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        outcomes = out / "outcomes"
        deadline = time.time() + 240
        while time.time() < deadline and not (outcomes.exists() and any(outcomes.iterdir())):
            time.sleep(0.1)
        leftovers = _descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        finished = {p.name: p.read_text() for p in outcomes.iterdir()}
        assert 1 <= len(finished) < 4, "the kill should land mid-sweep"
        _kill(leftovers)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "4 done" in done.stdout
        for name, text in finished.items():  # finished before the kill: not trained again
            assert (outcomes / name).read_text() == text
        trials = [p for p in (out / "ray" / "tune").iterdir() if p.name.startswith("_trial_")]
        assert len(trials) == 4  # Tuner.restore continued the one experiment instead of starting another
    finally:
        _kill(leftovers)


def test_yaml_exponent_floats_list_axes_and_a_bad_out_are_handled(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "base:\n  overrides: {task.d: 2, task.n_points: 4, task.x_dist: gaussian, task.x_scale: 1.0,\n"
        "    train.steps: 10, train.batch_size: 16, train.eval_every: 5, train.checkpoint_every: 5,\n"
        "    eval.n_prompts: 50}\n"
        "grid:\n  train.lr: [1e-3, 3E-3]\n  task.x_cov_diag: [null, [1.0, 4.0]]\nseeds: [0]\nensemble: false\n"
    )
    trials, _ = expand(load_spec(spec))
    assert sorted({t.config.train.lr for t in trials}) == [1e-3, 3e-3]  # YAML 1.1 would have read strings
    out = tmp_path / "sweep"
    assert run_sweep(spec, out=out)["counts"]["done"] == 4
    table = collect(out)
    assert set(table["task.x_cov_diag"].astype(str)) == {"None", "[1.0, 4.0]"}
    assert main(["sweep", "collect", str(out), "--x", "train.lr", "--hue", "task.x_cov_diag"]) == 0
    (tmp_path / "file").write_text("x")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "file")]) == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "mine")]) == 2
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]  # no lock file left in it


def test_a_rerun_with_other_resources_is_refused_not_silently_ignored(tmp_path):
    out = tmp_path / "sweep"
    run_sweep(_spec(tmp_path, seeds=[0], grid={"task.noise_var": [0.0]}), out=out)
    changed = _spec(tmp_path, seeds=[0], grid={"task.noise_var": [0.0]}, resources={"cpus": 2})
    with pytest.raises(SpecError, match=r"sweep.resources: this sweep was started with"):
        run_sweep(changed, out=out)
