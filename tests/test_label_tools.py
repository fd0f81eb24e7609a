"""`iclab eval`, `compare` and `analyze` on class-label tasks (icl_classification), as a user runs them: accuracy
per held-out split against closed forms (the ideal induction head is right on every in-context split, the class-mean
lookup on the in-weights one, chance scores 1/L), trained label runs as learners, and one-line refusals."""

from __future__ import annotations

import json
import math

import pytest

from iclab.algorithms.icl_classification import binomial_se
from iclab.cli import main

B = 400  # prompts per split, one query each
L = 8
TASK = ["--task.name", "icl_classification", "--task.d", "16", "--task.n-classes", "256", "--task.n-labels", str(L)]
TASK += ["--task.within-class-noise", "0.05"]  # ε small: an item's nearest neighbour is of its class
RUN_TASK = ["--task.name", "icl_classification", "--task.d", "8", "--task.n-classes", "1024", "--task.n-labels", "4"]


def _one_line_error(capsys, argv: list[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    out = tmp_path_factory.mktemp("label-eval")
    path = out / "r.json"
    argv = ["eval", *TASK, "--learners", "induction,lookup,chance", "--n-prompts", str(B), "--json", str(path)]
    assert main([*argv, "--out", str(out / "e")]) == 0
    return json.loads(path.read_text()), out / "e"


def _acc(results, split, learner):
    s = results["splits"][split][learner]
    return s["accuracy"], s["accuracy_se"]


def test_reference_learners_score_their_closed_forms(references):
    results, out = references
    assert results["metric"] == "accuracy" and results["n_labels"] == L
    assert list(results["splits"]) == ["eval", "icl", "icl_permuted", "iwl"]
    for split in ("eval", "icl", "icl_permuted"):  # the query's class is in the context: copy its label
        assert _acc(results, split, "induction") == (1.0, 0.0)
    for split in ("eval", "iwl"):  # trained classes with their own labels: the class mean says it
        assert _acc(results, split, "lookup") == (1.0, 0.0)
    chance_se = binomial_se(1 / L, B)
    for split in results["splits"]:
        acc, se = _acc(results, split, "chance")
        assert abs(acc - 1 / L) < 4 * chance_se, (split, acc)
        assert math.isclose(se, binomial_se(acc, B))  # one query per prompt: the binomial standard error
    # the other strategy is at chance where its cue is absent: lookup on novel / permuted, induction on iwl
    for split, learner in (("icl", "lookup"), ("icl_permuted", "lookup"), ("iwl", "induction")):
        assert abs(_acc(results, split, learner)[0] - 1 / L) < 4 * chance_se, (split, learner)
    assert results["splits"]["icl"]["chance"]["cross_entropy"] is None  # no logits, no cross-entropy
    assert (out / "figures" / "eval_splits.png").stat().st_size > 10_000 and (out / "results.json").is_file()


@pytest.fixture(scope="module")
def softmax_run(tmp_path_factory):
    """A one-layer softmax run trained 80 steps on a bursty task of 1024 classes (about 2 s)."""
    run = tmp_path_factory.mktemp("label-run") / "sm"
    argv = ["train", *RUN_TASK, "--model.name", "softmax", "--train.steps", "80", "--train.batch-size", "32"]
    argv += ["--train.lr", "1e-2", "--eval.n-prompts", "200", "--train.eval-every", "40", "--train.no-progress"]
    assert main([*argv, "--out", str(run)]) == 0
    return run


def test_a_trained_label_run_loads_and_evaluates(softmax_run, tmp_path, capsys):
    capsys.readouterr()
    path = tmp_path / "r.json"
    argv = ["eval", *RUN_TASK, "--learners", f"induction,chance,{softmax_run}", "--n-prompts", "200"]
    assert main([*argv, "--json", str(path), "--out", str(tmp_path / "e"), "--metric", "cross_entropy"]) == 0
    text = capsys.readouterr().out
    assert "| sm " in text and "cross-entropy" in text
    sm = json.loads(path.read_text())["splits"]
    assert sm["icl"]["sm"]["accuracy"] > 0.5  # chance 1/4: it learnt to copy labels in context
    assert sm["icl"]["sm"]["cross_entropy"] < math.log(4) < sm["iwl"]["sm"]["cross_entropy"]
    assert abs(sm["iwl"]["sm"]["accuracy"] - 0.25) < 4 * binomial_se(0.25, 200)  # no MLP: nothing in weights


def test_compare_a_label_run_with_the_label_references(softmax_run, tmp_path, capsys):
    import pandas as pd

    capsys.readouterr()
    path = tmp_path / "c.json"
    assert main(["compare", str(softmax_run), "--json", str(path)]) == 0
    text = capsys.readouterr().out
    assert "| induction " in text and "| lookup " in text and "| chance " in text and "cross-entropy" in text
    splits = json.loads(path.read_text())["splits"]
    # the run's own held-out sets (eval.seed): the accuracies the trainer logged at its last evaluation
    last = pd.read_parquet(softmax_run / "metrics.parquet").iloc[-1]
    for split in ("eval", "icl", "icl_permuted", "iwl"):
        assert math.isclose(splits[split]["sm"]["accuracy"], last[f"{split}_accuracy"], abs_tol=1.5 / 200), split
    assert splits["icl"]["induction"]["accuracy"] == 1.0 and splits["iwl"]["lookup"]["accuracy"] == 1.0


def test_analyze_a_label_run_reads_the_query_attention(softmax_run, tmp_path, capsys):
    capsys.readouterr()
    assert main(["analyze", str(softmax_run), "--n-prompts", "200", "--out", str(tmp_path / "a")]) == 0
    assert "induction: best head layer 0 head 0" in capsys.readouterr().out
    summary = json.loads((tmp_path / "a" / "induction.json").read_text())
    # uniform attention puts B/N = 2/8 on the query's class; the trained head looks at it
    assert math.isclose(summary["uniform"]["induction"][0][0], 0.25)
    assert summary["best_head"]["induction"] > 0.5
    assert (tmp_path / "a" / "figures" / "induction.png").is_file()


@pytest.fixture(scope="module")
def other_runs(tmp_path_factory):
    """A regression run (d = 8) and an attn_only label run with L = 4 (4 steps each)."""
    root = tmp_path_factory.mktemp("other-runs")
    small = ["--train.steps", "4", "--train.batch-size", "16", "--eval.n-prompts", "32", "--train.no-progress"]
    assert main(["train", "--task.d", "8", "--task.n-points", "8", *small, "--out", str(root / "lin")]) == 0
    argv = ["train", *RUN_TASK, "--model.name", "attn_only", "--model.width", "16", *small]
    assert main([*argv, "--out", str(root / "ao")]) == 0
    return root


def test_a_tiny_interleaved_label_run_evaluates_and_analyzes(other_runs, tmp_path, capsys):
    capsys.readouterr()
    argv = ["eval", *RUN_TASK, "--learners", f"{other_runs / 'ao'}", "--n-prompts", "50", "--out", str(tmp_path / "e")]
    assert main(argv) == 0
    assert "| ao " in capsys.readouterr().out
    assert main(["analyze", str(other_runs / "ao"), "--n-prompts", "50", "--out", str(tmp_path / "a")]) == 0
    summary = json.loads((tmp_path / "a" / "induction.json").read_text())
    assert summary["layout"].startswith("interleaved") and set(summary["scores"]) >= {"induction", "previous_token"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--metric", "nmse", "--learners", "induction"], "metric: 'nmse' measures real-valued predictions"),
        (["--learners", "ols"], "learners: 'ols' predicts real values; task 'icl_classification' has class labels"),
        (["--shifts", "scale_x:2", "--learners", "induction"], "shifts: task 'icl_classification' has class labels"),
        (["--learners", "{lin}"], "was trained on real targets, the task 'icl_classification' has class labels"),
        (["--task.n-labels", "5", "--learners", "{ao}"], "trained on class labels (L = 4), the task"),
        (["--task.d", "6", "--learners", "{ao}"], "was trained with d = 8, the task has d = 6"),
    ],
    ids=["metric", "regression-learner", "shift", "regression-run", "other-L", "other-d"],
)
def test_eval_bad_label_combinations_are_one_line(other_runs, tmp_path, capsys, argv, message):
    argv = [a.format(lin=other_runs / "lin", ao=other_runs / "ao") for a in argv]
    _one_line_error(capsys, ["eval", *RUN_TASK, *argv, "--out", str(tmp_path / "e")], message)


def test_label_learners_and_runs_are_refused_on_a_regression_task(other_runs, tmp_path, capsys):
    out = ["--out", str(tmp_path / "e")]
    _one_line_error(capsys, ["eval", "--d", "8", "--learners", "induction", *out], "'induction' predicts class labels")
    _one_line_error(capsys, ["eval", "--d", "8", "--learners", str(other_runs / "ao"), *out], "has real targets")
    _one_line_error(capsys, ["eval", "--d", "8", "--metric", "accuracy", *out], "'accuracy' scores class labels")


def test_compare_and_analyze_refuse_what_a_label_run_cannot_answer(other_runs, capsys):
    ao, lin = str(other_runs / "ao"), str(other_runs / "lin")
    _one_line_error(capsys, ["compare", ao, "--against", "gd"], "'gd' is not a label reference")
    _one_line_error(capsys, ["analyze", ao, "--what", "implicit"], "'implicit' reads real-valued predictions")
    _one_line_error(capsys, ["analyze", lin, "--what", "induction"], "'induction' reads runs of class-label tasks")


def test_label_task_defaults_reddy_task_reference_learners_and_accuracy(tmp_path, capsys):
    """`iclab eval --task.name icl_classification` alone: the family's own defaults (D = 63, L = 32), the label
    references, accuracy."""
    path = tmp_path / "r.json"
    assert main(["eval", "--task.name", "icl_classification", "--n-prompts", "100", "--json", str(path),
                 "--out", str(tmp_path / "e")]) == 0  # fmt: skip
    results = json.loads(path.read_text())
    assert results["metric"] == "accuracy" and results["task"]["d"] == 63 and results["n_labels"] == 32
    assert list(results["splits"]["icl"]) == ["induction", "lookup", "chance"]


def test_the_other_classes_note_names_only_fields_that_change_the_classes(tmp_path):
    """A run trained on the same classes but drawn otherwise (p_bursty, p_novel, burstiness) gets no note; one
    trained on other classes (n_classes, class_seed) is named with the differing fields."""
    from iclab.config import ExperimentConfig, config_to_dict
    from iclab.experiments.eval_run import _other_classes_note
    from iclab.models.attn_only import AttnOnlyConfig
    from iclab.runs import RunDir
    from iclab.tasks.icl_classification import ICLClassificationConfig

    task = ICLClassificationConfig(d=8, n_classes=32, n_labels=8)
    runs = {
        "drawn": ICLClassificationConfig(d=8, n_classes=32, n_labels=8, p_bursty=0.0, p_novel=0.5, burstiness=4),
        "other": ICLClassificationConfig(d=8, n_classes=64, n_labels=8, class_seed=3),
    }
    for name, run_task in runs.items():
        RunDir.create(tmp_path / name, config_to_dict(ExperimentConfig(task=run_task, model=AttnOnlyConfig())))
    assert _other_classes_note(task, [str(tmp_path / "drawn")]) == []
    (line,) = _other_classes_note(task, [str(tmp_path / "other")])
    assert "(class_seed, n_classes)" in line
