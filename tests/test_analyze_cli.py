"""`iclab analyze RUN` as a user runs it: every analysis writes its JSON and figure into the run."""

import json

import pytest

from iclab.cli import main


@pytest.fixture(scope="module")
def lsa_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("analyze") / "lsa"
    argv = ["train", "--task.d", "4", "--task.n-points", "8", "--train.steps", "300", "--train.batch-size", "256"]
    argv += ["--train.lr", "1e-2", "--eval.n-prompts", "200", "--train.eval-every", "100"]
    argv += ["--train.checkpoint-every", "300", "--train.no-progress", "--out", str(run)]
    assert main(argv) == 0
    return run


def test_analyze_writes_each_analysis(lsa_run, capsys):
    capsys.readouterr()
    assert main(["analyze", str(lsa_run), "--what", "implicit,probes,weights,alignment", "--n-prompts", "600"]) == 0
    text = capsys.readouterr().out
    assert "implicit: R²" in text and "probes:" in text and "weights: layer 0" in text and "alignment:" in text
    out = lsa_run / "analysis"
    implicit = json.loads((out / "implicit.json").read_text())
    # a trained one-layer LSA answers linearly in the query and agrees with one tuned GD step
    assert implicit["r2"]["mean"] > 0.999
    assert implicit["references"]["gd:1"]["cos"]["mean"] > 0.95
    assert (out / "figures" / "implicit.png").is_file() and (out / "figures" / "probes.png").is_file()
    assert (out / "figures" / "weights.png").is_file() and (out / "figures" / "patterns.png").is_file()
    weights = json.loads((out / "weights.json").read_text())
    assert len(weights["layers"]) == 1 and len(weights["layers"][0]["KQ"]) == 1  # one layer, one head
    assert set(json.loads((out / "summary.json").read_text())) >= {"implicit", "probes", "weights"}


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--what", "tarot"], "error: what: unknown analysis 'tarot'; choose one of:"),
        (["--n-prompts", "5"], "error: n_prompts: must be an integer >= 20"),
    ],
)
def test_analyze_bad_input_is_one_line(lsa_run, capsys, argv, message):
    capsys.readouterr()
    assert main(["analyze", str(lsa_run), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert err.count("\n") == 1


def test_analyze_missing_run_is_one_line(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_analyze_alignment_of_one_layer_lsa_is_one_gd_step(lsa_run, tmp_path):
    assert main(["analyze", str(lsa_run), "--what", "alignment", "--n-prompts", "600", "--out", str(tmp_path)]) == 0
    alignment = json.loads((tmp_path / "alignment.json").read_text())
    assert alignment["best_gd"] == [1]  # von Oswald: one trained LSA layer is one GD step


def test_analyses_a_model_cannot_answer_are_one_line_errors(tmp_path, capsys):
    run = tmp_path / "ssm"
    argv = ["train", "--model.name", "ssm", "--model.width", "8", "--task.d", "3", "--train.steps", "2"]
    argv += ["--train.eval-every", "1", "--train.checkpoint-every", "2", "--eval.n-prompts", "16"]
    assert main([*argv, "--train.no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    for what in ("weights", "alignment"):
        assert main(["analyze", str(run), "--what", what, "--n-prompts", "40"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: what: '{what}' reads") and err.count("\n") == 1, err


@pytest.mark.parametrize("what", ["implicit", "alignment"])
def test_scalar_analyses_refuse_a_vector_target_run_in_one_line(tmp_path, capsys, what):
    argv = ["train", "--task.name", "softmax_regression", "--task.d", "3", "--task.n-points", "6"]
    argv += ["--model.name", "gpt", "--model.width", "16", "--model.max-points", "8", "--train.steps", "2"]
    argv += [
        "--train.eval-every",
        "1",
        "--train.checkpoint-every",
        "2",
        "--eval.n-prompts",
        "16",
        "--train.no-progress",
    ]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["analyze", str(tmp_path / "run"), "--what", what, "--n-prompts", "50"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vector targets" in err[0] and what in err[0]
