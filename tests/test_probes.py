"""Probes: the ridge probe against scikit-learn, the MLP probe on a product only it can read, a positive and a negative
control, names and shapes."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge as SkRidge
from sklearn.metrics import r2_score as sk_r2_score

from iclab.algorithms.construct import construct_gd
from iclab.algorithms.gd import gd_predict
from iclab.analysis.probes import (
    collect_features,
    default_hooks,
    fit_mlp,
    fit_ridge,
    plot_probes,
    probe_model,
    probe_targets,
    r2_score,
    ridge_predict,
    select_ridge,
)
from iclab.config import model_config, task_config
from iclab.models.lsa import LSA
from iclab.tasks.linear import LinearRegressionTask

D, N = 5, 20


def _prompts(batch, *, d=D, n=N, seed=0, dtype=torch.float64, **task):
    config = task_config("linear", d=d, n_points=n, x_dist="gaussian", x_scale=1.0, **task)
    return LinearRegressionTask(config).sample(batch, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _gd_update(prompts, eta):
    """ΔW x_q [B] of one GD step from 0 with step eta, at the first query."""
    return gd_predict(prompts.x_ctx, prompts.y_ctx, prompts.x_q[:, :1], [eta])[:, 0]


def _random_lsa(layers, init_scale=0.002, seed=0):
    config = model_config("lsa", layers=layers, init_scale=init_scale)
    return LSA(config, D, generator=torch.Generator().manual_seed(seed)).double()


# ----------------------------------------------------------------------------------------------------------------
# the ridge probe


@pytest.mark.parametrize("lam", [1e-6, 0.3, 25.0])
def test_ridge_probe_matches_scikit_learn(lam):
    g = torch.Generator().manual_seed(0)
    f = torch.randn(200, 7, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3, 7, dtype=torch.float64) + 2
    t = f @ torch.randn(7, 3, generator=g, dtype=torch.float64) + torch.randn(200, 3, generator=g, dtype=torch.float64)
    coef, intercept = fit_ridge(f, t, lam)
    sk = SkRidge(alpha=lam).fit(f.numpy(), t.numpy())
    torch.testing.assert_close(coef, torch.from_numpy(sk.coef_.T), atol=1e-6, rtol=0)
    torch.testing.assert_close(intercept, torch.from_numpy(sk.intercept_), atol=1e-6, rtol=0)
    pred = ridge_predict(f, coef, intercept)
    torch.testing.assert_close(pred, torch.from_numpy(sk.predict(f.numpy())), atol=1e-6, rtol=0)
    sk_r2 = sk_r2_score(t.numpy(), pred.numpy(), multioutput="variance_weighted")
    assert r2_score(pred, t) == pytest.approx(sk_r2, abs=1e-12)


def test_ridge_batches_over_leading_dimensions():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(3, 50, 4, generator=g, dtype=torch.float64) + 1
    t = torch.randn(3, 50, 2, generator=g, dtype=torch.float64)
    lam = torch.tensor([1e-3, 0.5, 10.0], dtype=torch.float64)
    coef, intercept = fit_ridge(f, t, lam)  # [3, 4, 2], [3, 2]
    for i in range(3):
        sk = SkRidge(alpha=lam[i].item()).fit(f[i].numpy(), t[i].numpy())
        torch.testing.assert_close(coef[i], torch.from_numpy(sk.coef_.T), atol=1e-9, rtol=0)
        torch.testing.assert_close(intercept[i], torch.from_numpy(sk.intercept_), atol=1e-9, rtol=0)
        torch.testing.assert_close(ridge_predict(f, coef, intercept)[i], torch.from_numpy(sk.predict(f[i].numpy())))


def test_lambda_selection_small_for_signal_large_for_noise():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(400, 6, generator=g, dtype=torch.float64)
    signal = f @ torch.randn(6, 2, generator=g, dtype=torch.float64)
    noise = torch.randn(400, 2, generator=g, dtype=torch.float64)
    assert select_ridge(f[:300], signal[:300], f[300:], signal[300:])[1] <= 1e-4
    assert select_ridge(f[:300], noise[:300], f[300:], noise[300:])[1] >= 1.0


# ----------------------------------------------------------------------------------------------------------------
# controls


def test_control_gd_update_is_recovered_from_a_constructed_lsa():
    """Positive control: after a constructed GD layer the query's y-slot is −ΔW x_q, so R² ≈ 1 there and ≈ 0 in
    the input tokens (which hold x_q and a zero y-slot)."""
    eta = 0.7
    p = _prompts(3000)
    model = construct_gd(D, N, [eta, eta])
    targets = {"gd_update": _gd_update(p, eta)}
    summary = probe_model(model, p, targets=targets)
    r2 = dict(zip(summary["hooks"], summary["r2"]["gd_update"]))
    assert r2["blocks.0.hook_resid_post"] >= 0.99
    assert r2["input"] <= 0.1


@pytest.mark.parametrize("token", ["query", "context_mean"])
@pytest.mark.parametrize(("layers", "init_scale"), [(1, 0.002), (2, 1.0)])
def test_control_w_is_not_recovered_from_a_random_lsa(token, layers, init_scale):
    """Negative control: held-out R² (pooled over coordinates) of the probe w ← features of a randomly initialised
    LSA, at every hook, on 5000 prompts (3000 train / 1000 validation / 1000 test): ≤ 0.1 (measured: max 3e-4)."""
    p = _prompts(5000)
    summary = probe_model(_random_lsa(layers, init_scale), p, token=token)
    assert summary["n_train"] == 3000 and summary["n_test"] == 1000
    assert max(summary["r2"]["w"]) <= 0.1
    assert max(summary["r2"]["xty"]) <= 0.1


@pytest.mark.slow
def test_trained_one_layer_lsa_holds_the_gd_update_but_not_w():
    """Trained vs random 1-layer LSA (d = 5, n = 20, noiseless, 500 steps ≈ 4 s): the GD update is linearly read
    from the trained model's query token (R² ≈ 0.9999) and not from the random one (≈ 0.03). w and Xᵀy are read
    from neither (≈ 0): a (d + 1)-wide stream holding x_q has no room for w; only the product x_qᵀXᵀy appears."""
    from iclab.experiments.presets import preset
    from iclab.training import train

    cfg = preset("gaussian").replace(
        task={"d": D, "n_points": N, "noise_var": 0.0},
        train={"steps": 500, "batch_size": 1024, "lr": 3e-3, "progress": False, "eval_every": 250},
        eval={"n_prompts": 500},
    )
    trained = train(cfg).model
    p = _prompts(4000, dtype=torch.float32, seed=5)
    targets = {**probe_targets(p), "gd_update": _gd_update(p, 1.0)}
    last = "blocks.0.hook_resid_post"
    r2 = {}
    for name, model in (("trained", trained), ("random", _random_lsa(1).float())):
        summary = probe_model(model, p, targets=targets)
        r2[name] = {t: dict(zip(summary["hooks"], v))[last] for t, v in summary["r2"].items()}
    assert r2["trained"]["gd_update"] >= 0.99, r2
    assert r2["random"]["gd_update"] <= 0.2, r2
    for name in r2:
        assert r2[name]["w"] <= 0.1 and r2[name]["xty"] <= 0.1, r2


# ----------------------------------------------------------------------------------------------------------------
# the MLP probe


def test_mlp_probe_reads_a_product_the_linear_probe_cannot_and_nothing_from_noise():
    """Batched probes are independent: probe 0 learns t = f_0·f_1 (test R² > 0.8; the ridge probe's R² ≈ 0 — the
    product is uncorrelated with every feature), probe 1, on a target independent of its features, stays near 0
    (early stopping on validation R² keeps it from overfitting), and the predictions are in the targets' units."""
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 1500, 6, generator=g, dtype=torch.float64)
    t = torch.stack([3.0 + 5.0 * f[0, :, :1] * f[0, :, 1:2], torch.randn(1500, 1, generator=g, dtype=torch.float64)])
    tr, va, te = slice(0, 900), slice(900, 1200), slice(1200, 1500)
    predict = fit_mlp(f[:, tr], t[:, tr], f[:, va], t[:, va], generator=torch.Generator().manual_seed(1))
    pred = predict(f[:, te])
    assert pred.shape == (2, 300, 1)
    assert r2_score(pred[0], t[0, te]) > 0.8
    assert abs(r2_score(pred[1], t[1, te])) < 0.05
    coef, icpt = fit_ridge(f[0, :1200], t[0, :1200], 1e-3)
    assert abs(r2_score(ridge_predict(f[0, te], coef, icpt), t[0, te])) < 0.05
    again = fit_mlp(f[:, tr], t[:, tr], f[:, va], t[:, va], generator=torch.Generator().manual_seed(1))(f[:, te])
    torch.testing.assert_close(again, pred, rtol=0, atol=0)  # the generator decides everything


# ----------------------------------------------------------------------------------------------------------------
# names, shapes, errors, outputs


def test_features_targets_and_summary_shapes(tmp_path):
    p = _prompts(200, n_queries=3)
    model = _random_lsa(3)
    hooks = default_hooks(model)
    assert hooks == ["input", *(f"blocks.{layer}.hook_resid_post" for layer in range(3))]
    for token in ("query", "context_mean"):
        feats = collect_features(model, p, token=token)
        assert list(feats) == hooks
        assert all(f.shape == (200, D + 1) and f.dtype == torch.float64 for f in feats.values())
    feats = collect_features(model, p, names=["input"])
    torch.testing.assert_close(feats["input"][:, :D], p.x_q[:, 0])  # query token: [x_q, 0]
    assert torch.all(feats["input"][:, D] == 0)
    last = collect_features(model, p, names=["input"], token="last_context")["input"]  # concat layout: [x_n, y_n]
    torch.testing.assert_close(last, torch.cat([p.x_ctx[:, -1], p.y_ctx[:, -1:]], dim=-1))
    ctx = collect_features(model, p, names=["input"], token="context_mean")["input"]
    torch.testing.assert_close(ctx, torch.cat([p.x_ctx.mean(1), p.y_ctx.mean(1, keepdim=True)], dim=-1))
    targets = probe_targets(p)
    assert targets["w"].shape == (200, D) and targets["xty"].shape == (200, D)
    torch.testing.assert_close(targets["xty"], (p.x_ctx * p.y_ctx.unsqueeze(-1)).sum(1))
    w_ols = probe_targets(p, ["w_ols"])["w_ols"]
    for b in (0, 57):  # the least-squares fit of each prompt's context (n > d: unique)
        expect = np.linalg.lstsq(p.x_ctx[b].numpy(), p.y_ctx[b].numpy(), rcond=None)[0]
        np.testing.assert_allclose(w_ols[b].numpy(), expect, rtol=1e-8, atol=1e-10)
    summary = probe_model(model, p, names=["blocks.1.hook_attn_out", "blocks.2.hook_resid_post"])
    json.dumps(summary)
    assert summary["hooks"] == ["blocks.1.hook_attn_out", "blocks.2.hook_resid_post"]
    assert len(summary["rows"]) == 4 and {len(v) for v in summary["r2"].values()} == {2}
    assert (summary["n_train"], summary["n_val"], summary["n_test"]) == (120, 40, 40)
    assert set(summary["rows"][0]) == {"hook", "target", "r2_test", "r2_train", "lambda", "lambda_rel", "width"}
    assert plot_probes(probe_model(model, p), tmp_path / "probes.png").stat().st_size > 10_000
    mlp = probe_model(model, p, names=["input", "blocks.2.hook_resid_post"], probe="mlp")
    json.dumps(mlp)
    assert mlp["probe"] == "mlp" and len(mlp["rows"]) == 4 and {len(v) for v in mlp["r2"].values()} == {2}
    assert set(mlp["rows"][0]) == {"hook", "target", "r2_test", "r2_train", "width"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"names": ["blocks.0.hook_resid_pots"]}, "unknown hook point 'blocks.0.hook_resid_pots'; choose from: input"),
        ({"names": ["blocks.0.attn.hook_pattern"]}, "probes read \\[batch, tokens, width\\]"),
        ({"token": "last"}, "token: unknown value 'last'; choose one of: query, last_context, context_mean"),
        ({"probe": "tree"}, "probe: unknown value 'tree'; choose one of: linear, mlp"),
        ({"targets": ["w", "wx"]}, "targets: unknown name 'wx'"),
        ({"targets": {"bad": torch.zeros(7)}}, "targets\\['bad'\\]: must be \\[100\\]"),
        ({"split": (0.99, 0.005)}, "split"),
    ],
)
def test_bad_arguments_fail_in_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        probe_model(_random_lsa(1), _prompts(100), **kwargs)
    assert "\n" not in str(info.value)


def test_w_target_needs_a_linear_task():
    p = _prompts(10)
    with pytest.raises(ValueError, match="targets: 'w' needs prompts with a task vector"):
        probe_targets(replace(p, w=None))
