"""Every model family's fast path against its naive reference (`impl`, iclab.models.base): outputs and gradients.

One parametrised test over every family and variant (lsa untied / tied / heads / LayerNorm, softmax plain and with
MLP + LayerNorm + positions, gpt, lsa_features, separate, lla, ssm, and the variance-head wrapper on a concat and a
causal trunk) and a grid of odd shapes: d ∈ {1, 3, 7}, context points n ∈ {1, 5, 63}, batch ∈ {1, 3}, 3 queries
(heads come with the variants: 1, 2 or 3). In float64, with `model.set_impl("fast")` and `set_impl("naive")` on the
same weights and inputs, it compares `predict` (and `predict_prefixes` for causal models, `predict_with_variance`
for the wrapper) and the gradients of a fixed random linear functional of those outputs with respect to every
parameter and to the inputs x_ctx, y_ctx, x_q.

Tolerance, per tensor: max |fast − naive| ≤ 1e-10 · max |naive| + 1e-12 (normwise relative: the LSA stacks reach
large values at n = 63, and a few gradients are exactly zero by construction, e.g. W_Q's with one context point).
Observed errors are below 1e-12 relative, LLA's least-squares reference included.
"""

import itertools

import pytest
import torch

from iclab.config import model_config
from iclab.models import make_model
from iclab.models.base import IMPLS, set_impl
from iclab.models.variance import MeanVarianceModel

VARIANTS = {
    "lsa": dict(name="lsa", init_scale=1.0),
    "lsa-heads": dict(name="lsa", layers=2, heads=3, init_scale=1.0),
    "lsa-tied-layernorm": dict(name="lsa", layers=3, tied=True, layernorm=True, init_scale=1.0),
    "lsa-layernorm": dict(name="lsa", layers=2, heads=2, layernorm=True, init_scale=1.0),
    "softmax": dict(name="softmax", layers=2, heads=3, init_scale=1.0),
    "softmax-mlp-layernorm-positions": dict(
        name="softmax", layers=2, heads=2, mlp=True, mlp_ratio=1, layernorm=True, positions=True, max_points=66
    ),
    "gpt": dict(name="gpt", layers=2, heads=3, width=9, mlp_ratio=1, max_points=66),
    "lsa_features": dict(name="lsa_features", layers=2, heads=2, feature_hidden=5, feature_dim=3, init_scale=1.0),
    "separate": dict(name="separate", layers=1, heads=2, max_points=66, init_scale=1.0),
    "lla": dict(name="lla", layers=2, heads=2, layernorm=True),
    "ssm": dict(name="ssm", layers=2, width=5, state_dim=3),
    "variance-lsa": dict(name="lsa", layers=2, init_scale=0.1, variance_head=True),  # an unsaturated head
    "variance-gpt": dict(name="gpt", layers=1, heads=1, width=5, mlp_ratio=1, max_points=66, variance_head=True),
}
SHAPES = list(itertools.product([1, 3, 7], [1, 5, 63], [1, 3]))  # (d, n, batch)
M = 3  # queries
RTOL, ATOL = 1e-10, 1e-12


def _outputs(model, x_ctx, y_ctx, x_q):
    """The outputs the family answers with, concatenated into one flat tensor."""
    if isinstance(model, MeanVarianceModel):
        outs = list(model.predict_with_variance(x_ctx, y_ctx, x_q))
    else:
        outs = [model.predict(x_ctx, y_ctx, x_q)]
    if model.predicts_prefixes:
        x, y = torch.cat([x_ctx, x_q], 1), torch.cat([y_ctx, torch.zeros_like(x_q[..., 0])], 1)
        outs += [model.predict_prefixes(x, y)]
    return torch.cat([o.reshape(-1) for o in outs])


def _close(name: str, fast: torch.Tensor, naive: torch.Tensor) -> None:
    err, scale = (fast - naive).abs().max().item(), naive.abs().max().item()
    assert err <= RTOL * scale + ATOL, f"{name}: max |fast − naive| = {err:.3g}, max |naive| = {scale:.3g}"


@pytest.mark.parametrize(("d", "n", "batch"), SHAPES, ids=[f"d{d}-n{n}-b{b}" for d, n, b in SHAPES])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fast_path_matches_naive_outputs_and_gradients(variant, d, n, batch):
    gen = torch.Generator().manual_seed(d + 10 * n + 1000 * batch)
    model = make_model(model_config(**VARIANTS[variant]), d, generator=gen).double()
    assert set_impl(model, "fast") > 0  # the family has a switch to compare
    x_ctx = torch.randn(batch, n, d, generator=gen, dtype=torch.float64, requires_grad=True)
    y_ctx = torch.randn(batch, n, generator=gen, dtype=torch.float64, requires_grad=True)
    x_q = torch.randn(batch, M, d, generator=gen, dtype=torch.float64, requires_grad=True)
    inputs = {"x_ctx": x_ctx, "y_ctx": y_ctx, "x_q": x_q}
    params = dict(model.named_parameters())
    results = {}
    for impl in IMPLS:
        model.set_impl(impl)
        out = _outputs(model, x_ctx, y_ctx, x_q)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        grads = torch.autograd.grad((out * weights).sum(), [*params.values(), *inputs.values()], allow_unused=True)
        results[impl] = (out.detach(), grads)
    model.set_impl("fast")
    (out_fast, g_fast), (out_naive, g_naive) = results["fast"], results["naive"]
    assert torch.isfinite(out_naive).all()
    _close("outputs", out_fast, out_naive)
    for name, gf, gn in zip([*params, *inputs], g_fast, g_naive):
        assert (gf is None) == (gn is None), name
        if gf is not None:
            _close(f"d/d {name}", gf, gn)


def test_one_switch_for_every_block():
    """`impl` is the only switch: set_impl reaches every block (wrapped trunks included) and refuses other names."""
    model = make_model(model_config(name="separate", layers=2, heads=2, max_points=4, variance_head=True), 2)
    assert set_impl(model, "naive") == 3  # the copy layer's attention and two LSA blocks
    assert {m.impl for m in model.modules() if "impl" in vars(m)} == {"naive"}
    with pytest.raises(ValueError, match="fast, naive"):
        model.set_impl("parallel")
