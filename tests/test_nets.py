"""The batched ReLU-net learner against a naive per-prompt loop with autograd and torch.optim.Adam.

Reference: for each prompt alone, the same initial weights (`ReluNet.init_params`, sliced), `nn.Linear`-style
arithmetic x Wᵀ + b → relu → · a + c, loss = mean of squared errors over the present points (F.mse_loss),
`loss.backward()` and `torch.optim.Adam(lr)` for `steps` steps. Predictions agree to 1e-5 relative to the
largest reference value, in float64.
"""

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from reference_checks import assert_rel_close

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.nets import INIT_BLOCK, PARAMS, ReluNet
from iclab.algorithms.registry import make_learner

_close = partial(assert_rel_close, rtol=1e-5)

SHAPES = [(0, 3), (1, 4), (3, 6), (6, 6), (12, 5), (7, 1)]  # (n, d): empty, n < d, n = d, n > d, d = 1


def naive_relu_net(init, X, y, Xq, steps, lr):
    """One prompt: init = its (W [H, d], b [H], a [H], c []) slices; X [k, d], y [k] present points; Xq [m, d]."""
    if X.shape[0] == 0:
        return torch.zeros(Xq.shape[0], dtype=Xq.dtype)
    W, b, a, c = (t.clone().requires_grad_(True) for t in init)
    opt = torch.optim.Adam([W, b, a, c], lr=lr)

    def net(inputs):
        return torch.relu(inputs @ W.T + b) @ a + c

    for _ in range(steps):
        opt.zero_grad()
        F.mse_loss(net(X), y).backward()
        opt.step()
    with torch.no_grad():
        return net(Xq)


def _case(n, d, seed, batch=4, m=3):
    """A smooth target plus noise, a random mask with prompt 0 complete and prompt 1 empty (float64)."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(batch, n, d, generator=gen, dtype=torch.float64)
    y = torch.sin(X.sum(-1)) + 0.1 * torch.randn(batch, n, generator=gen, dtype=torch.float64)
    Xq = torch.randn(batch, m, d, generator=gen, dtype=torch.float64)
    mask = torch.rand(batch, n, generator=gen) < 0.7
    mask[0] = True
    mask[1] = False
    return X, y, Xq, mask


def _reference(learner, X, y, Xq, mask):
    init = learner.init_params(X.shape[0], X.shape[2], torch.float64, X.device)
    rows = []
    for i in range(X.shape[0]):
        weights = [init[k][i] for k in ("W", "b", "a", "c")]
        rows.append(naive_relu_net(weights, X[i][mask[i]], y[i][mask[i]], Xq[i], learner.steps, learner.lr))
    return torch.stack(rows)


@pytest.mark.parametrize("n,d", SHAPES)
def test_relu_net_matches_per_prompt_adam_on_masked_contexts(n, d):
    X, y, Xq, mask = _case(n, d, seed=10 * n + d)
    learner = ReluNet(hidden=16, steps=60, lr=1e-2, seed=5)
    out = learner.predict(X, y, Xq, mask)
    _close(out, _reference(learner, X, y, Xq, mask))
    assert (out[1] == 0).all()  # empty context
    learner.chunk_elements = 1  # one prompt per chunk: same initial weights, same numbers
    _close(learner.predict(X, y, Xq, mask), out.numpy(), rtol=1e-12)


def test_relu_net_default_settings_match_per_prompt_adam():
    X, y, Xq, mask = _case(12, 5, seed=9, batch=2)
    learner = make_learner("relu_net")  # 100 units, 500 steps, lr 5e-3
    _close(learner.predict(X, y, Xq, mask), _reference(learner, X, y, Xq, mask))


def test_relu_net_prefix_path_is_one_net_per_prefix():
    T, d = 6, 3
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, T, d, generator=gen, dtype=torch.float64)
    y = torch.cos(x[..., 0]) + x[..., 1]
    learner = ReluNet(hidden=8, steps=40, lr=1e-2, seed=2)
    init = learner.init_params(2 * T, d, torch.float64, x.device)  # problem b·T + t
    expected = torch.zeros(2, T, dtype=torch.float64)
    for b in range(2):
        for t in range(T):
            weights = [init[k][b * T + t] for k in ("W", "b", "a", "c")]
            expected[b, t] = naive_relu_net(weights, x[b, :t], y[b, :t], x[b, t : t + 1], 40, 1e-2)[0]
    _close(learner.predict_prefixes(x, y), expected)
    _close(MaskedLearner.scalar_prefixes(learner, x, y), expected)  # the generic path: the same problems
    learner.chunk_elements = 1
    _close(learner.predict_prefixes(x, y), expected)


def test_relu_net_fits_and_is_independent_of_other_prompts_and_of_grad_mode():
    X, y, Xq, mask = _case(20, 2, seed=3, batch=3)
    learner = ReluNet(hidden=32, steps=300, lr=1e-2)
    out = learner.predict(X, y, Xq, mask)
    # a prompt's prediction does not depend on what else is in the batch (its own init: same row, same seed)
    y2 = y.clone()
    y2[2] = -5 * y2[2]
    assert torch.allclose(learner.predict(X, y2, Xq, mask)[0], out[0], rtol=0, atol=1e-12)
    # the fit is good in-sample: far below the variance of y
    fit = learner.predict(X[:1], y[:1], X[:1])
    assert (fit - y[:1]).square().mean() < 0.2 * y[0].var()
    with torch.inference_mode():
        assert torch.equal(learner.predict(X, y, Xq, mask), out)
    # float32 inputs give float32 outputs close to the float64 ones
    out32 = learner.predict(X.float(), y.float(), Xq.float(), mask)
    assert out32.dtype == torch.float32 and torch.allclose(out32.double(), out, atol=1e-3)


def test_initial_weights_depend_on_the_problem_index_alone():
    # Any window of problems, across block boundaries, is the same slice of the whole sequence; blocks differ.
    learner = ReluNet(hidden=4, seed=3)
    whole = learner.init_params(2 * INIT_BLOCK + 10, 2, torch.float64, "cpu")
    for start, size in ((0, 5), (INIT_BLOCK - 3, 7), (INIT_BLOCK + 1, INIT_BLOCK + 5), (2 * INIT_BLOCK, 10)):
        part = learner.init_params(size, 2, torch.float64, "cpu", start=start)
        for k in PARAMS:
            assert torch.equal(part[k], whole[k][start : start + size]), (k, start, size)
    assert not torch.equal(whole["W"][:10], whole["W"][INIT_BLOCK : INIT_BLOCK + 10])
    assert learner.init_params(0, 2, torch.float64, "cpu")["W"].shape == (0, 4, 2)


def test_seed_changes_the_initial_weights():
    X, y, Xq, mask = _case(5, 3, seed=4)
    a = ReluNet(hidden=8, steps=5, seed=0).predict(X, y, Xq, mask)
    b = ReluNet(hidden=8, steps=5, seed=1).predict(X, y, Xq, mask)
    assert not torch.allclose(a[0], b[0])


# ----------------------------------------------------------------------------------------------------------------
# registry


def test_registry_names_and_parameters():
    default = make_learner("relu_net")
    assert (default.hidden, default.steps, default.lr, default.seed, default.dtype) == (100, 500, 5e-3, 0, None)
    spec = "relu_net:20:steps=50:lr=0.01:seed=3:float64=1"
    learner = make_learner(spec)
    assert learner.name == spec
    assert (learner.hidden, learner.steps, learner.lr, learner.seed, learner.dtype) == (20, 50, 0.01, 3, torch.float64)
