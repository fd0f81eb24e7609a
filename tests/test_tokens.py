"""ConcatLayout: tokens [x_j, y_j], query tokens [x_q, 0], readout = −(query y-slot)."""

import torch

from iclab.algorithms.construct import construct_gd
from iclab.tasks import Prompts
from iclab.tokens import ConcatLayout


def _prompts(batch=2, n=3, m=2, d=4) -> Prompts:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, n + m, d, generator=g)
    y = torch.randn(batch, n + m, generator=g)
    return Prompts(x=x, y=y, n_ctx=n)


def test_encode_shapes_and_values():
    p = _prompts()
    tokens = ConcatLayout().encode(p)
    assert tokens.shape == (2, 5, 5)
    assert torch.equal(tokens[:, :, :4], p.x)  # x in the first d slots of every token
    assert torch.equal(tokens[:, :3, 4], p.y_ctx)  # context y-slots hold y
    assert torch.equal(tokens[:, 3:, 4], torch.zeros(2, 2))  # query y-slots are 0: the query targets never leak
    assert torch.equal(ConcatLayout.encode_parts(p.x_ctx, p.y_ctx, p.x_q), tokens)


def test_readout_is_the_negated_query_y_slot():
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    out = ConcatLayout.readout(tokens, n_ctx=3)
    assert out.shape == (2, 2)
    assert torch.equal(out, -tokens[:, 3:, 2])
    assert out[0, 0].item() == -11.0  # token (0, 3), slot 2: 3·3 + 2


def test_sign_convention_on_one_gd_step():
    # d = 1, one context pair (x, y) = (1, 2), query x_q = 3, η = 1: GD from 0 gives ŵ = η·y·x = 2, ŷ = 6.
    # The construction writes −ŷ into the query's y-slot; the readout returns +ŷ.
    model = construct_gd(1, 1, [1.0])
    x_ctx = torch.tensor([[[1.0]]], dtype=torch.float64)
    y_ctx = torch.tensor([[2.0]], dtype=torch.float64)
    x_q = torch.tensor([[[3.0]]], dtype=torch.float64)
    tokens = ConcatLayout.encode_parts(x_ctx, y_ctx, x_q)
    out = model(tokens, 1)
    assert out[0, 1, 1].item() == -6.0
    assert model.predict(x_ctx, y_ctx, x_q).item() == 6.0
    assert model.layout.name == "concat"
