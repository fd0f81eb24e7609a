"""User errors (iclab.errors.UserError) exit 2 with one line; any other exception is a bug: exit 1, one line naming
the log file that holds its traceback (under the run or output directory when the command has one)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import iclab.cli
from iclab.algorithms.registry import LearnerSpecError
from iclab.cli import main
from iclab.config import ConfigError
from iclab.errors import (
    NoCheckpointError,
    NotARunError,
    ResumeError,
    RunError,
    RunExistsError,
    RunNotFoundError,
    SpecError,
    UsageError,
    UserError,
)
from iclab.runs import RunDir

TINY = ["--task.d", "3", "--task.n-points", "5", "--train.steps", "4", "--train.batch-size", "32",
        "--train.eval-every", "2", "--train.checkpoint-every", "2", "--eval.n-prompts", "32",
        "--train.no-progress"]  # fmt: skip


def _one_line(capsys, code: int, expected: int) -> str:
    err = capsys.readouterr().err
    assert code == expected, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), repr(err)
    assert "Traceback" not in err
    return lines[0]


def _log_named(line: str) -> Path:
    match = re.search(r"traceback in (\S+\.log)$", line)
    assert match, line
    return Path(match.group(1))


@pytest.fixture
def tiny_run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("errors") / "tiny"
    assert main(["train", *TINY, "--out", str(path)]) == 0
    return path


# ---------------------------------------------------------------------------------------------- the hierarchy


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (ConfigError, ValueError),
        (SpecError, ValueError),
        (LearnerSpecError, ValueError),
        (ResumeError, ValueError),
        (NotARunError, ValueError),
        (RunNotFoundError, FileNotFoundError),
        (NoCheckpointError, FileNotFoundError),
        (RunExistsError, RunError),
        (UsageError, UserError),
    ],
)
def test_user_errors_keep_their_builtin_base(cls, builtin):
    assert issubclass(cls, UserError) and issubclass(cls, builtin)


def test_run_errors_are_user_errors(tmp_path):
    with pytest.raises(RunNotFoundError):
        RunDir.open(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(NotARunError, match="not valid JSON"):
        RunDir.open(tmp_path / "bad")
    (tmp_path / "bad" / "config.json").write_text("[1]")
    with pytest.raises(NotARunError, match="JSON object"):
        RunDir.open(tmp_path / "bad")
    run = RunDir.create(tmp_path / "run", {"train": {"steps": 1}})
    with pytest.raises(NoCheckpointError):
        run.load_checkpoint()
    with pytest.raises(ResumeError, match=r"'train\.lr'"):
        RunDir.create(tmp_path / "run", {"train": {"steps": 1, "lr": 1}}, resume=True)
    with pytest.raises(ResumeError, match="mutually exclusive"):
        RunDir.create(tmp_path / "run", {}, force=True, resume=True)


# ------------------------------------------------------------------------------- user errors: exit 2, one line

USER_ERRORS = [
    (["train", "--task.d", "0"], r"task\.d"),
    (["compare", "nope"], "no iclab run at nope"),
    (["reproduce", "von-oswald", "--layers", "0"], "layers"),
    (["eval", "--shifts", "scale_x:-1"], r"shift 'scale_x:-1'"),
    (["eval", "--learners", "ridge:x"], "learner 'ridge:x'"),
    (["eval", "--metric", "rmse"], "metric: unknown value 'rmse'"),
    (["analyze", "nope"], "no iclab run at nope"),
    (["bench", "--repeats", "0"], "repeats"),
    (["learners", "--nonsense"], None),
    (["presets", "--nonsense"], None),
]


@pytest.mark.parametrize(("argv", "mention"), USER_ERRORS, ids=[" ".join(a) for a, _ in USER_ERRORS])
def test_user_error_of_each_command_is_one_line_exit_2(tmp_path, monkeypatch, capsys, argv, mention):
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    if mention is None:  # learners and presets take no options and ignore them
        assert code == 0
        return
    line = _one_line(capsys, code, 2)
    assert re.search(mention, line), line
    assert not (tmp_path / "runs").exists()  # no error log for a user error


def test_run_errors_through_the_cli(tiny_run, tmp_path, capsys):
    # --resume with a different config
    line = _one_line(capsys, main(["train", *TINY, "--train.lr", "0.5", "--out", str(tiny_run), "--resume"]), 2)
    assert "train.lr" in line
    # a config.json that is not a run's
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    line = _one_line(capsys, main(["analyze", str(tmp_path / "broken")]), 2)
    assert "not an iclab run" in line
    # a run that never reached a checkpoint
    RunDir.create(tmp_path / "empty", json.loads((tiny_run / "config.json").read_text())["config"])
    line = _one_line(capsys, main(["compare", str(tmp_path / "empty"), "--against", "ols"]), 2)
    assert "no checkpoints" in line


# ------------------------------------------------------------------------- bugs: exit 1, traceback in a log file


def test_bug_during_training_logs_under_the_run(tmp_path, monkeypatch, capsys):
    import iclab.training.trainer as trainer

    def broken(*args, **kwargs):
        raise ValueError("deep inside the trainer")

    monkeypatch.setattr(trainer, "member_half_mse", broken)
    run = tmp_path / "run"
    line = _one_line(capsys, main(["train", *TINY, "--out", str(run)]), 1)
    assert "internal error in iclab train" in line and "ValueError: deep inside the trainer" in line
    log = _log_named(line)
    assert log.parent == run / "logs" and re.fullmatch(r"error-\d{8}T\d{6}Z\.log", log.name), log
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text
    assert "ValueError: deep inside the trainer" in text and "command: iclab train" in text
    # The log does not stop a rerun of the same run directory.
    monkeypatch.undo()
    code = main(["train", *TINY, "--out", str(run), "--force"])
    assert code == 0, capsys.readouterr().err


def test_bug_in_a_learner_during_eval_logs_to_runs_errors(tmp_path, monkeypatch, capsys):
    from iclab.algorithms.least_squares import OLS

    def broken(self, *args, **kwargs):
        raise RuntimeError("a learner broke\nover two lines")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(OLS, "predict_prefixes", broken)
    argv = ["eval", "--d", "3", "--n-points", "5", "--n-prompts", "8", "--n-boot", "5", "--learners", "ols"]
    line = _one_line(capsys, main([*argv, "--out", "o"]), 1)
    assert "internal error in iclab eval (RuntimeError: a learner broke over two lines)" in line
    log = _log_named(line)
    assert log.parent == Path("runs") / "errors"  # the output directory did not exist yet
    assert "RuntimeError: a learner broke" in (tmp_path / log).read_text()
    # An existing output directory takes the log.
    (tmp_path / "o2").mkdir()
    log = _log_named(_one_line(capsys, main([*argv, "--out", "o2"]), 1))
    assert log.parent == Path("o2") / "logs" and "Traceback" in (tmp_path / log).read_text()


def test_bug_during_analysis_logs_under_the_run(tiny_run, monkeypatch, capsys):
    import iclab.analysis.implicit as implicit

    def broken(*args, **kwargs):
        raise KeyError("w")

    monkeypatch.setattr(implicit, "implicit_summary", broken)
    line = _one_line(capsys, main(["analyze", str(tiny_run), "--what", "implicit", "--n-prompts", "40"]), 1)
    log = _log_named(line)
    assert log.parent == tiny_run / "logs" and "KeyError: 'w'" in log.read_text()


def test_bug_during_a_reproduction_logs_under_its_output(tmp_path, monkeypatch, capsys):
    import iclab.experiments.driver as driver

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(driver, "train_run", broken)
    out = tmp_path / "repro"
    line = _one_line(capsys, main(["reproduce", "von-oswald", "--out", str(out), "--no-progress"]), 1)
    log = _log_named(line)
    assert log.parent == out / "logs" and "ZeroDivisionError" in log.read_text()


def test_two_bugs_in_one_second_get_two_logs(tmp_path, monkeypatch, capsys):
    def broken(_args):
        raise RuntimeError("bench broke")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(iclab.cli, "_cmd_bench", broken)
    logs = {_log_named(_one_line(capsys, main(["bench"]), 1)) for _ in range(3)}
    assert len(logs) == 3 and all(log.parent == Path("runs") / "errors" for log in logs)


def test_unwritable_log_prints_the_traceback_and_no_second_one(tmp_path, monkeypatch, capsys):
    def broken(_args):
        raise RuntimeError("bench broke")

    (tmp_path / "file").write_text("")  # a file where the log directory belongs
    monkeypatch.setattr(iclab.cli, "_cmd_bench", broken)
    monkeypatch.setattr(iclab.cli, "_error_log_dirs", lambda: [tmp_path / "file" / "logs"])
    assert main(["bench"]) == 1
    err = capsys.readouterr().err
    assert err.count("Traceback") == 1 and "During handling" not in err
    assert err.splitlines()[-1].startswith("error: internal error in iclab bench (RuntimeError: bench broke); could")


def test_failures_a_user_can_fix_are_user_errors(tmp_path, monkeypatch, capsys):
    from iclab.algorithms.registry import make_learner
    from iclab.config import task_config
    from iclab.tasks import make_task

    with pytest.raises(LearnerSpecError, match="scalar targets"):
        make_learner("gd:1", make_task(task_config(name="softmax_regression", d=3, n_points=6)))
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--task.name", "softmax_regression", "--model.name", "gpt", "--model.width", "8"]
    argv += ["--model.max-points", "8", *TINY, "--out", "vec"]
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    line = _one_line(capsys, main(["compare", "vec"]), 2)
    assert "vector targets" in line and "iclab eval" in line
    line = _one_line(capsys, main(["eval", "--d", "3", "--n-points", "5", "--learners", "vec", "--out", "o"]), 2)
    assert "run 'vec' was trained on vector targets (k = 3)" in line
    argv = ["eval", "--task", "softmax_regression", "--d", "3", "--n-points", "5", "--n-prompts", "8"]
    line = _one_line(capsys, main([*argv, "--learners", "vec", "--shifts", "length:20", "--out", "o"]), 2)
    assert "model.max_points" in line
    assert not (tmp_path / "runs").exists()  # no error logs: none of these is a bug


def test_compare_and_analyze_on_models_they_only_partly_read(tmp_path, capsys):
    """compare matches weights of plain LSA runs only (softmax runs used to crash in the match); alignment refuses a
    variance-head model in one line (it used to fail inside layer_activations)."""
    soft, var = tmp_path / "softmax", tmp_path / "var"
    assert main(["train", *TINY, "--model.name", "softmax", "--out", str(soft)]) == 0
    assert main(["train", *TINY, "--model.name", "lsa", "--model.variance-head", "--out", str(var)]) == 0
    capsys.readouterr()
    assert main(["compare", str(soft)]) == 0, capsys.readouterr().err
    line = _one_line(capsys, main(["analyze", str(var), "--what", "alignment", "--n-prompts", "40"]), 2)
    assert "variance_head" in line
