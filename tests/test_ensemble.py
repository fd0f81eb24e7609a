"""Ensembles (`ensemble.seeds`): E members trained in one pass equal E separate runs with the same seeds — each
member with its own initialisation and data stream — and every member is an ordinary run afterwards.

Tolerance: float64 throughout. A member's loss is reduced inside a stack of E instead of alone, and its gradient
comes through `functional_call` on a slice of the stacked parameters, so the arithmetic is the same up to
summation order: 1e-9 normwise (|Δ| ≤ 1e-9 · max |value| per tensor) after 30 Adam steps. Normwise, not entry by
entry: fused AdamW rounds an element in its vectorised loop or in its scalar tail depending on its offset, which
differs between the stack and the single run, and the gpt has entries that stay at rounding level (≈ 1e-12)
where a relative error means nothing (measured: lsa 2e-16, softmax 0, gpt 3e-12 of the tensor's largest entry)."""

import json

import pytest
import torch

from iclab.cli import main
from iclab.config import EvalConfig, ExperimentConfig, TrainConfig, config_to_dict, model_config, task_config
from iclab.runs import RunDir
from iclab.tasks import make_task
from iclab.training import load_model, train
from iclab.training.ensemble import Ensemble, export_members, member_config
from iclab.training.trainer import stack_batches

SEEDS = (0, 3, 5)


def _config(model) -> ExperimentConfig:
    return ExperimentConfig(
        task=task_config("linear", d=3, n_points=6, x_dist="gaussian", x_scale=1.0, noise_var=0.1),
        model=model,
        train=TrainConfig(
            steps=30,
            batch_size=32,
            lr=1e-2,
            grad_clip=0.5,
            eval_every=10,
            checkpoint_every=30,
            dtype="float64",
            progress=False,
        ),
        eval=EvalConfig(n_prompts=64),
        name="ens",
    ).replace(ensemble={"seeds": SEEDS})


def _close_normwise(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, rtol=0, atol=1e-9 * want.abs().max().item())


@pytest.mark.parametrize(
    "model",
    [model_config("lsa", layers=2), model_config("softmax", heads=2), model_config("gpt", layers=1, width=8, heads=2)],
    ids=["lsa", "softmax", "gpt"],
)
def test_members_equal_separate_runs_with_the_same_seeds(model, tmp_path):
    cfg = _config(model)
    run = RunDir.create(tmp_path / "ens", config_to_dict(cfg))
    together = train(cfg, run).model
    assert isinstance(together, Ensemble) and together.members == len(SEEDS)
    for e, seed in enumerate(SEEDS):
        alone = train(member_config(cfg, e)).model
        for name, value in alone.state_dict().items():
            _close_normwise(together.member(e).state_dict()[name], value)
        # the member, exported as an ordinary run, opens like one
        member = RunDir.open(run.path / "members" / f"seed-{seed}")
        assert member.config()["train"]["seed"] == seed and "ensemble" not in member.config()
        for name, value in load_model(member).state_dict().items():
            _close_normwise(value, alone.state_dict()[name])
        assert list(member.metrics()["step"]) == [0, 10, 20, 30]


def test_an_ensemble_from_the_command_line_resumes_and_its_members_compare(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--preset", "von-oswald", "--ensemble.seeds", "1", "2", "--train.steps", "20"]
    args += ["--train.eval-every", "10", "--train.checkpoint-every", "10", "--eval.n-prompts", "64"]
    args += ["--train.batch-size", "64", "--train.no-progress", "--out", str(out)]
    assert main([*args[:-2], "--train.steps", "10", "--out", str(out)]) == 0, capsys.readouterr().err
    assert main([*args, "--resume"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    straight = tmp_path / "straight"
    assert main([*args[:-1], str(straight)]) == 0
    resumed, fresh = load_model(RunDir.open(out)), load_model(RunDir.open(straight))
    for name, value in fresh.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name  # bit-identical resume, every member's stream
    capsys.readouterr()
    assert main(["compare", str(out / "members" / "seed-2")]) == 0
    assert "gd" in capsys.readouterr().out
    assert main(["train", "--ensemble.seeds", "1", "1", "--out", str(tmp_path / "x")]) == 2
    assert "ensemble.seeds: must be distinct seeds" in capsys.readouterr().err


@pytest.mark.parametrize(
    "model",
    [model_config("lsa", layers=2, heads=2), model_config("gpt", layers=2, width=8, heads=2)],
    ids=["lsa", "gpt"],
)
def test_vmap_over_members_equals_the_loop_with_gradients(model):
    """impl "fast" (vmap over the members) against "naive" (one member after another): losses, predictions and
    every gradient, float64."""
    cfg = _config(model)
    ensemble = Ensemble(cfg.model, 3, SEEDS).double()
    task = make_task(cfg.task)
    batches = [task.sample(5, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in SEEDS]
    stacked = stack_batches(batches)
    results = {}
    for impl in ("fast", "naive"):
        ensemble.set_impl(impl)
        ensemble.zero_grad()
        loss = ensemble.training_loss(stacked)
        (loss * torch.arange(1.0, 4.0, dtype=torch.float64)).sum().backward()
        grads = [p.grad.clone() for p in ensemble.parameters()]
        results[impl] = (loss.detach(), ensemble.predict_prompts(batches[0]).detach(), grads)
    fast, naive = results["fast"], results["naive"]
    torch.testing.assert_close(fast[0], naive[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(fast[1], naive[1], rtol=1e-12, atol=1e-14)
    for g_fast, g_naive in zip(fast[2], naive[2]):
        torch.testing.assert_close(g_fast, g_naive, rtol=1e-10, atol=1e-13)


def test_a_diverged_member_is_exported_without_weights(tmp_path, capsys):
    cfg = _config(model_config("lsa"))
    run = RunDir.create(tmp_path / "ens", config_to_dict(cfg))
    model = train(cfg, run).model
    export_members(run, cfg, model, {1: 7})
    member = run.path / "members" / f"seed-{SEEDS[1]}"
    assert json.loads((member / "diverged.json").read_text())["diverged_at_step"] == 7
    assert RunDir.open(member).latest_checkpoint() is None
    assert main(["compare", str(member)]) == 2  # no weights to compare: one line, not a traceback
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


PER_MEMBER = {"lr": (1e-2, 3e-3, 1e-2), "weight_decay": (0.0, 0.1, 0.0), "noise_var": (0.1, 0.1, 0.5),
              "pool_size": (0, 4, 0)}  # fmt: skip


@pytest.mark.parametrize(
    "model", [model_config("lsa", layers=2), model_config("softmax", heads=2)], ids=["lsa", "softmax"]
)
def test_members_with_their_own_hyperparameters_equal_their_single_runs(model, tmp_path):
    """Per-member lr, weight decay, noise level and task-pool size (two members share seed 0 and differ in the
    rest): each member equals the single run of its own config, normwise 1e-9 as above (the per-member AdamW
    update is the same arithmetic regrouped), is evaluated on its own task and is exported under its label."""
    cfg = _config(model).replace(ensemble={"seeds": (0, 0, 3), **PER_MEMBER})
    run = RunDir.create(tmp_path / "ens", config_to_dict(cfg))
    together = train(cfg, run).model
    history = run.metrics()
    for e in range(3):
        single = member_config(cfg, e)
        assert single.train.lr == PER_MEMBER["lr"][e] and single.task.pool_size == PER_MEMBER["pool_size"][e]
        alone_run = RunDir.create(tmp_path / f"alone-{e}", config_to_dict(single))
        alone = train(single, alone_run).model
        for name, value in alone.state_dict().items():
            _close_normwise(together.member(e).state_dict()[name], value)
        torch.testing.assert_close(
            torch.tensor(history[f"eval_half_mse/member{e}"].to_numpy()),
            torch.tensor(alone_run.metrics()["eval_half_mse"].to_numpy()),
            rtol=1e-9,
            atol=0,
        )
    labels = sorted(p.name for p in (run.path / "members").iterdir())
    assert labels == sorted(cfg.member_label(e) for e in range(3))
    assert cfg.member_label(1) == "seed-0-lr-0.003-weight_decay-0.1-noise_var-0.1-pool_size-4"


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--ensemble.seeds", "0", "1", "--ensemble.lr", "0.1"],
            "ensemble.lr: must be empty or one value per seed (2)",
        ),
        (["--ensemble.seeds", "0", "1", "--ensemble.lr", "0.1", "0"], "ensemble.lr: must be"),
        (["--ensemble.seeds", "0", "1", "--ensemble.pool_size", "3", "-1"], "ensemble.pool_size: must be"),
    ],
)
def test_bad_per_member_values_are_one_line_errors(flags, message, tmp_path, capsys):
    assert main(["train", *flags, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()
