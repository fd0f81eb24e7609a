"""Runs survive SIGKILL: a training process killed at several points, then resumed with --resume, ends with weights,
optimizer state and data-generator state bit-identical to an uninterrupted run (CPU), through the real CLI in
subprocesses — not a function stopped politely."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from iclab.runs import RunDir

ARGS = [
    "--task.d", "3", "--task.n-points", "6", "--train.steps", "300", "--train.batch-size", "64",
    "--train.eval-every", "5", "--train.checkpoint-every", "5", "--eval.n-prompts", "100",
]  # fmt: skip


def _train(out, *extra):
    cmd = [sys.executable, "-m", "iclab", "train", *ARGS, "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ)


def _final_state(out):
    tensors, meta = RunDir.open(out).load_checkpoint()
    return tensors, meta


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_is_bit_identical(tmp_path):
    reference = tmp_path / "reference"
    first = _train(reference)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    want, want_meta = _final_state(reference)
    assert want_meta["step"] == 300
    killed_at = []
    for i, kill_after in enumerate((10, 120, 250)):
        out = tmp_path / f"killed{i}"
        proc = _train(out)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            steps = [int(p.stem[5:]) for p in (out / "checkpoints").glob("step_*.safetensors")] if out.exists() else []
            if steps and max(steps) >= kill_after:
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)  # no handler, no flush: whatever was on disk is what resume gets
        proc.wait()
        proc.stderr.close()
        latest = RunDir.open(out).latest_checkpoint()
        killed_at.append(int(latest.stem[5:]))
        resumed = _train(out, "--resume")
        _, err = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, err
        got, meta = _final_state(out)
        assert meta["step"] == 300 and set(got) == set(want)
        for name in want:
            assert torch.equal(got[name], want[name]), f"{name} differs after a kill at step {killed_at[-1]}"
    assert all(step < 300 for step in killed_at), f"every kill should land before the end: {killed_at}"
