"""Token layouts: concat ([x_j, y_j], readout −(query y-slot)), interleaved (x_1, y_1, …, readout at x tokens),
separate (x and y tokens with shared pair positions, readout at the queries), and the registry."""

import pytest
import torch

from iclab.algorithms.construct import construct_gd
from iclab.tasks import Prompts
from iclab.tokens import LAYOUTS, ConcatLayout, InterleavedLayout, SeparateLayout, causal_mask, make_layout


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


# --- helpers for the new layouts ------------------------------------------------------------------------------------
def _vector_prompts(batch=2, n=3, m=2, d=4, k=3) -> Prompts:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, n + m, d, generator=g)
    y = torch.randn(batch, n + m, k, generator=g)
    return Prompts(x=x, y=y, n_ctx=n)


# --- registry ----------------------------------------------------------------------------------------------------
def test_registry_builds_every_layout_and_states_widths():
    assert set(LAYOUTS) == {"concat", "interleaved", "separate"}
    for name in LAYOUTS:
        assert make_layout(name).name == name
    assert make_layout("concat").width(4) == 5 and make_layout("concat", k=3).width(4) == 7
    assert make_layout("interleaved").width(4) == 4 and make_layout("interleaved", k=6).width(4) == 6
    assert make_layout("separate", pos_dim=6).width(4) == 11 and make_layout("separate", k=3, pos_dim=6).width(4) == 13


def test_unknown_layout_name_is_one_line_listing_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown value 'interleave'; choose one of: concat, interleaved, separate"):
        make_layout("interleave")


def test_bad_options_and_target_shapes_fail_loudly():
    with pytest.raises(ValueError, match=r"layout\.pos_kind"):
        SeparateLayout(pos_kind="learned")
    with pytest.raises(ValueError, match="even"):
        SeparateLayout(pos_dim=5)
    with pytest.raises(ValueError, match=r"layout\.k"):
        InterleavedLayout(k=0)
    for layout in (ConcatLayout(), InterleavedLayout(), SeparateLayout()):
        with pytest.raises(ValueError, match=r"targets \[B, T\]"):
            layout.encode(_vector_prompts())  # a scalar layout given vector targets
    with pytest.raises(ValueError, match=r"targets \[B, T, 2\]"):
        InterleavedLayout(k=2).encode(_vector_prompts(k=3))


# --- concat with vector targets ----------------------------------------------------------------------------------
def test_concat_vector_targets_encode_and_readout():
    p = _vector_prompts()
    layout = make_layout("concat", k=3)
    tokens = layout.encode(p)
    assert tokens.shape == (2, 5, 7)
    assert torch.equal(tokens[:, :, :4], p.x)
    assert torch.equal(tokens[:, :3, 4:], p.y_ctx)
    assert torch.equal(tokens[:, 3:, 4:], torch.zeros(2, 2, 3))
    assert torch.equal(layout.readout(tokens, 3), -tokens[:, 3:, 4:])  # the instance binds k
    assert ConcatLayout.readout(tokens, n_ctx=3).shape == (2, 2)  # the class-level call is unchanged (scalar)


# --- interleaved -------------------------------------------------------------------------------------------------
def test_interleaved_scalar_shapes_and_round_trip():
    p = _prompts()  # T = 5, d = 4
    tokens = InterleavedLayout().encode(p)
    assert tokens.shape == (2, 10, 4)
    assert torch.equal(tokens[:, 0::2], p.x)  # x tokens at 0, 2, 4, …
    assert torch.equal(tokens[:, 1::2, 0], p.y)  # y tokens [y, 0, …, 0] at 1, 3, 5, …
    assert torch.equal(tokens[:, 1::2, 1:], torch.zeros(2, 5, 3))


@pytest.mark.parametrize(("d", "k"), [(4, 3), (2, 5)])
def test_interleaved_vector_shapes_and_round_trip(d, k):
    p = _vector_prompts(d=d, k=k)
    layout = InterleavedLayout(k=k)
    tokens = layout.encode(p)
    width = max(d, k)
    assert tokens.shape == (2, 10, width)
    assert torch.equal(tokens[:, 0::2, :d], p.x) and torch.equal(tokens[:, 0::2, d:], torch.zeros(2, 5, width - d))
    assert torch.equal(tokens[:, 1::2, :k], p.y) and torch.equal(tokens[:, 1::2, k:], torch.zeros(2, 5, width - k))
    assert layout.readout(torch.zeros(2, 10, k)).shape == (2, 5, k)
    assert layout.readout(torch.zeros(2, 10, k), p.n_ctx).shape == (2, 2, k)


def test_interleaved_readout_takes_the_x_positions():
    layout = InterleavedLayout()
    outputs = torch.arange(10, dtype=torch.float32).reshape(1, 10, 1).expand(2, 10, 1)  # output = position index
    assert torch.equal(layout.readout(outputs), torch.tensor([[0.0, 2, 4, 6, 8]] * 2))  # every prefix
    assert torch.equal(layout.readout(outputs, n_ctx=3), torch.tensor([[6.0, 8]] * 2))  # the queries only
    with pytest.raises(ValueError, match="output head"):
        layout.readout(torch.zeros(2, 10, 4))  # full tokens, not head outputs


def test_interleaved_encode_parts_has_no_query_labels():
    p = _prompts()
    layout = InterleavedLayout()
    full, parts = layout.encode(p), layout.encode_parts(p.x_ctx, p.y_ctx, p.x_q)
    assert parts.shape == full.shape  # same positions, so the same readout
    assert torch.equal(parts[:, :7], full[:, :7])  # context pairs and the first query's x token
    assert torch.equal(parts[:, 7::2], torch.zeros(2, 2, 4))  # query y tokens are zero


def test_interleaved_prefix_mask_shows_x_up_to_t_and_y_before_t():
    n_points = 5
    mask = InterleavedLayout.mask(n_points)
    assert torch.equal(mask, causal_mask(2 * n_points))
    for t in range(n_points):
        visible = mask[2 * t].nonzero().flatten()  # the tokens x_t's token may attend to
        assert set((visible[visible % 2 == 0] // 2).tolist()) == set(range(t + 1))  # x_0 … x_t
        assert set((visible[visible % 2 == 1] // 2).tolist()) == set(range(t))  # y_0 … y_{t−1}


def test_interleaved_causal_model_prediction_t_depends_on_earlier_points_only():
    # a one-layer masked-mean "model": prediction t is a function of the tokens x_t's token may attend to
    p = _prompts(batch=1)
    layout = InterleavedLayout()
    x, y = p.x.clone().requires_grad_(), p.y.clone().requires_grad_()
    tokens = layout.encode_stream(x, y)  # [1, 10, 4]
    mask = layout.mask(5).to(tokens.dtype)
    outputs = ((mask / mask.sum(-1, keepdim=True)) @ tokens).sum(-1, keepdim=True)  # [1, 10, 1]
    pred = layout.readout(outputs)  # [1, 5]
    for t in range(5):
        gx, gy = torch.autograd.grad(pred[0, t], (x, y), retain_graph=True)
        assert (gx[0, : t + 1].abs().sum(-1) > 0).all() and not gx[0, t + 1 :].any()
        assert (gy[0, :t].abs() > 0).all() and not gy[0, t:].any()


def test_interleaved_query_mask_isolates_queries():
    mask = InterleavedLayout.mask(5, n_ctx=3)  # context tokens 0..5, query pairs (6, 7), (8, 9)
    assert torch.equal(mask[:6, :6], causal_mask(6))
    assert mask[8, :6].all() and mask[8, 8] and not mask[8, 6] and not mask[8, 7] and not mask[8, 9]
    assert mask[6, :7].all() and not mask[6, 7:].any()


# --- separate ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [None, 3])
def test_separate_shapes_and_round_trip(k):
    p = _prompts() if k is None else _vector_prompts(k=k)
    layout = SeparateLayout(k=k, pos_dim=6)
    k_out, n, d = k or 1, 3, 4
    tokens = layout.encode(p)
    assert tokens.shape == (2, 2 * n + 2, d + k_out + 6)
    y_ctx = p.y_ctx if k else p.y_ctx.unsqueeze(-1)
    assert torch.equal(tokens[:, 0 : 2 * n : 2, :d], p.x_ctx)  # x tokens [x_i, 0]
    assert torch.equal(tokens[:, 0 : 2 * n : 2, d : d + k_out], torch.zeros(2, n, k_out))
    assert torch.equal(tokens[:, 1 : 2 * n : 2, :d], torch.zeros(2, n, d))  # y tokens [0, y_i]
    assert torch.equal(tokens[:, 1 : 2 * n : 2, d : d + k_out], y_ctx)
    assert torch.equal(tokens[:, 2 * n :, :d], p.x_q)  # query tokens [x_q, 0]
    assert torch.equal(tokens[:, 2 * n :, d : d + k_out], torch.zeros(2, 2, k_out))
    assert layout.n_keys(n) == 2 * n


@pytest.mark.parametrize("pos_kind", ["sinusoidal", "onehot"])
def test_separate_positions_shared_within_a_pair_and_distinct_between_pairs(pos_kind):
    tokens = SeparateLayout(pos_dim=6, pos_kind=pos_kind).encode(_prompts())  # n = 3, m = 2
    pos = tokens[0, :, -6:]  # [8, 6]
    assert torch.equal(tokens[0, :, -6:], tokens[1, :, -6:])  # the same for every prompt
    for i in range(3):
        assert torch.equal(pos[2 * i], pos[2 * i + 1])  # x_i and y_i share their pair index
    distinct = torch.cat([pos[0:6:2], pos[6:]])  # one row per pair, then the queries
    assert torch.cdist(distinct, distinct).add(torch.eye(5)).min() > 1e-3


def test_separate_position_encodings_follow_their_definitions():
    sin = SeparateLayout(pos_dim=4).encoding(torch.tensor([0, 1]), torch.float64)
    freq = torch.tensor([1.0, 10000.0**-0.5], dtype=torch.float64)
    expected = torch.stack([freq.sin(), freq.cos()], -1).reshape(4)  # [sin ω₀, cos ω₀, sin ω₁, cos ω₁] at t = 1
    torch.testing.assert_close(sin[1], expected)
    torch.testing.assert_close(sin[0], torch.tensor([0.0, 1, 0, 1], dtype=torch.float64))
    token = SeparateLayout(pos_dim=8, pos_kind="onehot", positions="token").encode(_prompts())
    assert torch.equal(token[0, :, -8:], torch.eye(8))  # vO's indexing: one index per token
    with pytest.raises(ValueError, match="pos_dim ≥ 5"):
        SeparateLayout(pos_dim=4, pos_kind="onehot").encode(_prompts())  # 3 pairs + 2 queries


def test_separate_positions_let_a_softmax_head_copy_x_next_to_y():
    # W_KQ = β·I on the one-hot position block: y_i's token attends to its pair only, half to x_i, half to itself
    p = _prompts(batch=1)
    layout = SeparateLayout(pos_dim=5, pos_kind="onehot")
    tokens = layout.encode(p)[0, :6]  # the 3 context pairs, [6, 4 + 1 + 5]
    pos = tokens[:, -5:]
    attn = torch.softmax(20.0 * pos @ pos.T, dim=-1)  # [6, 6]
    torch.testing.assert_close(attn[1::2, 0::2], 0.5 * torch.eye(3), atol=1e-6, rtol=0)
    copied = attn @ tokens[:, :4]  # value = the x block: y_i's token receives x_i / 2
    torch.testing.assert_close(copied[1::2], 0.5 * p.x_ctx[0], atol=1e-6, rtol=0)


def test_separate_readout_conventions():
    p = _prompts()
    layout = SeparateLayout(pos_dim=6)
    tokens = layout.encode(p).clone()  # [2, 8, 11]
    tokens[:, 6:, 4] = -torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # the model wrote −ŷ into the query y-slots
    assert torch.equal(layout.readout(tokens, 3), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    head = SeparateLayout(readout_from="head")
    outputs = torch.arange(8, dtype=torch.float32).reshape(1, 8, 1).expand(2, 8, 1)
    assert torch.equal(head.readout(outputs, 3), torch.tensor([[6.0, 7.0]] * 2))  # query tokens 2n, 2n + 1
    vector = SeparateLayout(k=3, pos_dim=6)
    assert vector.readout(vector.encode(_vector_prompts()), 3).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="head"):
        head.readout(tokens, 3)


@pytest.mark.parametrize(
    "layout", [ConcatLayout(), InterleavedLayout(), SeparateLayout(pos_dim=4)], ids=lambda l: l.name
)
@pytest.mark.parametrize(("n", "m"), [(1, 1), (3, 2), (5, 4)])
def test_layouts_own_their_query_and_context_positions(layout, n, m):
    """The tokens at query_positions carry the queries' x (in order) and no label; the first context_tokens tokens
    carry every context x and y, and no token after them carries a context value."""
    d = 3
    p = _prompts(n=n, m=m, d=d)
    tokens = layout.encode_parts(p.x_ctx, p.y_ctx, p.x_q)  # [B, L, width]
    q = tokens[:, layout.query_positions(n, m)]
    assert q.shape[1] == m
    assert torch.equal(q[..., :d], p.x_q)
    if layout.name != "interleaved":  # a query token's y slot is empty (interleaved: the query's y is a token)
        assert torch.all(q[..., d] == 0)
    c = layout.context_tokens(n)
    head, tail = tokens[:, :c, : d + 1], tokens[:, c:, : d + 1]
    for value in torch.cat([p.x_ctx.flatten(), p.y_ctx.flatten()]):
        assert (head == value).any() and not (tail == value).any()
