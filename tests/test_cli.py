"""`iclab` CLI: user errors are one line on stderr with exit code 2; train / resume / force / compare on a tiny run."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from iclab.cli import main
from iclab.config import ExperimentConfig, config_from_dict, config_to_dict
from iclab.experiments.presets import PRESETS

TINY = [
    "--task.d", "3",
    "--task.n_points", "5",
    "--train.steps", "20",
    "--train.batch_size", "64",
    "--train.eval_every", "10",
    "--train.checkpoint_every", "10",
    "--eval.n_prompts", "200",
    "--train.no-progress",
]  # fmt: skip


def _with(args: list[str], option: str, value: str) -> list[str]:
    """TINY-style args with one option's value changed."""
    out = list(args)
    out[out.index(option) + 1] = value
    return out


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_user_error(code: int, err: str, *mentions: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), repr(err)
    line = lines[0]
    assert line.startswith("error: "), line
    for m in mentions:
        assert re.search(m, line), (m, line)
    return line


# ------------------------------------------------------------------------------------------------ user errors


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"task": {"d": 3, "foo": 1}}))
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "invalid.json").write_text("{not json")
    (tmp_path / "adir").mkdir()
    return tmp_path


IV_UNKNOWN = ["--train.interventions", "zero:blocks.7.attn.hook_z"]
ERRORS = [
    (["train", "--task.d", "0"], [r"error: task\.d: ", ">= 1"]),
    (["train", "--task.x_dist", "cauchy"], [r"x[-_]dist", "cauchy", "uniform", "gaussian"]),
    (["train", "--nonsense", "1"], ["--nonsense"]),
    (["train", "--task.d", "abc"], [r"task\.d", "abc"]),
    (["train", "--preset", "nope"], ["preset", "nope", "von-oswald"]),
    (["train", "--config", "missing.json"], ["config", "missing.json"]),
    (["train", "--config", "bad.json"], [r"task\.foo: unknown field of task 'linear'; allowed: "]),
    (["train", "--config", "list.json"], ["error: config: ", "object"]),
    (["train", "--config", "invalid.json"], ["error: config: ", "invalid.json", "JSON"]),
    (["train", "--config", "adir"], ["error: config: ", "adir"]),
    (["train", "--preset", "gaussian", "--config", "bad.json"], ["--preset", "--config"]),
    (["train", "--task.d"], [r"task\.d"]),
    (["train", "--train.beta2", "1.0"], [r"error: train\.beta2: ", r"\[0, 1\)"]),
    (["train", "--train.device", "tpu"], [r"train\.device", "cpu"]),
    (["train", "--eval.alphas"], [r"error: eval\.alphas: ", "non-empty"]),
    (["train", "--name", "../escape"], ["error: name: ", "/"]),
    (["train", "--force", "--resume"], ["--force", "--resume"]),
    (["train", "--train.interventions", "zero"], [r"error: train\.interventions: ", "KIND:HOOK"]),
    (
        ["train", "--task.name", "icl_classification", "--model.name", "attn_only", *IV_UNKNOWN],
        [r"error: train\.interventions: unknown hook point 'blocks\.7\.attn\.hook_z'; choose from: blocks\.0"],
    ),
    (["compare", "/nonexistent"], ["/nonexistent"]),
    (["compare"], ["compare", "PATH|run"]),
    (["reproduce", "von-oswald", "--layers", "0"], ["layers", ">= 1"]),
    (["reproduce", "von-oswald", "--layers", "x"], ["layers"]),
    (["reproduce", "von-oswald", "--scale", "huge"], ["scale", "huge", "smoke", "paper"]),
    (["reproduce", "nope"], ["nope", "von-oswald"]),
    (["frobnicate"], ["command", "frobnicate", "train"]),
]


@pytest.mark.parametrize(("argv", "mentions"), ERRORS, ids=[" ".join(a) for a, _ in ERRORS])
def test_user_error_one_line_exit_2(in_tmp, capsys, argv, mentions):
    code, out, err = _run(capsys, argv)
    _assert_user_error(code, err, *mentions)
    assert out == ""
    assert not (in_tmp / "runs").exists()  # nothing was created


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_fails_before_creating_run(in_tmp, capsys):
    code, _, err = _run(capsys, ["train", *TINY, "--out", "r", "--train.device", "cuda"])
    _assert_user_error(code, err, r"train\.device", "cpu")
    assert not (in_tmp / "r").exists()


def test_console_script_subprocess(tmp_path):
    script = Path(sys.executable).parent / "iclab"
    assert script.exists(), script
    proc = subprocess.run(
        [str(script), "train", "--task.d", "0"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: task.d: ") and ">= 1" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_no_command(capsys):
    code, out, _ = _run(capsys, [])
    assert code == 2 and "iclab train" in out


def test_presets(capsys):
    code, out, err = _run(capsys, ["presets"])
    assert code == 0 and err == ""
    names = [line.split()[0] for line in out.splitlines()]
    assert names == list(PRESETS)
    assert "von-oswald" in names


def test_train_help(capsys):
    code, out, err = _run(capsys, ["train", "--help"])
    assert code == 0 and err == ""
    for option in ("--preset", "--config", "--force", "--resume", "--task.d", "--train.no-progress"):
        assert option in out, option


@pytest.mark.parametrize("command", ["compare", "reproduce"])
def test_command_help(capsys, command):
    code, out, _ = _run(capsys, [command, "--help"])
    assert code == 0 and f"iclab {command}" in out


# ------------------------------------------------------------------------------------ train / force / resume


def _metrics(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / "metrics.parquet")


def test_train_force_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "tiny"
    args = ["train", *TINY, "--out", str(run)]

    code, out, err = _run(capsys, args)
    assert code == 0, err
    assert "trained" in out and err == ""
    record = json.loads((run / "config.json").read_text())
    cfg = config_from_dict(record["config"])
    assert cfg.task.d == 3 and cfg.task.n_points == 5 and cfg.train.steps == 20 and cfg.train.progress is False
    assert cfg == ExperimentConfig().replace(
        task={"d": 3, "n_points": 5},
        train={"steps": 20, "batch_size": 64, "eval_every": 10, "checkpoint_every": 10, "progress": False},
        eval={"n_prompts": 200},
    )
    assert record["seed"] == 0
    assert sorted(_metrics(run)["step"]) == [0, 10, 20]
    assert sorted((run / "checkpoints").glob("step_*.safetensors"))
    assert not list((run / "checkpoints").glob("*.tmp")) and not list(run.glob(".*.tmp"))

    # Again without --force: refused, nothing touched.
    before = {p: p.read_bytes() for p in (run / "metrics.parquet", run / "config.json")}
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    code, out, err = _run(capsys, args)
    _assert_user_error(code, err, "already exists", "--force")
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ckpts

    # --force: trained again from scratch, same result (CPU is deterministic).
    code, _, err = _run(capsys, [*args, "--force"])
    assert code == 0, err
    first = _metrics(run)
    assert sorted(first["step"]) == [0, 10, 20]
    pd.testing.assert_series_equal(
        first["eval_half_mse"], pd.read_parquet(io.BytesIO(before[run / "metrics.parquet"]))["eval_half_mse"]
    )

    # --resume with more steps continues to 40.
    code, _, err = _run(capsys, [*_with(args, "--train.steps", "40"), "--resume"])
    assert code == 0, err
    resumed = _metrics(run)
    assert sorted(resumed["step"]) == [0, 10, 20, 30, 40]
    assert json.loads((run / "config.json").read_text())["config"]["train"]["steps"] == 40

    # ... bit-identical to 40 steps from scratch (metrics other than wall time).
    fresh_dir = tmp_path / "fresh"
    code, _, err = _run(capsys, ["train", *_with(TINY, "--train.steps", "40"), "--out", str(fresh_dir)])
    assert code == 0, err
    fresh = _metrics(fresh_dir)
    cols = [c for c in fresh.columns if c != "wall_time_s"]
    pd.testing.assert_frame_equal(
        resumed.sort_values("step").reset_index(drop=True)[cols], fresh.sort_values("step").reset_index(drop=True)[cols]
    )

    # --resume with a changed task is refused, naming the field; the run is untouched.
    before = {p: p.read_bytes() for p in (run / "metrics.parquet", run / "config.json")}
    code, _, err = _run(capsys, [*_with(args, "--task.d", "4"), "--resume"])
    _assert_user_error(code, err, r"task\.d")
    assert {p: p.read_bytes() for p in before} == before

    # --config from the run's own config.json reproduces it elsewhere.
    code, _, err = _run(
        capsys, ["train", "--config", str(run / "config.json"), "--train.steps", "20", "--out", str(tmp_path / "c")]
    )
    assert code == 0, err
    again = json.loads((tmp_path / "c" / "config.json").read_text())["config"]
    assert again == config_to_dict(cfg)


# ------------------------------------------------------------------------------------------------- compare


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("compare") / "tiny"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    return run


def test_compare_gd(tiny_run, tmp_path, capsys):
    capsys.readouterr()
    summary_path = tmp_path / "summary.json"
    code, out, err = _run(capsys, ["compare", str(tiny_run), "--against", "gd", "--json", str(summary_path)])
    assert code == 0, err
    for col in ("model_cos", "model_half_mse", "reference_half_mse", "preds_diff"):
        assert col in out, col
    assert "gd" in out and "tiny" in out
    summary = json.loads(summary_path.read_text())
    assert summary["against"].startswith("gd")
    assert -1.0 <= summary["model_cos"] <= 1.0
    assert "weight_match" in summary


def test_compare_ols(tiny_run, capsys):
    capsys.readouterr()
    code, out, err = _run(capsys, ["compare", str(tiny_run), "--against", "ols"])
    assert code == 0, err
    assert "model_cos" in out and "ols" in out


@pytest.mark.parametrize(
    ("against", "mentions"),
    [
        ("ridge:-1", ["against", "ridge", "positive"]),
        ("ridge:abc", ["against", "ridge"]),
        ("ridge:0", ["against", "positive"]),
        ("nope", ["against", "nope", "gd", "ols", "ridge"]),
    ],
)
def test_compare_bad_reference(tiny_run, capsys, against, mentions):
    capsys.readouterr()
    code, _, err = _run(capsys, ["compare", str(tiny_run), "--against", against])
    _assert_user_error(code, err, *mentions)


def test_unwritable_output_paths_are_one_line_errors(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = main(["reproduce", "von-oswald", "--out", str(blocker / "sub"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
