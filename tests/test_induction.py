"""iclab.analysis.induction: head scores against hand-made patterns and the closed forms of uniform attention."""

from __future__ import annotations

import pytest
import torch

from iclab.analysis.induction import (
    head_scores,
    progress_measures,
    scores_of_patterns,
    training_measures,
    uniform_scores,
)
from iclab.config import EnsembleConfig, EvalConfig, ExperimentConfig, TrainConfig
from iclab.models import make_model
from iclab.models.attn_only import AttnOnlyConfig
from iclab.models.lsa import LSAConfig
from iclab.tasks import make_task
from iclab.tasks.icl_classification import ICLClassificationConfig

N, B = 8, 2


def _prompts(n: int = 32, **kw):
    task = make_task(ICLClassificationConfig(d=16, n_classes=64, n_labels=16, n_points=N, burstiness=B, **kw))
    return task, task.icl_novel(n, generator=torch.Generator().manual_seed(0), dtype=torch.float32)


def test_uniform_attention_closed_forms():
    _, prompts = _prompts()
    s = uniform_scores(prompts.params["classes"], N)
    L = 2 * N + 1  # the query's row sees the 2N context tokens and itself
    assert float(s["induction"]) == pytest.approx(B / L)  # B labels of its class
    assert float(s["match_item"]) == pytest.approx(B / L)
    assert float(s["label_attention"]) == pytest.approx(N / L)
    # label i (token 2i + 1) sees 2i + 2 tokens
    assert float(s["previous_token"]) == pytest.approx(sum(1 / (2 * i + 2) for i in range(N)) / N)


def test_ideal_circuit_patterns_score_one():
    """A pattern that puts each label's row on its item and the query's row on its class's labels scores 1."""
    _, prompts = _prompts(8)
    classes = prompts.params["classes"]  # [B, N + 1]
    T = 2 * (N + 1)
    pat = torch.zeros(2, len(prompts), 1, T, T)
    for t in range(T):
        pat[:, :, 0, t, t] = 1.0
    for i in range(N):  # layer 0: previous-token head on the labels
        pat[0, :, 0, 2 * i + 1] = 0.0
        pat[0, :, 0, 2 * i + 1, 2 * i] = 1.0
    match = (classes[:, :N] == classes[:, N:]).float()  # [B, N]
    q = 2 * N
    pat[1, :, 0, q] = 0.0
    pat[1, :, 0, q, 1 : 2 * N : 2] = match / match.sum(1, keepdim=True)  # layer 1: the query on its labels
    s = scores_of_patterns(pat, classes, N)
    assert s["previous_token"][0, 0] == pytest.approx(1.0)
    assert s["induction"][1, 0] == pytest.approx(1.0)
    assert s["label_attention"][1, 0] == pytest.approx(1.0)
    assert s["match_item"][1, 0] == pytest.approx(0.0)
    assert s["induction"][0, 0] == pytest.approx(0.0)


def test_head_scores_read_the_models_patterns():
    """head_scores of a real model equal the scores of its cached patterns, chunking included."""
    _, prompts = _prompts(40)
    model = make_model(AttnOnlyConfig(width=32, classifier_hidden=32), 16, n_labels=16)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(2)]
    _, cache = model.run_with_cache(prompts, names=names, method="predict_prompts")
    direct = scores_of_patterns(torch.stack([cache[n] for n in names]), prompts.params["classes"], N)
    chunked = head_scores(model, prompts, chunk=16)
    for key, value in direct.items():
        torch.testing.assert_close(chunked[key], value.cpu(), rtol=1e-6, atol=1e-9)


def test_progress_measures_columns_and_ranges():
    _, prompts = _prompts(32)
    model = make_model(AttnOnlyConfig(width=32, classifier_hidden=32), 16, n_labels=16)
    m = progress_measures(model, prompts)
    for key in (
        "item_label_attention",
        "target_item_label_attention",
        "target_label_attention",
        "context_label_accuracy",
        "induction_score",
        "prev_token_score",
        "induction_L0H0",
        "induction_L1H0",
        "prev_token_L0H0",
        "prev_token_L1H0",
    ):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["induction_score"] == max(m["induction_L0H0"], m["induction_L1H0"])
    assert m["prev_token_score"] == m["prev_token_L0H0"]  # the layers before the last
    # context-label accuracy by hand
    pred = model.predict_prompts(prompts).argmax(-1)
    by_hand = (pred[:, :, None] == prompts.y_ctx[:, None, :]).any(-1).double().mean()
    assert m["context_label_accuracy"] == pytest.approx(float(by_hand))


def test_models_without_interleaved_patterns_measure_nothing():
    _, prompts = _prompts(4)
    lsa = make_model(LSAConfig(), 16)
    assert head_scores(lsa, prompts) == {}
    assert training_measures(lsa, prompts) == {}


def test_prompts_without_classes_are_refused():
    from iclab.tasks.linear import LinearConfig

    prompts = make_task(LinearConfig(d=4, n_points=5)).sample(2, generator=torch.Generator())
    model = make_model(AttnOnlyConfig(width=8, classifier_hidden=8), 4)
    with pytest.raises(ValueError, match="classes"):
        head_scores(model, prompts)


def test_measures_are_logged_during_training(tmp_path):
    """The trainer logs the progress measures (each member's too) at every evaluation of a label run."""
    from iclab.config import config_to_dict
    from iclab.runs import RunDir
    from iclab.training.trainer import train

    config = ExperimentConfig(
        task=ICLClassificationConfig(d=8, n_classes=32, n_labels=8, n_points=4),
        model=AttnOnlyConfig(width=16, classifier_hidden=16),
        train=TrainConfig(steps=4, batch_size=8, eval_every=2, checkpoint_every=4, progress=False),
        eval=EvalConfig(n_prompts=16),
        ensemble=EnsembleConfig(seeds=(0, 1)),
    )
    run = RunDir.create(tmp_path / "run", config_to_dict(config))
    result = train(config, run)
    metrics = run.metrics()
    logged = metrics[metrics["induction_score"].notna()]
    assert list(logged["step"]) == [0, 2, 4]
    assert {"induction_score/member0", "induction_score/member1", "context_label_accuracy"} <= set(metrics)
    assert 0 <= result.final_eval["target_item_label_attention"] <= 1
