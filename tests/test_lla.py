"""Local Linear Attention: batched moments vs per-query least squares, its limits (λ → ∞ is softmax attention,
exact on locally linear data, a flat kernel is least squares with an intercept), masks, query independence,
hooks, state round trip, and a short training run."""

import itertools

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from iclab.config import EvalConfig, ExperimentConfig, TrainConfig, model_config, task_config
from iclab.models import make_model
from iclab.models.lla import LocalLinearAttentionModel, kernel_weights, lla, lla_naive
from iclab.training import train

HOOKS = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern", "attn.hook_z")
HOOKS += ("hook_attn_out", "hook_resid_post")


def _qkv(lead=(2,), T=3, N=5, D=3, Dv=2, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64) * scale  # noqa: E731
    return r(*lead, T, D), r(*lead, N, D), r(*lead, N, Dv)


def _model(d=3, *, seed=0, **kw) -> LocalLinearAttentionModel:
    cfg = model_config(name="lla", **kw)
    return LocalLinearAttentionModel(cfg, d, generator=torch.Generator().manual_seed(seed)).double()


def _prompt(batch=2, n=6, m=3, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return r(batch, n, d), r(batch, n), r(batch, m, d)


GRID = list(itertools.product([(1,), (2, 3)], [1, 4], [1, 7], [1, 3, 5], [1, 4], [1e-3, 1.0]))


@pytest.mark.parametrize(("lead", "T", "N", "D", "Dv", "ridge"), GRID)
def test_batched_matches_per_query_least_squares(lead, T, N, D, Dv, ridge):
    q, k, v = _qkv(lead, T, N, D, Dv, seed=T + 10 * N + 100 * D)
    torch.testing.assert_close(lla(q, k, v, ridge), lla_naive(q, k, v, ridge), rtol=0, atol=1e-5)
    # and with some context points absent (one leading row with none: its intercepts are 0)
    mask = torch.rand(*lead, N, generator=torch.Generator().manual_seed(N)) > 0.4
    mask.view(-1, N)[0] = False
    out = lla(q, k, v, ridge, mask)
    torch.testing.assert_close(out, lla_naive(q, k, v, ridge, mask), rtol=0, atol=1e-5)
    assert torch.equal(out.view(-1, T, Dv)[0], torch.zeros(T, Dv, dtype=out.dtype))


def test_float32_batched_stays_close_to_float64_reference():
    q, k, v = _qkv((4,), 5, 12, 4, 3, seed=3)
    k = k + 5.0  # keys far from the origin: centring keeps the moments well conditioned
    out32 = lla(q.float(), k.float(), v.float(), 1e-2)
    torch.testing.assert_close(out32.double(), lla_naive(q, k, v, 1e-2), rtol=0, atol=2e-3)


def test_large_ridge_is_softmax_attention():
    q, k, v = _qkv((2, 2), 4, 6, 3, 3, seed=1)
    softmax_attn = torch.softmax(q @ k.transpose(-1, -2) / 3**0.5, dim=-1) @ v
    torch.testing.assert_close(lla(q, k, v, 1e12), softmax_attn, rtol=0, atol=1e-9)
    # the model: with λ → ∞ each layer is multi-head softmax attention with the same W_Q, W_K, W_V, W_O
    model = _model(3, layers=2, heads=2, lla_ridge=1e12, seed=2)
    x_ctx, y_ctx, x_q = _prompt()
    n = x_ctx.shape[1]
    z = model.layout.encode_parts(x_ctx, y_ctx, x_q)
    for w in model.weights:
        q = torch.einsum("btd,hed->bhte", z, w.W_Q)
        k = torch.einsum("bnd,hed->bhne", z[:, :n], w.W_K)
        v = torch.einsum("bnd,hed->bhne", z[:, :n], w.W_V)
        heads = torch.softmax(q @ k.transpose(-1, -2) / 2, dim=-1) @ v  # D = 4: √D = 2
        z = z + torch.einsum("bhte,hfe->btf", heads, w.W_O)
    torch.testing.assert_close(model.predict(x_ctx, y_ctx, x_q), -z[:, n:, -1], rtol=0, atol=1e-9)


@pytest.mark.parametrize("D", [1, 3])
def test_exact_when_values_are_linear_in_keys(D):
    # v = a₀ + M k ⇒ the local intercept at q is a₀ + M q, whatever the kernel weights (λ → 0)
    q, k, _ = _qkv((3,), 4, D + 4, D, 1, seed=D)
    g = torch.Generator().manual_seed(9)
    a0, M = torch.randn(2, generator=g, dtype=torch.float64), torch.randn(2, D, generator=g, dtype=torch.float64)
    v = a0 + k @ M.T  # [3, N, 2]
    torch.testing.assert_close(lla(q, k, v, 1e-10), a0 + q @ M.T, rtol=0, atol=1e-7)
    torch.testing.assert_close(lla_naive(q, k, v, 1e-10), a0 + q @ M.T, rtol=0, atol=1e-7)


def test_flat_kernel_is_least_squares_with_intercept():
    # W_Q = W_K = ε·(x-block): queries and keys ε·x, so the kernel is flat to O(ε²) and the regression on
    # ε(x_i − x_q) has the same intercept (its slope ridge is λ/ε² in x units); values y, P = −e_y e_yᵀ:
    # the prediction is that of least squares with an intercept
    d, n, eps = 3, 8, 1e-5
    model = _model(d, lla_ridge=1e-20)
    e_y = torch.zeros(d + 1, d + 1, dtype=torch.float64)
    e_y[d, d] = 1.0
    with torch.no_grad():
        w = model.weights[0]
        w.W_Q.copy_(eps * (torch.eye(d + 1, dtype=torch.float64) - e_y)[None])
        w.W_K.copy_(w.W_Q)
        w.W_V.copy_(e_y[None])
        w.W_O.copy_(-e_y[None])
    x_ctx, y_ctx, x_q = _prompt(3, n, 2, d, seed=4)
    expected = []
    for b in range(3):
        design = np.c_[np.ones(n), x_ctx[b].numpy()]
        theta = np.linalg.lstsq(design, y_ctx[b].numpy(), rcond=None)[0]
        expected.append(np.c_[np.ones(2), x_q[b].numpy()] @ theta)
    np.testing.assert_allclose(model.predict(x_ctx, y_ctx, x_q).detach().numpy(), np.stack(expected), atol=1e-6)


@pytest.mark.parametrize("kw", [dict(layers=1), dict(layers=3, heads=2, layernorm=True)])
def test_queries_do_not_influence_each_other(kw):
    model = _model(3, **kw)
    x_ctx, y_ctx, x_q = _prompt(m=3)
    changed = x_q.clone()
    changed[:, 1] += 1.0
    p, p_changed = model.predict(x_ctx, y_ctx, x_q), model.predict(x_ctx, y_ctx, changed)
    torch.testing.assert_close(p_changed[:, [0, 2]], p[:, [0, 2]], rtol=0, atol=1e-12)
    assert not torch.allclose(p_changed[:, 1], p[:, 1])
    one_by_one = torch.cat([model.predict(x_ctx, y_ctx, x_q[:, j : j + 1]) for j in range(3)], dim=1)
    torch.testing.assert_close(one_by_one, p, rtol=0, atol=1e-12)


def test_mask_equals_leaving_the_points_out():
    model = _model(3, layers=2, heads=2)
    x_ctx, y_ctx, x_q = _prompt(batch=1, n=6)
    keep = torch.tensor([[True, False, True, True, False, True]])
    masked = model.predict(x_ctx, y_ctx, x_q, keep)
    dropped = model.predict(x_ctx[:, keep[0]], y_ctx[:, keep[0]], x_q)
    torch.testing.assert_close(masked, dropped, rtol=0, atol=1e-12)
    # no point present (prefix 0): every layer adds nothing, the prediction is 0 and gradients are finite
    none = model.predict(x_ctx, y_ctx, x_q, torch.zeros_like(keep))
    assert torch.equal(none, torch.zeros_like(none))
    model.predict(x_ctx, y_ctx, x_q, keep & torch.tensor([[True] + [False] * 5])).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    empty = model.predict(x_ctx[:, :0], y_ctx[:, :0], x_q)  # n = 0
    assert torch.equal(empty, torch.zeros_like(empty))


def test_run_with_cache_names_shapes_and_values():
    batch, n, m, d, heads, layers = 2, 6, 3, 3, 2, 2
    model = _model(d, layers=layers, heads=heads)
    x_ctx, y_ctx, x_q = _prompt(batch, n, m, d)
    tokens = model.layout.encode_parts(x_ctx, y_ctx, x_q)
    out, cache = model.run_with_cache(tokens, n)
    assert set(cache) == {f"blocks.{l}.{h}" for l in range(layers) for h in HOOKS}
    T, D = n + m, d + 1
    shapes = {
        "attn.hook_q": (batch, T, heads, D),  # [batch, pos, head, d_head]
        "attn.hook_k": (batch, n, heads, D),
        "attn.hook_v": (batch, n, heads, D),
        "attn.hook_pattern": (batch, heads, T, n),  # [batch, head, query_pos, key_pos]
        "attn.hook_z": (batch, T, heads, D),
        "hook_attn_out": (batch, T, D),
        "hook_resid_post": (batch, T, D),
    }
    prev = tokens
    for l in range(layers):
        c = {h: cache[f"blocks.{l}.{h}"] for h in HOOKS}
        assert {h: tuple(t.shape) for h, t in c.items()} == shapes
        q, k, v = (c[f"attn.hook_{s}"].transpose(1, 2) for s in "qkv")  # [B, H, pos, D]
        torch.testing.assert_close(c["attn.hook_pattern"], kernel_weights(q, k))
        torch.testing.assert_close(c["attn.hook_pattern"].sum(-1), torch.ones(batch, heads, T, dtype=torch.float64))
        torch.testing.assert_close(c["attn.hook_z"], lla(q, k, v, model.ridge).transpose(1, 2))
        attn_out = torch.einsum("bthe,hfe->btf", c["attn.hook_z"], model.layer_weights(l).W_O)
        torch.testing.assert_close(c["hook_attn_out"], attn_out)
        torch.testing.assert_close(c["hook_resid_post"], prev + c["hook_attn_out"])
        prev = c["hook_resid_post"]
    torch.testing.assert_close(prev, out)


def test_state_dict_round_trip_through_safetensors(tmp_path):
    model = _model(3, layers=2, heads=2, layernorm=True, seed=1)
    path = tmp_path / "lla.safetensors"
    save_file(model.state_dict(), str(path))
    fresh = _model(3, layers=2, heads=2, layernorm=True, seed=2)
    x_ctx, y_ctx, x_q = _prompt()
    assert not torch.equal(fresh.predict(x_ctx, y_ctx, x_q), model.predict(x_ctx, y_ctx, x_q))
    fresh.load_state_dict(load_file(str(path)))
    assert torch.equal(fresh.predict(x_ctx, y_ctx, x_q), model.predict(x_ctx, y_ctx, x_q))


def test_registry_builds_the_model_with_weights_named_like_the_math():
    model = make_model(model_config(name="lla", layers=2, heads=3, lla_ridge=0.5), 4)
    assert isinstance(model, LocalLinearAttentionModel) and model.ridge == 0.5
    for w in model.weights:
        for name in ("W_Q", "W_K", "W_V", "W_O", "KQ", "OV"):
            assert getattr(w, name).shape == (3, 5, 5)
        assert w.scale == 5**-0.5


def test_checkpoints_that_call_W_O_P_still_load():
    model = _model(3, layers=2, seed=1)
    old = {k.replace(".W_O", ".P"): v for k, v in model.state_dict().items()}
    assert "weights.0.P" in old
    other = _model(3, layers=2, seed=2)
    other.load_state_dict(old)
    x_ctx, y_ctx, x_q = _prompt()
    assert torch.equal(other.predict(x_ctx, y_ctx, x_q), model.predict(x_ctx, y_ctx, x_q))


@pytest.mark.slow
def test_training_learns_linear_regression():
    """1 layer, 1 head, d = 3, 10 context points, 200 Adam steps of 64 prompts (≈ 5 s on one thread): the held-out
    ½·MSE falls below a tenth of the untrained model's and of predicting zero (½·E[y²] = 0.125)."""

    def cfg(steps):
        return ExperimentConfig(
            task=task_config("linear", d=3, n_points=10, n_queries=1),
            model=model_config(name="lla", layers=1, heads=1),
            train=TrainConfig(steps=steps, batch_size=64, lr=1e-2, eval_every=50, checkpoint_every=50, progress=False),
            eval=EvalConfig(n_prompts=512),
            name="lla_smoke",
        )

    untrained, trained = train(cfg(0)), train(cfg(200))
    zero = 0.5 * (trained.eval_prompts.y_q**2).mean().item()
    assert trained.final_eval_half_mse < 0.1 * untrained.final_eval_half_mse
    assert trained.final_eval_half_mse < 0.1 * zero
