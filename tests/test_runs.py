"""Tests for iclab.runs: run directory lifecycle, metrics, checkpoints, RNG and optimizer state."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from iclab.runs import (
    RunDir,
    RunExistsError,
    atomic_write_bytes,
    generator_state,
    optimizer_from_tensors,
    optimizer_to_tensors,
    restore_generator,
)

CONFIG = {"task": {"name": "linear", "d_x": 5}, "model": {"d_model": 64}, "train": {"seed": 7, "steps": 100}}


def test_create_writes_config_and_subdirs(tmp_path):
    run = RunDir.create(tmp_path / "r", CONFIG)
    record = json.loads((tmp_path / "r" / "config.json").read_text())
    assert record["config"] == CONFIG
    assert record["seed"] == 7
    assert record["torch_version"] == str(torch.__version__)
    assert {"iclab_version", "git_sha", "created"} <= record.keys()
    assert (run.path / "checkpoints").is_dir() and (run.path / "figures").is_dir()
    assert RunDir.open(tmp_path / "r").config() == CONFIG


def test_existing_run_requires_force_or_resume(tmp_path):
    path = tmp_path / "r"
    RunDir.create(path, CONFIG)
    with pytest.raises(RunExistsError) as err:
        RunDir.create(path, CONFIG)
    assert str(err.value) == f"run directory {path} already exists; pass --force to overwrite or --resume to continue"
    with pytest.raises(ValueError, match="mutually exclusive"):
        RunDir.create(path, CONFIG, force=True, resume=True)


def test_force_recreates(tmp_path):
    run = RunDir.create(tmp_path / "r", CONFIG)
    run.write_text("stale.txt", "old")
    other = {**CONFIG, "model": {"d_model": 32}}
    run = RunDir.create(tmp_path / "r", other, force=True)
    assert not (run.path / "stale.txt").exists()
    assert run.config() == other


def test_force_never_deletes_a_non_run_directory(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "precious.txt").write_text("x")
    with pytest.raises(RunExistsError, match="not an iclab run"):
        RunDir.create(tmp_path / "r", CONFIG, force=True)
    assert (tmp_path / "r" / "precious.txt").exists()


def test_resume_allows_only_mutable_keys_to_change(tmp_path):
    path = tmp_path / "r"
    RunDir.create(path, CONFIG)
    longer = {**CONFIG, "train": {"seed": 7, "steps": 200}}
    run = RunDir.create(path, longer, resume=True)
    assert run.config()["train"]["steps"] == 200
    assert RunDir.open(path).record["created"] == run.record["created"]
    assert len(RunDir.open(path).record["resumed"]) == 1

    changed = {**longer, "model": {"d_model": 128}}
    with pytest.raises(ValueError) as err:
        RunDir.create(path, changed, resume=True)
    msg = str(err.value)
    assert "'model.d_model'" in msg and "64" in msg and "128" in msg and "\n" not in msg

    extra = {**longer, "train": {"seed": 7, "steps": 200, "lr": 1e-3}}
    with pytest.raises(ValueError, match=r"'train\.lr': stored '<missing>'"):
        RunDir.create(path, extra, resume=True)


def test_resume_without_existing_run_creates_it(tmp_path):
    run = RunDir.create(tmp_path / "r", CONFIG, resume=True)
    assert run.config() == CONFIG


def test_open_missing_run(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing config\.json"):
        RunDir.open(tmp_path / "nope")


def test_metrics_append_and_truncate(tmp_path):
    run = RunDir.create(tmp_path / "r", CONFIG)
    assert run.metrics().empty and list(run.metrics().columns) == ["step"]
    run.log_metrics([{"step": 0, "loss": 1.5}, {"step": 10, "loss": 1.0}])
    run.log_metrics([{"step": 20, "loss": 0.5, "eval_mse": 0.25}])
    run.log_metrics([])
    df = RunDir.open(run.path).metrics()
    assert df["step"].tolist() == [0, 10, 20]
    assert df["loss"].tolist() == [1.5, 1.0, 0.5]
    assert math.isnan(df["eval_mse"][0]) and df["eval_mse"][2] == 0.25
    assert df["step"].dtype == "int64"

    run.truncate_metrics(after_step=10)
    run.log_metrics([{"step": 20, "loss": 0.4}])
    pd.testing.assert_series_equal(run.metrics()["loss"], pd.Series([1.5, 1.0, 0.4], name="loss"))

    with pytest.raises(TypeError, match="metric 'loss'"):
        run.log_metrics([{"step": 30, "loss": "high"}])
    with pytest.raises(ValueError, match="no 'step'"):
        run.log_metrics([{"loss": 1.0}])


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, steps: int) -> None:
    for _ in range(steps):
        x = torch.randn(8, 4, generator=gen)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_checkpoint_resume_is_bit_identical(tmp_path):
    run = RunDir.create(tmp_path / "r", CONFIG)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.8, 0.95), weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    _train(model, opt, gen, 3)

    optim_tensors, optim_meta = optimizer_to_tensors(opt.state_dict())
    assert all(k.startswith("optim/") for k in optim_tensors)
    tensors = {
        **{f"model/{k}": v for k, v in model.state_dict().items()},
        **optim_tensors,
        "rng/data": generator_state(gen),
    }
    path = run.save_checkpoint(3, tensors, {"step": 3, "optim": optim_meta})
    assert path.name == "step_00000003.safetensors"

    loaded, meta = run.load_checkpoint()
    assert meta["step"] == 3
    model2 = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    model2.load_state_dict({k.removeprefix("model/"): v for k, v in loaded.items() if k.startswith("model/")})
    opt2 = torch.optim.Adam(model2.parameters(), lr=0.5)
    opt2.load_state_dict(optimizer_from_tensors(loaded, meta["optim"]))
    assert opt2.param_groups[0]["betas"] == (0.8, 0.95)
    gen2 = torch.Generator()
    restore_generator(gen2, loaded["rng/data"])

    _train(model, opt, gen, 2)
    _train(model2, opt2, gen2, 2)
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)
    for sa, sb in zip(opt.state.values(), opt2.state.values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in ("step", "exp_avg", "exp_avg_sq"))


def test_generator_round_trip():
    gen = torch.Generator().manual_seed(123)
    torch.rand(5, generator=gen)
    state = generator_state(gen)
    assert state.dtype == torch.uint8
    expected = torch.rand(10, generator=gen)
    other = torch.Generator().manual_seed(999)
    restore_generator(other, state)
    assert torch.equal(torch.rand(10, generator=other), expected)
    with pytest.raises(ValueError, match="uint8"):
        restore_generator(other, state.float())


def test_checkpoint_keeps_last_three_and_handles_shared_storage(tmp_path):
    run = RunDir.create(tmp_path / "r", CONFIG)
    assert run.latest_checkpoint() is None
    with pytest.raises(FileNotFoundError):
        run.load_checkpoint()
    w = torch.arange(6.0).reshape(2, 3)
    for step in (1, 5, 10, 100, 1000):
        # tied entries (same tensor twice) and a non-contiguous view must both be storable
        run.save_checkpoint(step, {"w": w, "w_tied": w, "wt": w.t()}, {"step": step})
    assert [p.name for p in run.checkpoints()] == [f"step_{s:08d}.safetensors" for s in (10, 100, 1000)]
    assert run.latest_checkpoint().name == "step_00001000.safetensors"
    tensors, meta = run.load_checkpoint(run.checkpoints()[0])
    assert meta == {"step": 10}
    assert torch.equal(tensors["wt"], w.t()) and torch.equal(tensors["w_tied"], w)


def test_atomic_writes_leave_no_temp_files(tmp_path):
    run = RunDir.create(tmp_path / "r", CONFIG)
    run.write_json("summary.json", {"a": [1, 2]})
    run.write_text("notes.txt", "hello")
    run.log_metrics([{"step": 0, "loss": 1.0}])
    run.save_checkpoint(0, {"x": torch.zeros(2)}, {})
    atomic_write_bytes(tmp_path / "r" / "raw.bin", b"\x00\x01")
    atomic_write_bytes(tmp_path / "r" / "raw.bin", b"\x02")
    assert (tmp_path / "r" / "raw.bin").read_bytes() == b"\x02"
    assert json.loads((run.path / "summary.json").read_text()) == {"a": [1, 2]}
    assert (run.path / "notes.txt").read_text() == "hello"
    # the run's lock file (RUN/.lock) stays by design: an flock, not a file's existence, is the lock
    leftovers = [p for p in tmp_path.rglob("*") if p.suffix == ".tmp" or (p.name.startswith(".") and p.name != ".lock")]
    assert leftovers == []


def test_failed_write_keeps_old_content_and_no_temp(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_artifact_paths(tmp_path):
    run = RunDir.create(tmp_path / "r", CONFIG)
    assert run.figure_path("loss.png") == run.path / "figures" / "loss.png"
    with pytest.raises(ValueError, match="relative path"):
        run.write_text("../escape.txt", "x")
