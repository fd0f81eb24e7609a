"""`iclab reproduce mahankali-zfb`: the pipeline end to end at a tiny scale through the CLI, Zhang–Frei–Bartlett's
initialisation of the LSA family (LSAConfig.init_scheme = "zfb"), and the analysis helpers against numpy references."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from iclab.analysis.compare import effective_preconditioner, per_prompt_half_mse
from iclab.cli import main
from iclab.config import ConfigError
from iclab.experiments.mahankali_zfb import SCALES, _rescaled, read_preconditioner
from iclab.models.lsa import LSA, LSAConfig
from iclab.models.separate import SeparateConfig
from iclab.tasks import make_task
from iclab.tasks.linear import LinearConfig

CLAIMS = {
    "isotropic_preconditioner",
    "isotropic_loss",
    "precond_preconditioner",
    "precond_loss",
    "default_init_failures",
    "zfb_init_converges",
    "aniso_preconditioner",
    "aniso_loss",
    "zfb_gamma",
    "zfb_lengths_and_shift",
}


def _zfb(d=4, sigma=0.3, seed=0) -> LSA:
    return LSA(
        LSAConfig(layers=1, init_scheme="zfb", init_scale=sigma), d, generator=torch.Generator().manual_seed(seed)
    )


def test_zfb_init_is_their_block_form():
    d, sigma = 4, 0.3
    w = _zfb(d, sigma).layer_weights(0)
    KQ, OV = w.KQ[0].detach().double(), w.OV[0].detach().double()
    gram = KQ[:d, :d] / sigma  # ΘΘᵀ
    assert torch.linalg.matrix_norm(gram).item() == pytest.approx(1.0, rel=1e-6)
    assert torch.allclose(gram, gram.T, atol=1e-7) and torch.linalg.eigvalsh(gram).min() > -1e-7
    assert torch.count_nonzero(KQ[d]) == 0 and torch.count_nonzero(KQ[:, d]) == 0
    expected_ov = torch.zeros(d + 1, d + 1, dtype=torch.float64)
    expected_ov[d, d] = -sigma
    assert torch.allclose(OV, expected_ov, atol=1e-7)
    # Θ comes from the generator: reproducible, and another seed gives another Θ
    assert torch.equal(_zfb(d, sigma).layer_weights(0).W_Q, _zfb(d, sigma).layer_weights(0).W_Q)
    assert not torch.equal(_zfb(d, sigma).layer_weights(0).W_Q, _zfb(d, sigma, seed=1).layer_weights(0).W_Q)


def test_zfb_init_predicts_sigma_squared_theta_theta_t_against_numpy():
    """At ZFB's start ŷ = x_qᵀ (σ²ΘΘᵀ) Σ_i y_i x_i (no 1/N in iclab's LSA), on both the fast and the naive path."""
    d, sigma = 3, 0.5
    model = _zfb(d, sigma).double()
    w = model.layer_weights(0)
    gram = w.KQ[0, :d, :d].detach().numpy() / sigma
    c = -w.OV[0, d, d].item()  # σ up to the float32 rounding of √σ
    assert c == pytest.approx(sigma, rel=1e-6)
    p = make_task(LinearConfig(d=d, n_points=7, x_dist="gaussian", x_scale=1.0)).sample(
        5, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    x, y, xq = p.x_ctx.numpy(), p.y_ctx.numpy(), p.x_q.numpy()
    ref = np.einsum("bmd,de,be->bm", xq, c * sigma * gram, np.einsum("bn,bnd->bd", y, x))
    with torch.no_grad():
        fast = model.predict(p.x_ctx, p.y_ctx, p.x_q).numpy()
        naive = model.set_impl("naive").predict(p.x_ctx, p.y_ctx, p.x_q).numpy()
    np.testing.assert_allclose(fast, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(naive, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(read_preconditioner(model, 7), 7 * c * sigma * gram, rtol=1e-10)


@pytest.mark.parametrize(
    "kwargs", [{"init_scheme": "zfb", "layers": 2}, {"init_scheme": "zfb", "heads": 2}, {"init_scheme": "glorot"}]
)
def test_zfb_init_is_validated(kwargs):
    with pytest.raises(ConfigError, match=r"model\.init_scheme"):
        LSAConfig(**kwargs)


def test_zfb_init_is_refused_by_lsa_subfamilies_and_default_is_random():
    with pytest.raises(ConfigError, match=r"model\.init_scheme"):
        SeparateConfig(layers=1, init_scheme="zfb")
    assert LSAConfig().init_scheme == "random"
    # the default start is unchanged: i.i.d. entries, every one non-zero
    w = LSA(LSAConfig(layers=1), 4, generator=torch.Generator().manual_seed(0)).layer_weights(0)
    assert all(torch.count_nonzero(getattr(w, n)) == 25 for n in ("W_Q", "W_K", "W_V", "W_O"))


def test_read_preconditioner_is_the_part_of_the_prediction_odd_in_y():
    """½(ŷ(y) − ŷ(−y)) = x_qᵀ Â (1/n)Xᵀy exactly, for an LSA with O(1) weights in every block (random init)."""
    n = 6
    model = LSA(LSAConfig(layers=1, init_scale=1.0), 3, generator=torch.Generator().manual_seed(4)).double()
    p = make_task(LinearConfig(d=3, n_points=n, x_dist="gaussian", x_scale=1.0)).sample(
        8, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    with torch.no_grad():
        odd = 0.5 * (model.predict(p.x_ctx, p.y_ctx, p.x_q) - model.predict(p.x_ctx, -p.y_ctx, p.x_q)).numpy()
    v = np.einsum("bn,bnd->bd", p.y_ctx.numpy(), p.x_ctx.numpy()) / n
    ref = np.einsum("bmd,de,be->bm", p.x_q.numpy(), read_preconditioner(model, n), v)
    np.testing.assert_allclose(odd, ref, rtol=1e-10, atol=1e-12)
    # the GD-like term −n·c·Mᵀ alone misses the rank-one b aᵀ part here: the test is not vacuous
    w, d = model.layer_weights(0), 3
    gd_like = (-n * w.OV[0, d, d] * w.KQ[0, :d, :d].T).detach().numpy()
    narrow = np.einsum("bmd,de,be->bm", p.x_q.numpy(), gd_like, v)
    assert np.abs(narrow - odd).max() > 1e-3
    np.testing.assert_allclose(read_preconditioner(model, n), n * effective_preconditioner(model).numpy())


def test_rescaled_model_scales_predictions_and_per_prompt_loss_matches_numpy():
    model = LSA(LSAConfig(layers=1, init_scale=1.0), 3, generator=torch.Generator().manual_seed(2)).double()
    p = make_task(LinearConfig(d=3, n_points=5, x_dist="gaussian", x_scale=1.0, n_queries=2)).sample(
        6, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    with torch.no_grad():
        base = model.predict(p.x_ctx, p.y_ctx, p.x_q).numpy()
        scaled = _rescaled(model, 0.25).predict(p.x_ctx, p.y_ctx, p.x_q).numpy()
    np.testing.assert_allclose(scaled, 0.25 * base, rtol=1e-12)
    ref = 0.5 * ((base - p.y_q.numpy()) ** 2).mean(axis=1)
    np.testing.assert_allclose(per_prompt_half_mse(model, p), ref, rtol=1e-12)
    assert effective_preconditioner(model).shape == (3, 3)


def test_reproduce_pipeline_tiny(tmp_path, capsys, monkeypatch):
    """The CLI end to end on the tiny scale (put in place of smoke): results.json, claims with measured values,
    figures, --json, and no silent overwrite."""
    monkeypatch.setitem(SCALES, "smoke", SCALES["tiny"])
    out, js = tmp_path / "mz", tmp_path / "mz.json"
    code = main(["reproduce", "mahankali-zfb", "--out", str(out), "--json", str(js), "--seeds", "2", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "ZFB: other lengths M and covariate shift" in printed

    result = json.loads(js.read_text())
    assert set(result) == {"name", "config", "metrics", "claims"} and result["name"] == "mahankali-zfb"
    assert result["config"]["seeds"] == 2
    assert {c["id"] for c in result["claims"]} == CLAIMS
    for claim in result["claims"]:
        assert set(claim) == {"id", "description", "reference", "measured", "tolerance", "holds"}
        assert isinstance(claim["measured"], int | float) and isinstance(claim["holds"], bool)
    m = result["metrics"]
    assert {"setting", "isotropic", "precond", "anisotropic", "zfb", "wall_time_s"} <= set(m)
    assert len(m["anisotropic"]["default"]["seeds"]) == 2 and len(m["anisotropic"]["zfb"]["seeds"]) == 2
    assert m["isotropic"]["general_formula_gap"] < 1e-12 and m["precond"]["general_formula_gap"] < 1e-12
    assert set(m["phase_wall_time_s"]["per_run_train"]) == {
        "mz-isotropic-seed0+1",
        "mz-precond-seed0+1",
        "mz-aniso-default-seed0+1",
        "mz-aniso-zfb-N10-seed0+1",
    }
    for fig in ("preconditioner_eigenvalues", "seed_losses", "training_curves_anisotropic"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 5_000, fig
    assert (out / "report.md").exists() and (out / "report.html").exists()

    assert main(["reproduce", "mahankali-zfb", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
