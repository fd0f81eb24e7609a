"""LSA: shapes, tying, heads, hook points, state round trip, query independence, LayerNorm placement, init.

The forward pass is checked against a naive numpy loop over tokens written from the definition
e_j ← e_j + Σ_h P_h Σ_{i≤N} (W_V,h e_i)(W_K,h e_i)ᵀ(W_Q,h e_j), with pre-LayerNorm on layers ≥ 1 when enabled.
"""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from iclab.config import ConfigError, model_config
from iclab.models import make_model
from iclab.models.lsa import LSA

HOOKS = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern", "hook_attn_out", "hook_resid_post")


def _model(d=3, *, seed=0, init_scale=1.0, **kw) -> LSA:
    """A float64 LSA with O(1) random weights (init_scale 1 makes every term visible)."""
    cfg = model_config("lsa", init_scale=init_scale, **kw)
    return LSA(cfg, d, generator=torch.Generator().manual_seed(seed)).double()


def _tokens(batch=2, n=5, m=3, d=3, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, n + m, d + 1, generator=g, dtype=torch.float64)
    tokens[:, n:, -1] = 0.0
    return tokens


def _randomise_layernorms(model: LSA, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.blocks:
            if block.ln is not None:
                block.ln.weight.copy_(1 + 0.3 * torch.randn(block.ln.weight.shape, generator=g, dtype=torch.float64))
                block.ln.bias.copy_(0.3 * torch.randn(block.ln.bias.shape, generator=g, dtype=torch.float64))


def naive_forward(model: LSA, tokens: torch.Tensor, n_ctx: int) -> np.ndarray:
    z = tokens.detach().numpy().copy()
    batch, total, _ = z.shape
    for layer, block in enumerate(model.blocks):
        w = model.layer_weights(layer)
        wq, wk, wv, p = (getattr(w, k).detach().numpy() for k in ("W_Q", "W_K", "W_V", "W_O"))
        h = z.copy()
        if block.ln is not None:
            mu = h.mean(-1, keepdims=True)
            var = h.var(-1, keepdims=True)  # biased, as LayerNorm
            gain, shift = block.ln.weight.detach().numpy(), block.ln.bias.detach().numpy()
            h = (h - mu) / np.sqrt(var + block.ln.eps) * gain + shift
        new = z.copy()
        for b in range(batch):
            for j in range(total):
                for hd in range(wq.shape[0]):
                    acc = np.zeros(z.shape[-1])
                    for i in range(n_ctx):
                        acc += (wv[hd] @ h[b, i]) * float((wk[hd] @ h[b, i]) @ (wq[hd] @ h[b, j]))
                    new[b, j] += p[hd] @ acc
        z = new
    return z


@pytest.mark.parametrize(
    "kw",
    [
        dict(layers=1),
        dict(layers=3),
        dict(layers=2, heads=3),
        dict(layers=3, tied=True),
        dict(layers=3, layernorm=True),
        dict(layers=3, tied=True, layernorm=True, heads=2),
    ],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()),
)
def test_forward_matches_naive_token_loop(kw):
    model = _model(3, **kw)
    _randomise_layernorms(model)
    tokens = _tokens()
    out = model(tokens, 5)
    assert out.shape == tokens.shape
    np.testing.assert_allclose(out.detach().numpy(), naive_forward(model, tokens, 5), rtol=1e-10, atol=1e-10)


def test_shapes_and_parameter_counts():
    d, layers, heads = 4, 3, 2
    width = d + 1
    untied = _model(d, layers=layers, heads=heads)
    tied = _model(d, layers=layers, heads=heads, tied=True)
    assert len(untied.weights) == layers and len(tied.weights) == 1
    assert len(untied.blocks) == len(tied.blocks) == layers
    for w in untied.weights:
        for name in ("W_Q", "W_K", "W_V", "W_O", "KQ", "OV"):
            assert getattr(w, name).shape == (heads, width, width)
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n_params(untied) == layers * 4 * heads * width**2
    assert n_params(tied) == 4 * heads * width**2
    x_ctx = torch.randn(6, 7, d, dtype=torch.float64)
    y_ctx = torch.randn(6, 7, dtype=torch.float64)
    x_q = torch.randn(6, 2, d, dtype=torch.float64)
    assert untied.predict(x_ctx, y_ctx, x_q).shape == (6, 2)


def test_KQ_and_OV_are_the_products():
    w = _model(3, heads=2).weights[0]
    assert w.scale == 1.0
    torch.testing.assert_close(w.KQ, torch.einsum("hki,hkj->hij", w.W_K, w.W_Q))
    torch.testing.assert_close(w.OV, torch.einsum("hik,hkj->hij", w.W_O, w.W_V))


def test_checkpoints_that_call_W_O_P_still_load():
    # before the one weight convention, LSA's output projection was stored as weights.{l}.P (von Oswald's name)
    model = _model(3, layers=2, seed=1)
    old = {k.replace(".W_O", ".P"): v for k, v in model.state_dict().items()}
    assert "weights.1.P" in old and not any(k.endswith("W_O") for k in old)
    other = _model(3, layers=2, seed=2)
    other.load_state_dict(old)
    tokens = _tokens()
    assert torch.equal(other(tokens, 5), model(tokens, 5))


def test_tied_model_shares_one_weight_set():
    tied = _model(3, layers=3, tied=True, seed=4)
    assert all(tied.layer_weights(l) is tied.weights[0] for l in range(3))
    # behaviour: equals an untied model holding that weight set in every layer
    untied = _model(3, layers=3, seed=5)
    with torch.no_grad():
        for w in untied.weights:
            for name in ("W_Q", "W_K", "W_V", "W_O"):
                getattr(w, name).copy_(getattr(tied.weights[0], name))
    tokens = _tokens()
    torch.testing.assert_close(tied(tokens, 5), untied(tokens, 5), rtol=1e-12, atol=1e-12)
    # and a gradient step on the tied weights receives contributions from every layer
    tied(tokens, 5).sum().backward()
    untied(tokens, 5).sum().backward()
    grad_sum = sum(w.W_Q.grad for w in untied.weights)
    torch.testing.assert_close(tied.weights[0].W_Q.grad, grad_sum, rtol=1e-10, atol=1e-12)


def test_heads_add_their_updates():
    two = _model(3, heads=2, seed=7)
    tokens = _tokens()
    updates = []
    for h in range(2):
        one = _model(3, heads=1, seed=8)
        with torch.no_grad():
            for name in ("W_Q", "W_K", "W_V", "W_O"):
                getattr(one.weights[0], name).copy_(getattr(two.weights[0], name)[h : h + 1])
        updates.append(one(tokens, 5) - tokens)
    torch.testing.assert_close(two(tokens, 5), tokens + updates[0] + updates[1], rtol=1e-12, atol=1e-12)


def test_run_with_cache_names_shapes_and_values():
    batch, n, m, d, heads, layers = 2, 5, 3, 3, 2, 3
    model = _model(d, layers=layers, heads=heads)
    tokens = _tokens(batch, n, m, d)
    out, cache = model.run_with_cache(tokens, n)
    assert set(cache) == {f"blocks.{l}.{h}" for l in range(layers) for h in HOOKS}
    T, D = n + m, d + 1
    shapes = {
        "attn.hook_q": (batch, T, heads, D),  # [batch, pos, head, d_head], TransformerLens's order
        "attn.hook_k": (batch, n, heads, D),
        "attn.hook_v": (batch, n, heads, D),
        "attn.hook_pattern": (batch, heads, T, n),  # [batch, head, query_pos, key_pos]
        "hook_attn_out": (batch, T, D),
        "hook_resid_post": (batch, T, D),
    }
    prev = tokens
    for l in range(layers):
        for h, shape in shapes.items():
            assert cache[f"blocks.{l}.{h}"].shape == shape, (l, h)
        c = {h: cache[f"blocks.{l}.{h}"] for h in HOOKS}
        scores = torch.einsum("bthe,bnhe->bhtn", c["attn.hook_q"], c["attn.hook_k"])
        torch.testing.assert_close(c["attn.hook_pattern"], scores)
        torch.testing.assert_close(c["hook_resid_post"], prev + c["hook_attn_out"])
        prev = c["hook_resid_post"]
    torch.testing.assert_close(prev, out)
    assert out.requires_grad and not cache["blocks.0.attn.hook_q"].requires_grad  # detached by default
    _, attached = model.run_with_cache(tokens, n, names=["blocks.0.attn.hook_q"], detach=False)
    assert attached["blocks.0.attn.hook_q"].requires_grad
    # a chosen subset
    _, some = model.run_with_cache(tokens, n, names=["blocks.1.attn.hook_pattern"])
    assert list(some) == ["blocks.1.attn.hook_pattern"]
    torch.testing.assert_close(some["blocks.1.attn.hook_pattern"], cache["blocks.1.attn.hook_pattern"])


def test_unknown_hook_name_lists_the_valid_ones():
    model = _model(2, layers=2)
    tokens = _tokens(d=2)
    valid = [f"blocks.{l}.{h}" for l in range(2) for h in HOOKS]
    for call in (
        lambda: model.run_with_cache(tokens, 5, names=["blocks.0.attn.hook_patern"]),
        lambda: model.run_with_hooks(
            tokens, 5, hooks={"blocks.0.hook_attn_out": torch.zeros_like, "blocks.9.attn.hook_q": lambda t: t}
        ),
    ):
        with pytest.raises(ValueError, match="unknown hook point") as err:
            call()
        assert all(name in str(err.value) for name in valid)
    # a failed call leaves no hook behind (the valid hook registered before the bad name is removed)
    torch.testing.assert_close(model(tokens, 5), torch.from_numpy(naive_forward(model, tokens, 5)))


def test_run_with_hooks_zeroing_every_update_leaves_tokens_unchanged():
    model = _model(3, layers=3, layernorm=True)
    tokens = _tokens()
    zero = {f"blocks.{l}.hook_attn_out": torch.zeros_like for l in range(3)}
    out = model.run_with_hooks(tokens, 5, hooks=zero)
    assert torch.equal(out, tokens)
    # zeroing one layer's update equals running without that layer
    first_two = model.run_with_hooks(tokens, 5, hooks={"blocks.2.hook_attn_out": torch.zeros_like})
    _, cache = model.run_with_cache(tokens, 5)
    torch.testing.assert_close(first_two, cache["blocks.1.hook_resid_post"])
    # hooks are removed afterwards
    assert not torch.allclose(model(tokens, 5), tokens)


@pytest.mark.parametrize(
    "kw", [dict(layers=2), dict(layers=2, heads=2, layernorm=True), dict(layers=2, tied=True, layernorm=True)]
)
def test_state_dict_round_trip_through_safetensors(kw, tmp_path):
    model = _model(3, seed=1, **kw)
    _randomise_layernorms(model)
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    fresh = _model(3, seed=2, **kw)
    tokens = _tokens()
    assert not torch.equal(fresh(tokens, 5), model(tokens, 5))
    fresh.load_state_dict(load_file(str(path)))
    assert torch.equal(fresh(tokens, 5), model(tokens, 5))


def test_state_round_trip_with_shared_layernorm(tmp_path):
    # tied + LayerNorm + > 2 layers shares one LayerNorm between blocks 1.. (state_dict lists it under each);
    # safetensors refuses storage-sharing tensors, so store clones (as RunDir.save_checkpoint does).
    model = _model(3, seed=1, layers=3, tied=True, layernorm=True)
    _randomise_layernorms(model)
    assert model.blocks[2].ln is model.blocks[1].ln
    path = tmp_path / "model.safetensors"
    save_file({k: v.clone() for k, v in model.state_dict().items()}, str(path))
    fresh = _model(3, seed=2, layers=3, tied=True, layernorm=True)
    fresh.load_state_dict(load_file(str(path)))
    tokens = _tokens()
    assert torch.equal(fresh(tokens, 5), model(tokens, 5))


@pytest.mark.parametrize("kw", [dict(layers=1), dict(layers=3, heads=2, layernorm=True)])
def test_queries_do_not_influence_each_other(kw):
    model = _model(3, **kw)
    n = 5
    tokens = _tokens(n=n, m=3)
    changed = tokens.clone()
    changed[:, n + 1, :-1] += torch.randn(changed[:, n + 1, :-1].shape, dtype=torch.float64)
    out, out_changed = model(tokens, n), model(changed, n)
    keep = [t for t in range(n + 3) if t != n + 1]  # the context and the other queries
    torch.testing.assert_close(out_changed[:, keep], out[:, keep], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(out_changed[:, n + 1], out[:, n + 1])  # the changed query itself does change
    # the same through predict: query 1 (index 0) unchanged when query 2 (index 1) changes
    x_ctx, y_ctx = tokens[:, :n, :-1], tokens[:, :n, -1]
    p, p_changed = model.predict(x_ctx, y_ctx, tokens[:, n:, :-1]), model.predict(x_ctx, y_ctx, changed[:, n:, :-1])
    torch.testing.assert_close(p_changed[:, [0, 2]], p[:, [0, 2]], rtol=1e-12, atol=1e-12)


def test_layernorm_is_off_before_layer_zero():
    with_ln = _model(3, layers=3, layernorm=True)
    assert with_ln.blocks[0].ln is None
    assert all(isinstance(b.ln, torch.nn.LayerNorm) for b in with_ln.blocks[1:])
    assert all(b.ln is None for b in _model(3, layers=3).blocks)
    # one layer with layernorm=True is exactly the model without LayerNorm
    one_ln, one = _model(3, layers=1, layernorm=True, seed=3), _model(3, layers=1, seed=3)
    tokens = _tokens()
    assert torch.equal(one_ln(tokens, 5), one(tokens, 5))
    # and layer 0 reads the raw tokens: its queries are W_Q e_j
    _, cache = with_ln.run_with_cache(tokens, 5, names=["blocks.0.attn.hook_q"])
    expected = torch.einsum("btd,hed->bthe", tokens, with_ln.weights[0].W_Q)
    torch.testing.assert_close(cache["blocks.0.attn.hook_q"], expected)


def test_init_variance_is_init_scale_over_layers_times_width():
    d, layers, heads, init_scale = 20, 3, 4, 0.002
    config = model_config("lsa", layers=layers, heads=heads, init_scale=init_scale)
    model = LSA(config, d, generator=torch.Generator().manual_seed(0))
    values = torch.cat([p.detach().flatten() for p in model.weights.parameters()]).double()
    n = values.numel()
    var = init_scale / (layers * (d + 1))
    # N(0, var) entries: sample mean SE √(var/n), sample variance SE var·√(2/(n − 1)); 4 SE tolerance
    assert abs(values.mean().item()) < 4 * (var / n) ** 0.5
    assert abs(values.var().item() - var) < 4 * var * (2 / (n - 1)) ** 0.5
    # explicit randomness: the generator seed fixes the weights
    again = LSA(config, d, generator=torch.Generator().manual_seed(0))
    other = LSA(config, d, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    assert not torch.equal(model.weights[0].W_Q, other.weights[0].W_Q)


def test_make_model_registry():
    assert isinstance(make_model(model_config("lsa"), 3), LSA)
    with pytest.raises(ConfigError, match="lsa"):
        model_config(name="transformer")


def test_observing_the_pattern_uses_the_naive_path_with_equal_output():
    gen = torch.Generator().manual_seed(4)
    model = LSA(model_config("lsa", layers=2, init_scale=1.0), 3, generator=gen).double()
    tokens = torch.randn(2, 6, 4, generator=gen, dtype=torch.float64)
    out, cache = model.run_with_cache(tokens, 5, names=["blocks.1.attn.hook_pattern"])
    assert cache["blocks.1.attn.hook_pattern"].shape == (2, 1, 6, 5)
    torch.testing.assert_close(out, model(tokens, 5))
