"""The same answers on a GPU: every model and every reference learner give on CUDA what they give on the CPU — in
float64 (TF32 off; for attention that is the plain kernel) and in float32 (the fast attention kernels training
uses, to float32 accuracy) — and the trainer learns, checkpoints and resumes on the device. Each check also runs with
device "cpu" against a fresh CPU copy, so the test code itself is exercised on every machine; the "cuda" cases run
where a GPU is present (scripts/gpu_check.sh on the device machine).
"""

import copy
import dataclasses

import pytest
import torch

from iclab.algorithms.registry import make_learner
from iclab.config import (
    EvalConfig,
    ExperimentConfig,
    TrainConfig,
    config_to_dict,
    model_config,
    task_config,
)
from iclab.evaluation import prefix_predictions
from iclab.models import MODELS, make_model
from iclab.runs import RunDir
from iclab.tasks import make_task
from iclab.training import train

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]
TASK = task_config("linear", d=3, n_points=8, x_dist="gaussian", x_scale=1.0, noise_var=0.1)
LEARNERS = (
    "relu_net:16:steps=20",
    "tree:3",
    "gbt:5",
    "dmmse",
    "ols",
    "ridge",
    "gd:3",
    "gd++:2",
    "pgd:2",
    "newton:5",
    "averaging",
    "knn:3",
    "lasso:0.05",
    "bayes",
    "debiased_gd",
)


@pytest.fixture(autouse=True)
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _prompts(batch=64, seed=0):
    return make_task(TASK).sample(batch, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(MODELS))
def test_model_predictions_match_the_cpu(name, dtype, device):
    kw = {"max_points": 16} if name in ("gpt", "separate") else {}
    model = make_model(model_config(name=name, **kw), TASK.d, generator=torch.Generator().manual_seed(0)).to(dtype)
    prompts = _prompts().to(dtype=dtype)
    with torch.no_grad():
        expected = model.predict_prompts(prompts)
        got = copy.deepcopy(model).to(device).predict_prompts(prompts.to(device))
    assert got.device.type == device and got.dtype == dtype
    tol = {"rtol": 1e-9, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(got.cpu(), expected, **tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spec", LEARNERS)
def test_learner_prefix_predictions_match_the_cpu(spec, device):
    task_config = dataclasses.replace(TASK, pool_size=8) if spec == "dmmse" else TASK  # dMMSE needs a finite pool
    learner = make_learner(spec, make_task(task_config))
    prompts = _prompts()
    expected = prefix_predictions(learner, prompts.x, prompts.y)
    got = prefix_predictions(learner, prompts.x.to(device), prompts.y.to(device))
    assert got.device.type == device
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-7, atol=1e-8)


def _config(device: str, steps: int) -> ExperimentConfig:
    return ExperimentConfig(
        task=TASK,
        model=model_config(name="gpt", layers=2, width=32, heads=2, max_points=16),
        train=TrainConfig(
            steps=steps, batch_size=32, lr=1e-3, eval_every=5, checkpoint_every=5, device=device, progress=False
        ),
        eval=EvalConfig(n_prompts=128),
        name="gpt",
    )


@pytest.mark.parametrize("device", DEVICES)
def test_training_learns_checkpoints_and_resumes_on_the_device(tmp_path, device):
    # Not compared with a CPU run: the training prompts come from the device's own generator, whose CUDA stream
    # differs from the CPU's by design (sampling stays on the device); the models and learners are compared above.
    straight = train(_config(device, 20), RunDir.create(tmp_path / "a", config_to_dict(_config(device, 20))))
    history = straight.run.metrics()
    assert next(straight.model.parameters()).device.type == device
    assert history["eval_half_mse"].iloc[-1] < history["eval_half_mse"].iloc[0]
    # Stop after 10 steps, resume to 20: the same weights (bit-identical on the CPU; CUDA kernels may reorder sums).
    run = RunDir.create(tmp_path / "b", config_to_dict(_config(device, 20)))
    train(_config(device, 20), run, stop_after=10)
    resumed = train(_config(device, 20), run, resume=True)
    tol = {"rtol": 0.0, "atol": 0.0} if device == "cpu" else {"rtol": 1e-4, "atol": 1e-6}
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, **tol)
