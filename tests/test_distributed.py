"""Data-parallel training (iclab.training.distributed): a run trained by two torchrun processes (gloo, CPU) equals the
same run trained by one process with the same global batch, and only rank 0 writes it."""

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from iclab.runs import RunDir

ARGS = [
    "--task.d", "3", "--task.n-points", "6", "--train.steps", "60", "--train.batch-size", "64",
    "--train.eval-every", "10", "--train.checkpoint-every", "30", "--eval.n-prompts", "200",
    "--train.dtype", "float64", "--model.layers", "2",
]  # fmt: skip


def _run(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=os.environ)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    single, parallel = tmp_path / "single", tmp_path / "ddp"
    _run([sys.executable, "-m", "iclab", "train", *ARGS, "--out", str(single)])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = _run([*torchrun, "-m", "iclab", "train", *ARGS, "--out", str(parallel)])
    assert done.stdout.count("trained experiment") == 1  # rank 0 reports; rank 1 stays quiet
    want, _ = RunDir.open(single).load_checkpoint()
    got, meta = RunDir.open(parallel).load_checkpoint()
    assert meta["step"] == 60 and set(got) == set(want)
    # The same data and the same mean gradient, summed in another order: float64 rounding (≈ 1e-16 relative per
    # step) grows over 60 Adam steps to well under 1e-10 of the weights' scale.
    for name in want:
        if name.startswith("model/"):
            torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12)
    a, b = RunDir.open(single).metrics(), RunDir.open(parallel).metrics()
    pd.testing.assert_series_equal(a["step"], b["step"])
    assert (a["eval_half_mse"] - b["eval_half_mse"]).abs().max() < 1e-10
    assert (a["train_half_mse"] - b["train_half_mse"]).abs().max() < 1e-10  # rank-averaged = the global batch's


def test_an_ensemble_is_refused_under_torchrun(monkeypatch):
    from iclab.config import ExperimentConfig
    from iclab.errors import UserError
    from iclab.training import train
    from iclab.training.distributed import DataParallel

    cfg = ExperimentConfig().replace(
        task={"d": 3, "n_points": 4}, train={"steps": 2, "batch_size": 8, "eval_every": 1, "checkpoint_every": 1}
    )
    cfg = cfg.replace(ensemble={"seeds": (0, 1)})
    monkeypatch.setattr(DataParallel, "from_env", classmethod(lambda cls, device: cls(0, 2)))
    with pytest.raises(UserError, match=r"ensemble\.seeds: an ensemble is one pass"):
        train(cfg)
