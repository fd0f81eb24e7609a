"""Trainer: bit-identical resume on the CPU, divergence handling, metrics and checkpoints on disk."""

from __future__ import annotations

import math

import pytest
import torch

from iclab.config import (
    EvalConfig,
    ExperimentConfig,
    TrainConfig,
    config_to_dict,
    model_config,
    task_config,
)
from iclab.runs import RunDir
from iclab.training import TrainingDiverged, evaluate_half_mse, load_model, train


def tiny(steps: int = 40, **train_overrides) -> ExperimentConfig:
    train_fields = dict(steps=steps, batch_size=64, lr=1e-2, eval_every=10, checkpoint_every=20, progress=False)
    train_fields.update(train_overrides)
    return ExperimentConfig(
        task=task_config("linear", d=3, n_points=6, n_queries=2),
        model=model_config("lsa", layers=2),
        train=TrainConfig(**train_fields),
        eval=EvalConfig(n_prompts=256),
        name="tiny",
    )


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_is_bit_identical(tmp_path):
    straight = train(tiny(40), RunDir.create(tmp_path / "a", config_to_dict(tiny(40))))
    first = RunDir.create(tmp_path / "b", config_to_dict(tiny(20)))
    train(tiny(20), first)
    resumed_run = RunDir.create(tmp_path / "b", config_to_dict(tiny(40)), resume=True)
    resumed = train(tiny(40), resumed_run, resume=True)
    for name, value in _params(straight.model).items():
        assert torch.equal(value, _params(resumed.model)[name]), name
    a = straight.run.metrics().drop(columns="wall_time_s")
    b = resumed_run.metrics().drop(columns="wall_time_s")
    assert a.equals(b)
    assert list(b["step"]) == [0, 10, 20, 30, 40]


def test_resume_with_cosine_schedule_keeps_learning_rate(tmp_path):
    cfg = tiny(40, schedule="cosine")
    straight = train(cfg, RunDir.create(tmp_path / "a", config_to_dict(cfg)))
    # An interruption after step 20 of a 40-step cosine run, then --resume.
    train(cfg, RunDir.create(tmp_path / "b", config_to_dict(cfg)), stop_after=20)
    resumed = train(cfg, RunDir.create(tmp_path / "b", config_to_dict(cfg), resume=True), resume=True)
    for name, value in _params(straight.model).items():
        assert torch.equal(value, _params(resumed.model)[name]), name


def test_metrics_and_checkpoints_written(tmp_path):
    run = RunDir.create(tmp_path / "r", config_to_dict(tiny(40)))
    result = train(tiny(40), run)
    df = run.metrics()
    assert {"step", "train_half_mse", "eval_half_mse", "lr", "wall_time_s"} <= set(df.columns)
    assert df["eval_half_mse"].iloc[-1] == pytest.approx(result.final_eval_half_mse)
    assert run.latest_checkpoint().name == "step_00000040.safetensors"
    reloaded = load_model(run)
    assert evaluate_half_mse(reloaded, result.eval_prompts) == pytest.approx(result.final_eval_half_mse, rel=1e-6)


def test_training_reduces_loss():
    result = train(tiny(200))
    untrained = train(tiny(0))
    assert result.final_eval_half_mse < 0.7 * untrained.final_eval_half_mse


def test_divergence_names_step_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny(60, lr=1e4, grad_clip=0.0).replace(model={"init_scale": 5.0})
    run = RunDir.create(tmp_path / "r", config_to_dict(cfg))
    with pytest.raises(TrainingDiverged, match=r"non-finite at step \d+; last good checkpoint: .*step_"):
        train(cfg, run)
    tensors, _ = run.load_checkpoint()
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model/"))


def test_cuda_request_without_gpu_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from iclab.config import ConfigError

    with pytest.raises(ConfigError, match=r"^train.device: 'cuda' requested"):
        train(tiny(1, device="cuda"))


def test_resume_refuses_to_stretch_a_cosine_schedule(tmp_path):
    cfg = tiny(20, schedule="cosine")
    train(cfg, RunDir.create(tmp_path / "r", config_to_dict(cfg)))
    longer = tiny(40, schedule="cosine")
    with pytest.raises(ValueError, match=r"^train.steps: can change on --resume only with train.schedule constant"):
        RunDir.create(tmp_path / "r", config_to_dict(longer), resume=True)


def test_resume_refuses_fewer_steps_than_done(tmp_path):
    train(tiny(40), RunDir.create(tmp_path / "r", config_to_dict(tiny(40))))
    with pytest.raises(ValueError, match=r"^train.steps: must be >= 40"):
        RunDir.create(tmp_path / "r", config_to_dict(tiny(20)), resume=True)


def test_curriculum_follows_garg_schedule_and_resumes(tmp_path):
    from iclab.tasks.curriculum import Curriculum
    from iclab.training.trainer import curriculum_for

    cfg = ExperimentConfig(
        task=task_config("linear", d=8, n_points=15, x_dist="gaussian", x_scale=1.0),
        train=TrainConfig(steps=12, batch_size=16, eval_every=4, checkpoint_every=4, progress=False,
                          curriculum="garg", curriculum_every=3),
        eval=EvalConfig(n_prompts=32),
    )  # fmt: skip
    cur = curriculum_for(cfg)
    assert cur == Curriculum(5, 8, 1, 11, 15, 2, 3)
    assert [cur.at(s) for s in (0, 2, 3, 6, 9, 11)] == [(5, 11), (5, 11), (6, 13), (7, 15), (8, 15), (8, 15)]
    assert curriculum_for(cfg.replace(train={"curriculum": "none"})) is None
    # interrupted and resumed under the curriculum = one uninterrupted run
    whole = train(cfg, RunDir.create(tmp_path / "whole", config_to_dict(cfg)))
    run = RunDir.create(tmp_path / "split", config_to_dict(cfg))
    train(cfg, run, stop_after=4)
    resumed = train(cfg, RunDir.create(tmp_path / "split", config_to_dict(cfg), resume=True), resume=True)
    assert resumed.final_eval_half_mse == whole.final_eval_half_mse
    # and the curriculum changes what is trained on: the same run without it ends elsewhere
    plain = train(cfg.replace(train={"curriculum": "none"}))
    assert plain.final_eval_half_mse != whole.final_eval_half_mse


def test_a_finite_blow_up_stops_the_run_and_names_it(tmp_path):
    # weights of standard deviation 1e3: predictions ~1e12 times too large, finite in float64, and a learning rate
    # too small to undo it; the held-out loss is far above 1e8 times that of predicting 0
    cfg = tiny(20, lr=1e-12, dtype="float64").replace(model={"init_scale": 1e6})
    run = RunDir.create(tmp_path / "r", config_to_dict(cfg))
    with pytest.raises(TrainingDiverged, match=r"after step 10 is more than 1e\+08 times that of predicting 0"):
        train(cfg, run)
    assert run.latest_checkpoint().name == "step_00000000.safetensors"  # nothing past the blow-up was kept


def test_a_blown_up_ensemble_member_is_stopped_and_the_other_goes_on():
    cfg = tiny(30, dtype="float64", grad_clip=0.0).replace(ensemble={"seeds": (0, 0), "lr": (1e-2, 1e3)})
    result = train(cfg)
    assert list(result.diverged) == [1] and math.isfinite(result.final_eval_half_mse)


def test_resume_says_when_the_metrics_history_is_gone(tmp_path, capsys):
    run = RunDir.create(tmp_path / "r", config_to_dict(tiny(20)))
    train(tiny(20), run, stop_after=20)
    (run.path / "metrics.parquet").unlink()
    train(tiny(40), RunDir.create(run.path, config_to_dict(tiny(40)), resume=True), resume=True)
    assert "metrics.parquet is missing or empty; the metrics of steps 0 to 20 are lost" in capsys.readouterr().err
