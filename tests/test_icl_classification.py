"""The icl_classification task family (Reddy 2023) and its reference learners: every task statistic (burstiness
counts, fraction of bursty prompts, Zipf rank–frequency, noise level, label mapping, reproducibility) and every
evaluation split, each against a closed form or an independent numpy/scipy reference with a stated Monte Carlo
tolerance (Z = 4.5 standard errors: a seeded test, so it is deterministic; the bound is what a fresh seed would pass
with probability ≈ 1 − 7e-6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from iclab.algorithms.icl_classification import (
    Chance,
    ClassMeanLookup,
    InductionHead,
    binomial_se,
)
from iclab.algorithms.registry import LearnerSpecError, make_learner
from iclab.config import task_config
from iclab.metrics import accuracy
from iclab.tasks import make_task
from iclab.tasks.icl_classification import (
    ICLClassificationConfig,
    ICLClassificationTask,
    ICLPrompts,
    sample_excluding,
    successive_sample,
    zipf_probs,
)
from iclab.validation import ConfigError

Z = 4.5
P_MIN = 1e-4  # chi-square tests: p-values above this (deterministic with the seed)


def _task(**fields) -> ICLClassificationTask:
    task = make_task(task_config("icl_classification", **fields))
    assert isinstance(task, ICLClassificationTask)
    return task


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------- config


def test_defaults_are_reddys_base_setting():
    c = ICLClassificationConfig()
    assert (c.d, c.n_points, c.n_classes, c.n_labels, c.within_class_noise) == (63, 8, 512, 32, 0.1)
    assert (c.burstiness, c.p_bursty, c.zipf_alpha, c.n_context_classes) == (2, 1.0, 0.0, 4)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"burstiness": 3}, "task.burstiness"),  # does not divide N = 8
        ({"n_classes": 16, "n_labels": 32}, "task.n_classes"),  # K < L
        ({"n_labels": 1}, "task.n_labels"),
        ({"p_bursty": 1.5}, "task.p_bursty"),
        ({"zipf_alpha": -1.0}, "task.zipf_alpha"),
        ({"p_novel": 1.5}, "task.p_novel"),
        ({"within_class_noise": -0.1}, "task.within_class_noise"),
        ({"pool_size": 4}, "task.pool_size"),
        ({"n_points": 8, "burstiness": 1, "n_labels": 4, "n_classes": 8}, "task.burstiness"),  # N/B > L
    ],
)
def test_bad_fields_fail_in_one_line_naming_the_field(fields, field):
    with pytest.raises(ConfigError, match=rf"^{field}: ") as info:
        task_config("icl_classification", **fields)
    assert "\n" not in str(info.value)


def test_the_family_cannot_be_mixed():
    with pytest.raises(ConfigError, match="icl_classification"):
        task_config("mixture", components=("linear", "icl_classification"))


# ---------------------------------------------------------------------------------------------------- contract


def test_prompts_follow_the_label_contract():
    task = _task(n_queries=3)
    p = task.sample(5, generator=_gen())
    assert isinstance(p, ICLPrompts)
    assert p.x.shape == (5, 11, 63) and p.x.dtype == torch.float32
    assert p.y.shape == (5, 11) and p.y.dtype == torch.long and p.y_vocab == 32 and p.discrete_y
    assert p.classes.shape == (5, 11) and p.bursty.shape == (5,) and p.f is None
    assert int(p.y.min()) >= 0 and int(p.y.max()) < 32
    moved = p.to("cpu", torch.float64)
    assert isinstance(moved, ICLPrompts) and moved.x.dtype == torch.float64 and moved.y.dtype == torch.long
    assert isinstance(p[1:3], ICLPrompts) and p[1:3].classes.shape == (2, 11)


def test_reproducible_from_a_seed():
    task = _task(p_bursty=0.5, zipf_alpha=1.0)
    for split in ("train", "icl_novel", "icl_permuted", "iwl"):
        a, b = task.split(split, 64, generator=_gen(3)), task.split(split, 64, generator=_gen(3))
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.classes, b.classes), split
        c = task.split(split, 64, generator=_gen(4))
        assert not torch.equal(a.x, c.x), split
    # the world (means, labels) depends on class_seed only: a second task object draws the same one
    assert torch.equal(_task().class_means(), task.class_means())
    assert torch.equal(_task().class_labels(), task.class_labels())
    assert not torch.equal(_task(class_seed=1).class_means(), task.class_means())
    assert torch.allclose(task.class_means(dtype=torch.float32).double(), task.class_means(), atol=1e-7)


def test_a_prompt_length_override_and_targets_are_refused():
    task = _task()
    with pytest.raises(ValueError, match=r"^n_points: "):
        task.sample(2, generator=_gen(), n_points=4)
    p = task.sample(2, generator=_gen())
    with pytest.raises(ValueError, match=r"^targets: "):
        task.targets(p.x, p)
    with pytest.raises(ValueError, match=r"^split: unknown 'bad'"):
        task.split("bad", 2, generator=_gen())


# ---------------------------------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("B", [1, 2, 4, 8])
def test_bursty_prompts_hold_each_context_class_exactly_B_times_and_the_querys_class(B):
    task = _task(burstiness=B, n_queries=2, zipf_alpha=1.0, n_classes=64)
    p = task.sample(500, generator=_gen(B))
    assert bool(p.bursty.all())
    ctx, q = p.classes[:, :8], p.classes[:, 8:]
    for row, queries in zip(ctx.tolist(), q.tolist(), strict=True):
        counts = np.unique(row, return_counts=True)[1]
        assert len(counts) == 8 // B and set(counts.tolist()) == {B}
        assert set(queries) <= set(row)


def test_the_fraction_of_bursty_prompts_is_p_bursty():
    n, p_b = 20000, 0.3
    p = _task(p_bursty=p_b, n_classes=4096).sample(n, generator=_gen(1))
    frac = float(p.bursty.double().mean())
    assert abs(frac - p_b) < Z * math.sqrt(p_b * (1 - p_b) / n)
    # an i.i.d. prompt with K = 4096 almost never repeats a class; a bursty one always does (B = 2)
    repeats = torch.tensor([len(set(r)) < 8 for r in p.classes[:, :8].tolist()])
    assert torch.equal(repeats[p.bursty], torch.ones(int(p.bursty.sum()), dtype=torch.bool))
    assert float(repeats[~p.bursty].double().mean()) < 0.02  # birthday bound: 28/4096 ≈ 0.007


def test_the_fraction_of_novel_class_prompts_is_p_novel():
    """Reddy's p_C: novel prompts have class ids ≥ K (fresh centroids), are bursty, and hold the query's class;
    the rest follow p_bursty (here 0: i.i.d. trained classes)."""
    n, p_n, K = 20000, 0.4, 64
    p = _task(p_bursty=0.0, p_novel=p_n, n_classes=K).sample(n, generator=_gen(2))
    novel = (p.classes >= K).all(1)  # [B]
    assert torch.equal(novel | (p.classes < K).all(1), torch.ones(n, dtype=torch.bool))  # never mixed
    assert abs(float(novel.double().mean()) - p_n) < Z * math.sqrt(p_n * (1 - p_n) / n)
    assert torch.equal(p.bursty, novel)
    in_ctx = (p.classes[:, :8] == p.classes[:, 8:9]).any(1)
    assert bool(in_ctx[novel].all())
    # the novel prompts' labels are those of their own classes: one label per class within a prompt
    for row in torch.nonzero(novel)[:50, 0].tolist():
        pairs = set(zip(p.classes[row].tolist(), p.y[row].tolist()))
        assert len(pairs) == len(set(p.classes[row].tolist()))


@pytest.mark.parametrize("alpha", [0.0, 1.0, 1.5])
def test_iid_classes_follow_the_zipf_rank_frequency_law(alpha):
    K, n = 64, 40000
    task = _task(n_classes=K, n_labels=8, zipf_alpha=alpha, p_bursty=0.0)
    p = task.sample(n // 9 + 1, generator=_gen(2))
    counts = np.bincount(p.classes.flatten().numpy(), minlength=K)
    expected = (np.arange(1, K + 1, dtype=float) ** -alpha) / (np.arange(1, K + 1, dtype=float) ** -alpha).sum()
    assert np.allclose(zipf_probs(K, alpha).numpy(), expected)
    assert stats.chisquare(counts, counts.sum() * expected).pvalue > P_MIN
    if alpha > 0:  # the rank–frequency slope on log–log axes, over the well-sampled top ranks
        top = np.arange(1, 17)
        slope = np.polyfit(np.log(top), np.log(counts[:16]), 1)[0]
        assert abs(slope + alpha) < 0.1


def test_successive_sampling_against_its_closed_form():
    """First draw ~ p; second draw P(j) = Σ_{i≠j} p_i p_j / (1 − p_i); all distinct."""
    K, n = 12, 60000
    p = zipf_probs(K, 1.2)
    draws = successive_sample(p, n, 3, generator=_gen(5)).numpy()
    assert all(len(set(r)) == 3 for r in draws[:2000].tolist())
    pn = p.numpy()
    second = np.array([sum(pn[i] * pn[j] / (1 - pn[i]) for i in range(K) if i != j) for j in range(K)])
    for col, ref in ((0, pn), (1, second)):
        counts = np.bincount(draws[:, col], minlength=K)
        assert stats.chisquare(counts, n * ref).pvalue > P_MIN


def test_sampling_excluding_a_class_is_p_conditioned():
    K, n = 10, 50000
    p = zipf_probs(K, 1.0)
    exclude = torch.tensor([0, 3, 9]).repeat_interleave(n // 3)  # [n'] the rank-1, a middle and the last class
    draws = sample_excluding(p, exclude.unsqueeze(1), 1, generator=_gen(6)).squeeze(1)
    assert not bool((draws == exclude).any())
    for e in (0, 3, 9):
        sel = draws[exclude == e].numpy()
        ref = p.numpy().copy()
        ref[e] = 0
        ref /= ref.sum()
        counts = np.bincount(sel, minlength=K)
        keep = ref > 0
        assert stats.chisquare(counts[keep], len(sel) * ref[keep]).pvalue > P_MIN


@pytest.mark.parametrize("eps", [0.1, 0.5, 2.0])
@pytest.mark.parametrize("split", ["train", "icl_novel"])
def test_noise_level_item_to_centre_distances_match_the_closed_form(eps, split):
    """|x − μ/√(1+ε²)|² = ε²|η|²/(1+ε²), |η|²·D ~ χ²_D: mean ε²/(1+ε²), variance (ε²/(1+ε²))²·2/D; E|x|² = 1."""
    task = _task(within_class_noise=eps, d=20)
    p = task.split(split, 4000, generator=_gen(7), dtype=torch.float64)
    x = p.x.reshape(-1, 20)
    s = eps**2 / (1 + eps**2)
    if split == "train":
        dist = ((x - task.class_centres()[p.classes.flatten()]) ** 2).sum(-1)
        assert abs(float(dist.mean()) - s) < Z * s * math.sqrt(2 / 20 / len(dist))
    else:  # novel centroids are not stored: two items of one class differ by ε(η − η')/√(1+ε²), |·|² mean 2s
        same = p.classes[:, 0:1] == p.classes[:, 1:8]  # [B, 7]
        b, j = same.nonzero(as_tuple=True)
        diff = ((p.x[b, 0] - p.x[b, j + 1]) ** 2).sum(-1)
        # each pair's |·|²·D/(2s) ~ χ²_D (variance (2s)²·2/D); one pair per prompt (B = 2), so independent
        assert abs(float(diff.mean()) - 2 * s) < Z * 2 * s * math.sqrt(2 / 20 / len(diff))
    sq = (x**2).sum(-1)  # |x|² = (|μ|² + 2ε μᵀη + ε²|η|²)/(1+ε²), mean 1, variance (2 + 4ε² + 2ε⁴)/(D(1+ε²)²) = 2/D
    assert abs(float(sq.mean()) - 1) < Z * math.sqrt(2 / 20 / len(sq)) * 3  # items of one prompt share μ: ×3


def test_labels_map_classes_and_are_balanced():
    task = _task(n_classes=100, n_labels=32)
    labels = task.class_labels()
    counts = torch.bincount(labels, minlength=32)
    assert set(counts.tolist()) == {3, 4} and int(counts.sum()) == 100  # ⌊100/32⌋ or ⌈100/32⌉
    for split in ("train", "iwl"):
        p = task.split(split, 300, generator=_gen(8))
        assert torch.equal(p.y, labels[p.classes]), split


def test_permuted_split_relabels_each_prompt_by_one_permutation():
    task = _task(n_classes=64, n_labels=8, burstiness=1)  # 8 context classes
    p = task.icl_permuted(2000, generator=_gen(9))
    original = task.class_labels()[p.classes]  # [B, T]
    for orig, new in zip(original.tolist(), p.y.tolist(), strict=True):
        mapping: dict[int, int] = {}
        for a, b in zip(orig, new, strict=True):
            assert mapping.setdefault(a, b) == b  # a function of the original label …
        assert len(set(mapping.values())) == len(mapping)  # … and one-to-one
    kept = float((original[:, -1] == p.y[:, -1]).double().mean())  # a uniform permutation fixes a label w.p. 1/L
    assert abs(kept - 1 / 8) < Z * math.sqrt(1 / 8 * 7 / 8 / 2000)


def test_novel_split_has_fresh_classes_with_distinct_labels():
    task = _task()
    p = task.icl_novel(500, generator=_gen(10))
    assert int(p.classes.min()) >= task.config.n_classes
    for cls, lab in zip(p.classes[:, :8].tolist(), p.y[:, :8].tolist(), strict=True):
        pairs = set(zip(cls, lab, strict=True))
        assert len(pairs) == 4 and len({b for _, b in pairs}) == 4
    assert bool((p.classes[:, 8:] == p.classes[:, :8]).any(-1).all())  # the query's class is in the context
    # fresh centroids: no item is near a trained class centre
    d = torch.cdist(p.x.reshape(-1, 63).double(), task.class_centres()).min(-1).values
    assert float(d.min()) > 0.5


def test_iwl_split_keeps_the_querys_class_out_of_the_context():
    task = _task(zipf_alpha=1.0, n_classes=32, n_labels=8, n_queries=2)
    p = task.iwl(3000, generator=_gen(11))
    q = p.classes[:, 8]
    assert bool((p.classes[:, 9] == q).all())
    assert not bool((p.classes[:, :8] == q.unsqueeze(1)).any())
    assert not bool(p.bursty.any())


# ---------------------------------------------------------------------------------------------------- learners


def _acc(learner, p) -> float:
    return float(accuracy(learner.predict(p.x_ctx, p.y_ctx, p.x_q), p.y_q))


def test_induction_is_perfect_in_context_and_chance_in_weights_lookup_the_reverse():
    """The acceptance of issue 13: the ideal induction head scores 100 % on both in-context splits and chance on the
    in-weights split; the class-mean lookup the reverse. Chance on iwl for the copy is (K/L − 1)/(K − 1) (the
    copied class shares the query's label), 1/L for the lookup on the in-context splits."""
    K, L, n = 512, 32, 20000
    task = _task(n_classes=K, n_labels=L)
    induction, centroid, lookup = InductionHead(), InductionHead("centroid"), ClassMeanLookup.from_task(task)
    chance = Chance(L, seed=1)
    splits = {s: task.split(s, n, generator=_gen(12)) for s in ("icl_novel", "icl_permuted", "iwl")}
    for s in ("icl_novel", "icl_permuted"):
        assert _acc(induction, splits[s]) == 1.0 and _acc(centroid, splits[s]) == 1.0, s
        assert abs(_acc(lookup, splits[s]) - 1 / L) < Z * binomial_se(1 / L, n), s
    copy_chance = (K / L - 1) / (K - 1)
    for learner in (induction, centroid):
        assert abs(_acc(learner, splits["iwl"]) - copy_chance) < Z * binomial_se(copy_chance, n)
    assert _acc(lookup, splits["iwl"]) == 1.0
    for s, p in splits.items():
        assert abs(_acc(chance, p) - 1 / L) < Z * binomial_se(1 / L, n), s


def test_training_prompts_are_solved_by_both_strategies_when_bursty():
    task = _task(n_classes=128)
    p = task.sample(2000, generator=_gen(13))
    assert _acc(InductionHead(), p) == 1.0 and _acc(ClassMeanLookup.from_task(task), p) == 1.0


def test_induction_head_against_a_numpy_reference_with_masks():
    g = np.random.default_rng(0)
    B, n, m, d = 40, 9, 3, 5
    x_ctx, x_q = g.normal(size=(B, n, d)), g.normal(size=(B, m, d))
    y_ctx = g.integers(0, 4, size=(B, n))
    mask = g.random((B, n)) < 0.7
    mask[0] = False  # an empty context predicts label 0
    dist = ((x_q[:, :, None] - x_ctx[:, None]) ** 2).sum(-1)  # [B, m, n]
    ref = np.take_along_axis(y_ctx, np.where(mask[:, None], dist, np.inf).argmin(-1), axis=1)
    ref[0] = 0
    got = InductionHead().predict(*map(torch.tensor, (x_ctx, y_ctx, x_q, mask)))
    assert np.array_equal(got.numpy(), ref)
    # centroid mode: the label whose present items have the nearest mean
    cref = np.zeros((B, m), dtype=int)
    for b in range(1, B):
        labs = sorted(set(y_ctx[b][mask[b]].tolist()))
        cents = np.stack([x_ctx[b][mask[b] & (y_ctx[b] == lab)].mean(0) for lab in labs])
        cref[b] = np.array(labs)[((x_q[b][:, None] - cents[None]) ** 2).sum(-1).argmin(-1)]
    got = InductionHead("centroid").predict(*map(torch.tensor, (x_ctx, y_ctx, x_q, mask)))
    assert np.array_equal(got[1:].numpy(), cref[1:])


def test_lookup_against_a_brute_force_reference_and_chunking():
    g = np.random.default_rng(1)
    centres, labels = g.normal(size=(50, 6)), g.integers(0, 7, size=50)
    x_q = g.normal(size=(8, 4, 6))
    ref = labels[((x_q[:, :, None] - centres) ** 2).sum(-1).argmin(-1)]
    for chunk in (1 << 22, 50, 7):
        lookup = ClassMeanLookup(torch.tensor(centres), torch.tensor(labels), chunk=chunk)
        got = lookup.predict(
            torch.zeros(8, 2, 6, dtype=torch.float64), torch.zeros(8, 2, dtype=torch.long), torch.tensor(x_q)
        )
        assert np.array_equal(got.numpy(), ref)


def test_registry_names_and_errors():
    task = _task()
    assert (
        isinstance(make_learner("induction"), InductionHead) and make_learner("induction:centroid").mode == "centroid"
    )
    assert isinstance(make_learner("lookup", task), ClassMeanLookup)
    assert make_learner("chance", task).n_labels == 32 and make_learner("chance:5:seed=3").n_labels == 5
    with pytest.raises(LearnerSpecError, match="icl_classification task"):
        make_learner("lookup")
    with pytest.raises(LearnerSpecError, match="chance:32"):
        make_learner("chance")
    with pytest.raises(LearnerSpecError, match="mode"):
        make_learner("induction:bad")
    with pytest.raises(ValueError, match=r"^y_ctx: class labels"):  # real targets (a regression task's) are refused
        Chance(4).predict(torch.zeros(2, 3, 4), torch.zeros(2, 3), torch.zeros(2, 1, 4))
