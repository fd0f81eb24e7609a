"""iclab.models.interventions: each edit against the same edit made by hand, the clamps against their definition,
and the trainer's `train.interventions`."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from iclab.analysis.induction import head_scores
from iclab.config import ConfigError, EnsembleConfig, EvalConfig, ExperimentConfig, TrainConfig
from iclab.errors import SpecError
from iclab.models import make_model
from iclab.models.attn_only import AttnOnlyConfig
from iclab.models.gpt import GPTConfig
from iclab.models.interventions import Intervened, Intervention, intervene
from iclab.tasks import make_task
from iclab.tasks.icl_classification import ICLClassificationConfig
from iclab.training.trainer import train

TASK = ICLClassificationConfig(d=8, n_classes=32, n_labels=8, n_points=8, burstiness=2)
N = TASK.n_points


def _model(heads: int = 2, seed: int = 0):
    cfg = AttnOnlyConfig(width=16, heads=heads, classifier_hidden=16)
    model = make_model(cfg, TASK.d, n_labels=TASK.n_labels, generator=torch.Generator().manual_seed(seed))
    return model.double()


def _prompts(n: int = 12, split: str = "icl_novel"):
    task = make_task(TASK)
    return task.split(split, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("zero", "is not KIND:HOOK"),
        ("drop:blocks.0.attn.hook_z", "kind 'drop'"),
        ("clamp:blocks.0.attn.hook_pattern", "clamp needs =TARGET"),
        ("clamp:blocks.0.attn.hook_pattern=sideways", "choose from: previous, induction"),
        ("clamp:blocks.0.attn.hook_z=previous", "clamp edits attention patterns"),
        ("zero:blocks.0.attn.hook_z=previous", "only clamp takes =TARGET"),
        ("zero:blocks.0.hook_resid_post@0", "@HEAD needs a per-head hook"),
        ("clamp:blocks.0.attn.hook_pattern=previous:1.5", r"strength in \[0, 1\]"),
    ],
)
def test_malformed_specs_name_the_field(spec, message):
    with pytest.raises(SpecError, match=message):
        Intervention.parse(spec, "train.interventions")
    with pytest.raises(ConfigError, match=r"^train\.interventions: "):
        TrainConfig(interventions=(spec,))


def test_unknown_hooks_and_heads_are_refused():
    model = _model()
    with pytest.raises(SpecError, match=r"unknown hook point 'blocks.5.attn.hook_z'; choose from"):
        Intervened(model, ["zero:blocks.5.attn.hook_z"])
    with pytest.raises(SpecError, match=r"head 2 of 'blocks.0.attn.hook_z'; the layer has 2 heads"):
        Intervened(model, ["zero:blocks.0.attn.hook_z@2"])


def test_zeroing_a_head_equals_removing_its_output_weights():
    model, prompts = _model(), _prompts()
    with intervene(model, ["zero:blocks.1.attn.hook_z@1"]):
        edited = model.predict_prompts(prompts)
    by_hand = _model()
    with torch.no_grad():
        by_hand.blocks[1].attn.W_O[1] = 0.0  # [H, d_head, width]: head 1's read-out
    torch.testing.assert_close(edited, by_hand.predict_prompts(prompts))
    assert not torch.allclose(edited, model.predict_prompts(prompts))  # removed: the plain model again


def test_mean_ablating_the_residual_stream_makes_every_prompt_alike():
    model, prompts = _model(), _prompts()
    with intervene(model, ["mean:blocks.1.hook_resid_post"]):
        out = model.predict_prompts(prompts)  # [B, 1, L]
    torch.testing.assert_close(out, out[:1].expand_as(out))


def test_patching_gives_the_previous_prompts_activation():
    model, prompts = _model(), _prompts()
    clean = model.predict_prompts(prompts)
    with intervene(model, ["patch:blocks.1.hook_resid_post"]):
        patched = model.predict_prompts(prompts)
    torch.testing.assert_close(patched, clean.roll(1, dims=0))
    with intervene(model, ["patch:blocks.0.attn.hook_z@0"]):  # one head of the first layer: only that changes
        one_head = model.predict_prompts(prompts)
    assert not torch.allclose(one_head, clean) and not torch.allclose(one_head, patched)


def test_previous_token_clamp_follows_its_definition():
    model, prompts = _model(), _prompts()
    name = "blocks.0.attn.hook_pattern"
    with intervene(model, [f"clamp:{name}@0=previous:0.75"]):
        _, cache = model.run_with_cache(prompts, names=[name], method="predict_prompts")
    pattern = cache[name]  # [B, H, L, L]
    t = torch.arange(1, 2 * N)
    assert torch.all(pattern[:, 0, t, t - 1] == 0.75) and torch.all(pattern[:, 0, t, t] == 0.25)
    assert torch.all(pattern[:, 0, 0, 0] == 1.0)
    torch.testing.assert_close(pattern[:, 0].sum(-1), torch.ones_like(pattern[:, 0, :, 0]))
    scores = head_scores(model, prompts)  # unclamped again: head 1 untouched and head 0 back to its own
    assert scores["previous_token"][0, 0] < 0.75
    with intervene(model, [f"clamp:{name}@0=previous"]):
        assert head_scores(model, prompts)["previous_token"][0, 0] == pytest.approx(1.0)


def test_induction_clamp_puts_the_query_on_its_class_labels():
    model = _model()
    for split in ("icl_novel", "iwl"):
        prompts = _prompts(split=split)
        with intervene(model, ["clamp:blocks.1.attn.hook_pattern=induction:0.9"]):
            scores = head_scores(model, prompts)
        if split == "icl_novel":  # B matching labels share 0.9, the others 0.1; no weight on items
            assert torch.allclose(scores["induction"][1], torch.tensor(0.9, dtype=torch.float64))
            assert torch.allclose(scores["label_attention"][1], torch.tensor(1.0, dtype=torch.float64))
            assert torch.allclose(scores["match_item"][1], torch.tensor(0.0, dtype=torch.float64))
        else:  # no matching label in the context: uniform over the labels
            assert torch.allclose(scores["induction"][1], torch.tensor(0.0, dtype=torch.float64))
            assert torch.allclose(scores["label_attention"][1], torch.tensor(1.0, dtype=torch.float64))


def _config(interventions, seeds=(), steps=6):
    return ExperimentConfig(
        task=TASK,
        model=AttnOnlyConfig(width=16, classifier_hidden=16),
        train=TrainConfig(
            steps=steps, batch_size=8, eval_every=3, checkpoint_every=6, progress=False, interventions=interventions
        ),
        eval=EvalConfig(n_prompts=16),
        ensemble=EnsembleConfig(seeds=seeds),
    )


def test_training_under_a_clamp_logs_the_clamped_scores_and_returns_the_plain_model():
    spec = "clamp:blocks.1.attn.hook_pattern=induction"
    result = train(_config((spec,)))
    assert result.final_eval["target_item_label_attention"] == pytest.approx(1.0)  # evaluated under the clamp
    model = result.model
    assert all(not p._forward_hooks for p in model.hook_points().values())
    assert "predict_prompts" not in model.__dict__ and "training_loss" not in model.__dict__
    assert head_scores(model.double(), _prompts())["induction"][1, 0] < 0.9  # its own pattern again


def test_an_ablated_head_gets_no_gradient_and_ensembles_train_under_ablation():
    spec = "zero:blocks.1.attn.hook_z@0"
    single = train(_config((spec,), steps=3))
    plain = make_model(_config(()).model, TASK.d, n_labels=TASK.n_labels, generator=torch.Generator().manual_seed(0))
    # with the only head of layer 1 zeroed, its W_O never receives a gradient: Adam leaves it where it started
    torch.testing.assert_close(single.model.blocks[1].attn.W_O, plain.blocks[1].attn.W_O)
    ensemble = train(_config((spec,), seeds=(0, 1), steps=3))
    torch.testing.assert_close(ensemble.model.member(0).blocks[1].attn.W_O, plain.blocks[1].attn.W_O)


def test_induction_clamp_is_refused_for_ensembles():
    with pytest.raises(ConfigError, match="clamp=induction reads each prompt's classes"):
        train(_config(("clamp:blocks.1.attn.hook_pattern=induction",), seeds=(0, 1)))
    with pytest.raises(ConfigError, match=r"train\.interventions: unknown hook point"):
        train(_config(("zero:blocks.9.attn.hook_z",)))


def test_gpt_heads_take_interventions_too():
    cfg = GPTConfig(width=16, layers=2, heads=2, mlp_ratio=2)
    model = make_model(cfg, TASK.d, n_labels=TASK.n_labels).double()
    prompts = _prompts()
    with intervene(model, ["zero:blocks.0.attn.hook_z@0", "zero:blocks.0.attn.hook_z@1"]):
        both = model.predict_prompts(prompts)
    with torch.no_grad():
        model.blocks[0].attn.W_O.zero_()

    torch.testing.assert_close(both, model.predict_prompts(prompts))


# --------------------------------------------------- a trained model whose circuit is known: ablate its induction head

BOTH = ICLClassificationConfig(d=16, n_classes=64, n_labels=16, p_bursty=0.0, p_novel=0.5)
"""Half the training prompts are novel-class bursty prompts (only the context answers them: an induction head),
half i.i.d. prompts of 64 trained classes (only the weights answer them): the network learns both strategies
(measured: icl 0.85, iwl 0.94 after 600 steps)."""
N_TEST = 2000  # prompts per split: binomial SE ≤ 0.011


@pytest.fixture(scope="module")
def both_strategies():
    config = ExperimentConfig(
        task=BOTH,
        model=AttnOnlyConfig(width=64, classifier_hidden=64),
        train=TrainConfig(steps=600, batch_size=64, lr=3e-3, eval_every=600, checkpoint_every=600, progress=False),
        eval=EvalConfig(n_prompts=256),
    )
    model = train(config).model
    task = make_task(BOTH)
    g = torch.Generator().manual_seed(5)
    return model, {s: task.split(s, N_TEST, generator=g) for s in ("icl_novel", "iwl")}


def _accuracy(model, prompts) -> float:
    return float((model.predict_prompts(prompts).argmax(-1) == prompts.y_q).double().mean())


def _se(p: float) -> float:
    return (p * (1 - p) / N_TEST) ** 0.5


def test_ablating_the_induction_head_removes_in_context_learning_and_keeps_in_weights(both_strategies):
    model, sets = both_strategies
    chance = 1 / BOTH.n_labels
    icl, iwl = _accuracy(model, sets["icl_novel"]), _accuracy(model, sets["iwl"])
    assert icl > 0.6 and iwl > 0.6  # both strategies learnt
    for kind in ("zero", "mean"):
        with intervene(model, [f"{kind}:blocks.1.attn.hook_z@0"]):  # the second layer's head: the induction head
            icl_ablated, iwl_ablated = _accuracy(model, sets["icl_novel"]), _accuracy(model, sets["iwl"])
        # what is left of in-context accuracy reaches the query through layer 0's own attention to the context
        # (measured 0.08, chance 0.0625): stated allowance 0.05 above chance
        assert icl_ablated < chance + 0.05, (kind, icl_ablated)
        assert iwl_ablated > iwl - 4 * _se(iwl), (kind, iwl_ablated, iwl)  # in-weights accuracy stays
    # with every head ablated the context cannot reach the query at all: chance within 4 binomial SE
    with intervene(model, ["zero:blocks.0.attn.hook_z@0", "zero:blocks.1.attn.hook_z@0"]):
        assert abs(_accuracy(model, sets["icl_novel"]) - chance) < 4 * _se(chance)


def test_clamping_the_ideal_induction_pattern_makes_in_context_learning_perfect(both_strategies):
    model, sets = both_strategies
    before = _accuracy(model, sets["icl_novel"])
    with intervene(model, ["clamp:blocks.1.attn.hook_pattern=induction"]):
        clamped = _accuracy(model, sets["icl_novel"])
    assert clamped > max(before + 4 * _se(before), 0.95)  # measured 0.996 (from 0.85)


CLI_TASK = ["--task.name", "icl_classification", "--task.d", "8", "--task.n-classes", "32", "--task.n-labels", "8"]


def _cli_run(out, seed: int = 0):
    """A two-step attn_only label run trained through `iclab train` at `out`."""
    from iclab.cli import main

    model = ["--model.name", "attn_only", "--model.width", "16", "--model.classifier-hidden", "16"]
    train_args = ["--train.steps", "2", "--train.batch-size", "8", "--train.eval-every", "2"]
    rest = ["--train.checkpoint-every", "2", "--train.seed", str(seed), "--eval.n-prompts", "8", "--out", str(out)]
    assert main(["train", *CLI_TASK, *model, *train_args, *rest]) == 0
    return out


def test_eval_applies_interventions_to_trained_runs(tmp_path, capsys):
    """`iclab eval --intervene` edits every trained run among the learners (named with its edits); a hook the run
    lacks or no run at all is a one-line error with exit code 2."""
    from iclab.cli import main

    task, run = CLI_TASK, _cli_run(tmp_path / "run")
    capsys.readouterr()
    base = ["eval", *task, "--n-prompts", "64", "--out", str(tmp_path / "ev")]
    assert main([*base, "--learners", f"chance,{run}", "--intervene", "zero:blocks.1.attn.hook_z@0"]) == 0
    assert "run [zero:blocks.1.attn.hook_z@0]" in capsys.readouterr().out
    for learners, spec, message in [
        (str(run), "zero:blocks.4.attn.hook_z", "error: intervene: unknown hook point"),
        ("chance", "zero:blocks.1.attn.hook_z", "error: intervene: edits trained runs"),
        (str(run), "zero", "error: intervene: 'zero' is not KIND:HOOK"),
    ]:
        assert main([*base, "--force", "--learners", learners, "--intervene", spec]) == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and len(err.strip().splitlines()) == 1, err


def test_patching_from_a_source_model_takes_its_activations():
    """With a source model, a patch is the source's activation on the same inputs: a model patched from a copy of
    itself is unchanged; patching the last residual stream from a model with other attention but the same
    classifier gives exactly that model's output; a patched head's pattern is the source's."""
    import copy

    model, prompts = _model(), _prompts()
    clean = model.predict_prompts(prompts)
    with intervene(model, ["patch:blocks.1.attn.hook_pattern@1"], source=copy.deepcopy(model)):
        torch.testing.assert_close(model.predict_prompts(prompts), clean)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for block in other.blocks:
            block.attn.W_QKV.normal_(0, 0.3)
    with intervene(model, ["patch:blocks.1.hook_resid_post"], source=other):
        torch.testing.assert_close(model.predict_prompts(prompts), other.predict_prompts(prompts))
    name = "blocks.0.attn.hook_pattern"
    with intervene(model, [f"patch:{name}@0"], source=other):
        _, mine = model.run_with_cache(prompts, names=[name], method="predict_prompts")
    _, theirs = other.run_with_cache(prompts, names=[name], method="predict_prompts")
    _, own = model.run_with_cache(prompts, names=[name], method="predict_prompts")
    torch.testing.assert_close(mine[name][:, 0], theirs[name][:, 0])
    torch.testing.assert_close(mine[name][:, 1], own[name][:, 1])  # the other head is the model's own
    with pytest.raises(SpecError, match="only read by patch interventions"):
        Intervened(model, ["zero:blocks.0.attn.hook_z"], source=other)


def test_eval_patches_a_run_from_another_run(tmp_path, capsys):
    from iclab.cli import main

    task = CLI_TASK
    for name, seed in (("a", 0), ("b", 1)):
        _cli_run(tmp_path / name, seed)
    capsys.readouterr()
    base = ["eval", *task, "--n-prompts", "64", "--out", str(tmp_path / "ev"), "--learners", str(tmp_path / "a")]
    spec = "patch:blocks.0.attn.hook_pattern@0"
    assert main([*base, "--intervene", spec, "--patch-from", str(tmp_path / "b")]) == 0
    assert f"a [{spec} from b]" in capsys.readouterr().out
    assert main([*base, "--force", "--patch-from", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.startswith("error: patch_from: the source of patch interventions")


# ------------------------------------------------------------------------------------------ guards (review fixes)


def test_hand_written_ensemble_forms_do_not_bypass_interventions():
    """LSA ensembles have a batched training loss of their own; with an intervention installed they take the vmap
    path, so the edit applies to training as it does to predictions."""
    from iclab.models.lsa import LSAConfig
    from iclab.tasks.linear import LinearConfig
    from iclab.training.ensemble import Ensemble
    from iclab.training.trainer import stack_batches

    ens = Ensemble(LSAConfig(), 4, [0, 1])
    with torch.no_grad():  # away from the initialisation, which predicts 0 anyway
        for p in ens.stacked:
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    task = make_task(LinearConfig(d=4, n_points=6))
    prompts = stack_batches([task.sample(8, generator=torch.Generator().manual_seed(s)) for s in (0, 1)])
    plain = ens.training_loss(prompts)
    with intervene(ens, ["zero:blocks.0.hook_resid_post"]):
        edited = ens.training_loss(prompts)
    # the residual stream zeroed: every prediction is 0, the loss is ½·mean(y_q²) of each member's batch
    expected = torch.stack([0.5 * (prompts.y_q[e * 8 : (e + 1) * 8] ** 2).mean() for e in (0, 1)])
    torch.testing.assert_close(edited, expected)
    assert not torch.allclose(plain, expected)


def test_heads_out_of_range_layouts_nesting_and_ensembles_are_refused():
    from iclab.models.softmax import SoftmaxConfig
    from iclab.training.ensemble import Ensemble

    ens = Ensemble(AttnOnlyConfig(width=16, heads=2, classifier_hidden=16), TASK.d, [0, 1], n_labels=TASK.n_labels)
    with pytest.raises(SpecError, match=r"head 7 of 'blocks\.0\.attn\.hook_z'; the layer has 2 heads"):
        Intervened(ens, ["zero:blocks.0.attn.hook_z@7"])
    concat = make_model(SoftmaxConfig(), TASK.d, n_labels=TASK.n_labels)
    with pytest.raises(SpecError, match="clamps are written for the interleaved token layout"):
        Intervened(concat, ["clamp:blocks.0.attn.hook_pattern=previous"])
    model = _model()
    with intervene(model, ["zero:blocks.0.attn.hook_z@0"]), pytest.raises(SpecError, match="already has"):
        Intervened(model, ["zero:blocks.1.attn.hook_z@0"])
    assert "predict_prompts" not in model.__dict__  # the outer context took its wrappers off


def test_an_induction_clamp_row_sums_to_one_when_every_label_matches():
    task = make_task(ICLClassificationConfig(d=8, n_classes=32, n_labels=8, n_points=8, burstiness=8))
    prompts = task.icl_novel(6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # one class, 8x
    model, name = _model(), "blocks.1.attn.hook_pattern"
    with intervene(model, [f"clamp:{name}=induction:0.9"]):
        _, cache = model.run_with_cache(prompts, names=[name], method="predict_prompts")
    row = cache[name][:, :, 2 * 8]  # the query's row
    torch.testing.assert_close(row.sum(-1), torch.ones_like(row[..., 0]))
    torch.testing.assert_close(row[..., 1:16:2], torch.full_like(row[..., 1:16:2], 1 / 8))


def test_ensembles_of_other_tasks_train_under_a_pattern_clamp(tmp_path):
    from iclab.config import config_to_dict
    from iclab.runs import RunDir

    config = _config(("clamp:blocks.0.attn.hook_pattern=previous",), seeds=(0, 1), steps=3)
    config = dataclasses.replace(config, ensemble=EnsembleConfig(seeds=(0, 1), burstiness=(2, 4)))
    result = train(config, RunDir.create(tmp_path / "run", config_to_dict(config)))
    assert result.final_eval["prev_token_score"] == pytest.approx(1.0)  # members measured under the clamp


def test_a_source_patch_outside_predict_calls_is_refused_and_prefix_calls_are_patched():
    import copy

    from iclab.models.gpt import GPTConfig as _GPT
    from iclab.tasks.linear import LinearConfig

    gpt = make_model(_GPT(width=16, layers=2, heads=2, mlp_ratio=2), 3).double()
    prompts = make_task(LinearConfig(d=3, n_points=5)).sample(4, generator=torch.Generator(), dtype=torch.float64)
    clean = gpt.predict_prefixes(prompts.x, prompts.y)
    with intervene(gpt, ["patch:blocks.1.hook_resid_post"], source=copy.deepcopy(gpt)):
        torch.testing.assert_close(gpt.predict_prefixes(prompts.x, prompts.y), clean)  # from an identical model
        with pytest.raises(ValueError, match="known only in predict calls"):
            gpt(gpt.layout.encode(prompts))  # forward: no source activation for this call


def test_per_member_fields_that_change_shapes_are_refused():
    from iclab.config import ConfigError as _CE
    from iclab.config import config_from_dict

    with pytest.raises(_CE, match=r"^ensemble\.n_classes: must be values that keep task 'softmax_regression'"):
        config_from_dict(
            {"task": {"name": "softmax_regression"}, "model": {"name": "gpt"},
             "ensemble": {"seeds": [0, 1], "n_classes": [3, 5]}}
        )  # fmt: skip
