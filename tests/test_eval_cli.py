"""`iclab eval` as a user runs it: Garg's linear setting with least squares, averaging and 3-NN, trained runs as
learners, shifts, and one-line errors."""

import json

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsRegressor

from iclab.cli import main
from iclab.config import task_config
from iclab.experiments.eval_run import eval_prompts
from iclab.tasks import make_task

D, T, B = 20, 41, 1280


@pytest.fixture(scope="module")
def garg(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    path = out / "garg.json"
    argv = ["eval", "--task", "linear", "--d", "20", "--n-points", "41", "--learners", "ols,averaging,knn:3"]
    argv += ["--json", str(path), "--out", str(out / "run"), "--n-boot", "200"]
    assert main(argv) == 0
    return json.loads(path.read_text()), out


def _curve(results, name, shift="none"):
    c = results["shifts"][shift]["curves"][name]
    return np.array(c["mean"]), np.array(c["lo"]), np.array(c["hi"])


def test_garg_least_squares_and_averaging_curves(garg):
    results, out = garg
    assert results["n_prompts"] == B and results["metric"] == "nmse"
    k = np.arange(T)
    # Least squares: (1 − k/d) before k = d, 0 after; averaging: (d + 1)/k (x, w ~ N(0, I), noiseless).
    ols, lo, hi = _curve(results, "ols")
    expected = np.where(k < D, 1 - k / D, 0.0)
    se = (hi - lo) / (2 * 1.96)  # the bootstrap band's width gives the standard error
    assert np.all(np.abs(ols - expected) <= 4 * se + 1e-6)
    avg, lo, hi = _curve(results, "averaging")
    se = (hi - lo) / (2 * 1.96)
    assert np.all(np.abs(avg[1:] - (D + 1) / k[1:]) <= 4 * se[1:])
    assert (out / "run" / "figures" / "eval_none.png").stat().st_size > 10_000


def test_garg_knn_curve_matches_scikit_learn(garg):
    # 3-NN has no simple closed form: its curve must equal scikit-learn's KNeighborsRegressor on the same prompts.
    results, _ = garg
    knn, _, _ = _curve(results, "knn:3")
    task = make_task(task_config("linear", d=D, n_points=T, x_dist="gaussian", x_scale=1.0))
    p = eval_prompts(task, B, 0, torch.float32)
    X, Y = p.x.double().numpy(), p.y.double().numpy()
    sq = np.zeros((B, T))
    for b in range(B):
        sq[b, 0] = Y[b, 0] ** 2
        for t in range(1, T):
            reg = KNeighborsRegressor(n_neighbors=min(3, t)).fit(X[b, :t], Y[b, :t])
            sq[b, t] = (reg.predict(X[b, t : t + 1])[0] - Y[b, t]) ** 2
    np.testing.assert_allclose(knn, sq.mean(0) / D, rtol=1e-4)


def test_eval_trained_run_and_shift(tmp_path, capsys):
    run = tmp_path / "lsa"
    argv = ["train", "--task.d", "4", "--task.n-points", "8", "--train.steps", "20", "--train.batch-size", "64"]
    argv += ["--eval.n-prompts", "100", "--train.eval-every", "10", "--train.checkpoint-every", "20"]
    argv += ["--train.no-progress", "--out", str(run)]
    assert main(argv) == 0
    capsys.readouterr()
    argv = ["eval", "--d", "4", "--n-points", "8", "--x-dist", "uniform", "--x-scale", "0.5", "--n-prompts", "64"]
    argv += ["--learners", f"ols,{run}", "--shifts", "none,scale_x:2", "--out", str(tmp_path / "e")]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "shift scale_x:2" in text and "| lsa " in text


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--learners", "ols,nope"], "error: learner 'nope': unknown name 'nope'; choose one of:"),
        (["--metric", "rmse"], "error: metric: unknown value 'rmse'"),
        (["--shifts", "tilt"], "error: shift: unknown value 'tilt'"),
        (["--d", "0"], "error: task.d: must be an integer >= 1, got 0"),
        (["--n-prompts", "0"], "error: n_prompts: must be an integer >= 1, got 0"),
    ],
)
def test_eval_bad_input_is_one_line(tmp_path, capsys, argv, message):
    assert main(["eval", "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert err.count("\n") == 1
