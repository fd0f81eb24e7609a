"""The Prompts contract: real and discrete inputs and targets, masks, vocabularies; casts keep integer tensors."""

import pytest
import torch

from iclab.prompts import Prompts


def _real(B=3, T=5, d=2, n=3) -> Prompts:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(B, T, d, generator=g), torch.randn(B, T, generator=g)
    return Prompts(x=x, y=y, n_ctx=n, f=y.clone(), mask=torch.ones(B, T, dtype=torch.bool))


def _discrete(B=3, T=6, n=5, vocab=7, labels=4) -> Prompts:
    g = torch.Generator().manual_seed(1)
    items = torch.randint(vocab, (B, T), generator=g)
    y = torch.randint(labels, (B, T), generator=g)
    return Prompts(x=items, y=y, n_ctx=n, x_vocab=vocab, y_vocab=labels)


def test_real_prompts_cast_and_slice():
    p = _real()
    q = p.to(dtype=torch.float64)
    assert q.x.dtype == q.y.dtype == q.f.dtype == torch.float64 and q.mask.dtype == torch.bool
    assert not p.discrete_x and not p.discrete_y
    half = p[1:]
    assert len(half) == 2 and half.mask.shape == (2, 5) and torch.equal(half.x_q, p.x_q[1:])


def test_discrete_tokens_and_labels_keep_their_dtype():
    p = _discrete()
    q = p.to(dtype=torch.float32)
    assert q.x.dtype == q.y.dtype == torch.long and (q.x_vocab, q.y_vocab) == (7, 4)
    assert q.discrete_x and q.discrete_y
    assert q.x_ctx.shape == (3, 5) and q.y_q.shape == (3, 1)
    assert torch.equal(q[:2].x, p.x[:2])
    with pytest.raises(ValueError, match="scaling needs real inputs"):
        p.scaled(input_scale=2.0)


def test_item_vectors_with_integer_labels():
    """Reddy's setting: real item vectors, integer labels."""
    x = torch.randn(2, 9, 4)
    p = Prompts(x=x, y=torch.zeros(2, 9, dtype=torch.long), n_ctx=8, y_vocab=3).to(dtype=torch.float64)
    assert p.x.dtype == torch.float64 and p.y.dtype == torch.long and not p.discrete_x and p.discrete_y


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(x=torch.zeros(2, 3), y=torch.zeros(2, 3)), r"prompts\.x: must be inputs \[B, T, d\]"),
        (dict(x=torch.zeros(2, 3, 1, dtype=torch.long), y=torch.zeros(2, 3)), r"prompts\.x: must be token ids"),
        (dict(x=torch.zeros(2, 3, 1), y=torch.zeros(2, 4)), r"prompts\.y: leading shape"),
        (dict(x=torch.zeros(2, 3, 1), y=torch.zeros(2, 3, 2, dtype=torch.long)), r"prompts\.y: labels must be"),
        (dict(x=torch.zeros(2, 3, 1), y=torch.zeros(2, 3), n_ctx=4), r"prompts\.n_ctx: must be an integer in \[0, T"),
        (dict(x=torch.zeros(2, 3, 1), y=torch.zeros(2, 3), mask=torch.ones(2, 3)), r"prompts\.mask: must be bool"),
        (dict(x=torch.zeros(2, 3, 1), y=torch.zeros(2, 3), f=torch.zeros(2, 2)), r"prompts\.f: shape"),
        (dict(x=torch.zeros(2, 3, 1), y=torch.zeros(2, 3), y_vocab=3), r"prompts\.y_vocab: an integer >= 1 for"),
        (dict(x=torch.zeros(2, 3, dtype=torch.long), y=torch.zeros(2, 3), x_vocab=0), r"prompts\.x_vocab"),
    ],
)
def test_contract_violations_are_one_line_errors(kwargs, message):
    kwargs.setdefault("n_ctx", 2)
    with pytest.raises(ValueError, match=message) as info:
        Prompts(**kwargs)
    assert "\n" not in str(info.value)


def test_evaluation_entry_points_name_non_finite_inputs():
    import math

    from iclab.algorithms.least_squares import OLS
    from iclab.analysis.compare import compare_learners
    from iclab.evaluation import error_curves
    from iclab.tasks import make_task
    from iclab.tasks.linear import LinearConfig

    prompts = make_task(LinearConfig(d=3, n_points=5)).sample(8, generator=torch.Generator().manual_seed(0))
    assert prompts.check_finite() is prompts
    x = prompts.x.clone()
    x[2, 1, 0] = math.nan
    y = prompts.y.clone()
    y[0, 0] = math.inf
    for bad, field in ((Prompts(x=x, y=prompts.y, n_ctx=5), "x"), (Prompts(x=prompts.x, y=y, n_ctx=5), "y")):
        with pytest.raises(ValueError, match=rf"prompts\.{field}: 1 non-finite values"):
            error_curves({"ols": OLS()}, bad, metric="mse")
        with pytest.raises(ValueError, match=rf"prompts\.{field}: 1 non-finite values"):
            compare_learners(OLS(), OLS(), bad)
