"""The trainer takes a model with E members on every parameter's leading dimension (what ensembles build on):
training it once equals training each member alone, per-member clipping included, and every member's losses are
logged. The test model: one GD step with a learned per-coordinate step, ŷ = Σ_j η_j x_qj · (1/n) Σ_i y_i x_ij."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

from iclab.config import EvalConfig, ExperimentConfig, ModelConfig, TrainConfig, config_to_dict, task_config
from iclab.models import MODELS
from iclab.models.base import ICLModel
from iclab.runs import RunDir
from iclab.tokens import ConcatLayout
from iclab.training import train


@dataclass(frozen=True)
class StepsConfig(ModelConfig):
    name: ClassVar[str] = "learned_steps"

    members: int = 1
    """E"""
    init: float = 0.0
    """member e starts at η = init + 0.1·e on every coordinate"""
    blowup: int = -1
    """this member starts at η = 1e300: its predictions overflow, its loss is inf from the first step"""


class LearnedSteps(ICLModel):
    layout = ConcatLayout()

    def __init__(self, config: StepsConfig, d: int, *, generator: torch.Generator | None = None):
        super().__init__()
        self.config, self.d, self.members = config, d, config.members
        start = config.init + 0.1 * torch.arange(config.members, dtype=torch.float64)
        if config.blowup >= 0:
            start[config.blowup] = 1e300
        self.eta = nn.Parameter(start[:, None].repeat(1, d))  # [E, d]

    def predict_prompts(self, prompts) -> Tensor:
        xty = torch.einsum("bnd,bn->bd", prompts.x_ctx, prompts.y_ctx) / prompts.n_ctx  # [B, d]
        return torch.einsum("ed,bmd,bd->ebm", self.eta, prompts.x_q, xty)  # [E, B, m]

    def predict(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor) -> Tensor:
        raise NotImplementedError

    def training_loss(self, prompts) -> Tensor:
        return 0.5 * ((self.predict_prompts(prompts) - prompts.y_q) ** 2).mean(dim=(1, 2))  # [E]


@pytest.fixture
def steps_family():
    MODELS.register(StepsConfig, LearnedSteps)
    yield
    MODELS.unregister("learned_steps")


def _config(members: int, init: float, blowup: int = -1) -> ExperimentConfig:
    return ExperimentConfig(
        task=task_config("linear", d=3, n_points=8, x_dist="gaussian", x_scale=1.0, noise_var=0.1),
        model=StepsConfig(members=members, init=init, blowup=blowup),
        # a clip far below the gradients' norm: clipping all members together would couple them
        train=TrainConfig(
            steps=60,
            batch_size=64,
            lr=0.05,
            grad_clip=0.05,
            eval_every=20,
            checkpoint_every=60,
            dtype="float64",
            progress=False,
        ),
        eval=EvalConfig(n_prompts=256),
        name="members",
    )


def test_members_train_as_if_alone(steps_family, tmp_path):
    E = 3
    run = RunDir.create(tmp_path / "ens", config_to_dict(_config(E, 0.2)))
    together = train(_config(E, 0.2), run)
    for e in range(E):
        alone = train(_config(1, 0.2 + 0.1 * e))
        # float64; the member's loss is reduced in a batched op instead of alone: equal to rounding
        torch.testing.assert_close(together.model.eta[e], alone.model.eta[0], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(together.model.eta[0], together.model.eta[1])  # the members stayed distinct
    metrics = run.metrics()
    for e in range(E):
        assert {f"train_half_mse/member{e}", f"eval_half_mse/member{e}"} <= set(metrics.columns)
    means = metrics[[f"eval_half_mse/member{e}" for e in range(E)]].mean(axis=1)
    torch.testing.assert_close(torch.tensor(means.to_numpy()), torch.tensor(metrics["eval_half_mse"].to_numpy()))


def test_a_diverging_member_is_stopped_and_the_others_go_on(steps_family, tmp_path):
    E, bad = 3, 1
    run = RunDir.create(tmp_path / "ens", config_to_dict(_config(E, 0.2, blowup=bad)))
    together = train(_config(E, 0.2, blowup=bad), run)
    assert together.diverged == {bad: 1}
    for e in (0, 2):  # the living members are untouched by the dead one: equal to their runs alone
        alone = train(_config(1, 0.2 + 0.1 * e))
        torch.testing.assert_close(together.model.eta[e], alone.model.eta[0], rtol=1e-10, atol=1e-12)
    metrics = run.metrics()
    assert (metrics[f"diverged_at/member{bad}"].iloc[1:] == 1).all()
    assert (metrics["diverged_at/member0"].iloc[1:] == -1).all()
    assert metrics[f"eval_half_mse/member{bad}"].iloc[1:].isna().all()
    assert metrics["eval_half_mse"].notna().all()  # the means are the living members'
