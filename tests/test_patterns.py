"""iclab.analysis.patterns: KQ / OV statistics on hand-built weights with known answers, circuits and attention
patterns of SoftmaxAttention and LSA (JSON-ready results, figures written)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from iclab.analysis.patterns import attention_patterns, circuit_statistics, circuits, kq_statistics, ov_statistics
from iclab.config import model_config
from iclab.models.lsa import LSA
from iclab.models.softmax import SoftmaxAttention
from iclab.tasks.base import Prompts


def _x_block(d: int) -> torch.Tensor:
    """[[I_d, 0], [0, 0]]: [d + 1, d + 1]."""
    m = torch.zeros(d + 1, d + 1, dtype=torch.float64)
    m[:d, :d] = torch.eye(d)
    return m


def _e_yy(d: int) -> torch.Tensor:
    m = torch.zeros(d + 1, d + 1, dtype=torch.float64)
    m[d, d] = 1.0
    return m


def _softmax_construction(d: int, beta: float, c: float) -> SoftmaxAttention:
    """Two heads with KQ_h = ±β·[[I, 0], [0, 0]] and OV_h = ∓c·e_y e_yᵀ."""
    model = SoftmaxAttention(model_config(name="softmax", heads=2), d).double()
    a = model.blocks[0].attn
    with torch.no_grad():
        a.W_Q.copy_(torch.stack([_x_block(d), _x_block(d)]) * beta**0.5)
        a.W_K.copy_(torch.stack([_x_block(d), -_x_block(d)]) * beta**0.5)
        a.W_V.copy_(torch.stack([_e_yy(d), _e_yy(d)]))
        a.W_O.copy_(torch.stack([-c * _e_yy(d), c * _e_yy(d)]))
    return model


def _lsa_construction(d: int, eta_over_n: float) -> LSA:
    """von Oswald's one GD step: W_K = W_Q = [[I, 0], [0, 0]], W_V = [[0, 0], [0, −1]], W_O = (η/N)·I."""
    model = LSA(model_config("lsa"), d).double()
    w = model.layer_weights(0)
    with torch.no_grad():
        w.W_Q.copy_(_x_block(d)[None])
        w.W_K.copy_(_x_block(d)[None])
        w.W_V.copy_(-_e_yy(d)[None])
        w.W_O.copy_(eta_over_n * torch.eye(d + 1, dtype=torch.float64)[None])
    return model


def _prompts(d=3, n=20, m=2, batch=64, seed=0) -> Prompts:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n + m, d, generator=g, dtype=torch.float64)
    w = torch.randn(batch, d, generator=g, dtype=torch.float64)
    return Prompts(x=x, y=torch.einsum("btd,bd->bt", x, w), n_ctx=n, w=w)


def test_kq_statistics_known_answers():
    # head 0: x-block [[1, 1], [0, 1]] → off-diagonal mass 1/3, diagonal (1, 1): cv 0, mean 1; key-y row (2, 0):
    # key_y_mass = 4 / (1 + 1 + 1 + 4) = 4/7.  head 1: diag(−1, −3): off 0, mean −2, cv 1/2, no key-y term.
    kq = np.zeros((2, 3, 3))
    kq[0, :2, :2] = [[1, 1], [0, 1]]
    kq[0, 2, 0] = 2.0
    kq[0, :, 2] = 5.0  # the query's y column: never seen by a query (its y-slot is 0), ignored
    kq[1, :2, :2] = np.diag([-1.0, -3.0])
    s = kq_statistics(kq)
    assert s["off_diagonal_mass"] == pytest.approx([1 / 3, 0.0])
    assert s["diagonal_cv"] == pytest.approx([0.0, 0.5])
    assert s["diagonal_mean"] == pytest.approx([1.0, -2.0])
    assert s["key_y_mass"] == pytest.approx([4 / 7, 0.0])
    assert s["max_off_diagonal_mass"] == pytest.approx(1 / 3) and s["max_diagonal_cv"] == pytest.approx(0.5)
    assert s["opposite_signs"] is True
    assert kq_statistics(kq[1])["opposite_signs"] is False  # one [D, D] matrix is one head
    json.dumps(s)


def test_ov_statistics_known_answers():
    # head 0: only OV[y, y] = 2 → last row 1, last entry 1. head 1: last row (3, 0, −4), one more entry 5 above:
    # last row mass 25/50, last entry 16/25. zero-sum: |2 − 4| / (2 + 4) = 1/3.
    ov = np.zeros((2, 3, 3))
    ov[0, 2, 2] = 2.0
    ov[1, 2] = [3.0, 0.0, -4.0]
    ov[1, 0, 1] = 5.0
    s = ov_statistics(ov)
    assert s["ov_yy"] == [2.0, -4.0]
    assert s["last_row_mass"] == pytest.approx([1.0, 0.5])
    assert s["last_entry_mass"] == pytest.approx([1.0, 16 / 25])
    assert s["min_last_row_mass"] == pytest.approx(0.5) and s["min_last_entry_mass"] == pytest.approx(16 / 25)
    assert s["zero_sum"] == pytest.approx(1 / 3)
    total = np.linalg.norm(ov.sum(0))
    assert s["zero_sum_matrix"] == pytest.approx(total / (2.0 + math.sqrt(50.0)))
    cancel = np.stack([ov[0], -ov[0]])
    assert ov_statistics(cancel)["zero_sum"] == 0.0 and ov_statistics(cancel)["zero_sum_matrix"] == 0.0
    assert ov_statistics(ov[0])["zero_sum"] == 1.0  # a single head cannot cancel


def test_statistics_reject_bad_shapes_and_degenerate_input():
    with pytest.raises(ValueError, match="KQ"):
        kq_statistics(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="OV"):
        ov_statistics(np.zeros(3))
    s = kq_statistics(np.zeros((1, 3, 3)))  # all-zero: ratios undefined, reported as NaN (not 0)
    assert math.isnan(s["off_diagonal_mass"][0]) and math.isnan(s["diagonal_cv"][0])


def test_circuit_statistics_of_the_softmax_construction(tmp_path):
    d, beta, c = 3, 0.25, 2.0
    model = _softmax_construction(d, beta, c)
    mats = circuits(model)
    assert len(mats) == 1 and mats[0]["KQ"].shape == mats[0]["OV"].shape == (2, d + 1, d + 1)
    out = circuit_statistics(model, tmp_path / "fig" / "circuits.png", title="construction")
    json.dumps(out)
    assert (tmp_path / "fig" / "circuits.png").stat().st_size > 5_000 and out["figure"].endswith("circuits.png")
    kq, ov = out["layers"][0]["kq"], out["layers"][0]["ov"]
    assert kq["diagonal_mean"] == pytest.approx([beta, -beta])
    assert kq["max_off_diagonal_mass"] == 0.0 and kq["max_diagonal_cv"] == 0.0 and kq["max_key_y_mass"] == 0.0
    assert kq["opposite_signs"]
    assert ov["ov_yy"] == pytest.approx([-c, c]) and ov["zero_sum"] == 0.0 and ov["min_last_entry_mass"] == 1.0
    # each head adds β·c: the implied debiased-GD step is 2βc / N (test_softmax checks it against DebiasedGD)
    assert out["layers"][0]["head_gain"] == pytest.approx([beta * c, beta * c])


def test_circuit_statistics_of_the_lsa_construction(tmp_path):
    d = 4
    out = circuit_statistics(_lsa_construction(d, 0.1), tmp_path / "lsa.png")
    kq, ov = out["layers"][0]["kq"], out["layers"][0]["ov"]
    assert kq["diagonal_mean"] == pytest.approx([1.0]) and kq["max_off_diagonal_mass"] == 0.0
    assert ov["ov_yy"] == pytest.approx([-0.1]) and ov["min_last_row_mass"] == 1.0 and ov["zero_sum"] == 1.0
    assert np.asarray(out["layers"][0]["OV"]).shape == (1, d + 1, d + 1)


def test_circuits_of_a_multi_layer_model(tmp_path):
    model = SoftmaxAttention(model_config(name="softmax", layers=2, heads=3), 2, generator=torch.Generator())
    out = circuit_statistics(model, tmp_path / "c.png")
    assert len(out["layers"]) == 2 and len(out["layers"][1]["kq"]["diagonal_mean"]) == 3
    np.testing.assert_allclose(out["layers"][1]["KQ"], model.blocks[1].attn.KQ.detach().double().numpy())


def test_attention_patterns_recover_beta(tmp_path):
    """logits ±β x_iᵀx_q exactly: the centred log-probabilities are linear in x_iᵀx_q with slope ±β, R² = 1."""
    beta = 0.3
    prompts = _prompts()
    out = attention_patterns(_softmax_construction(3, beta, 1.0), prompts, tmp_path / "p.png", max_prompts=8)
    json.dumps(out)
    assert (tmp_path / "p.png").stat().st_size > 5_000
    layer = out["layers"][0]
    assert layer["kind"] == "probabilities" and out["n_prompts"] == 64
    assert layer["slope"] == pytest.approx([beta, -beta], rel=1e-9)
    assert layer["r2"] == pytest.approx([1.0, 1.0], abs=1e-9)
    assert all(0.0 < e < 1.0 for e in layer["entropy"])
    # β → 0 gives uniform rows: entropy 1
    flat = attention_patterns(_softmax_construction(3, 1e-8, 1.0), prompts, tmp_path / "q.png")
    assert flat["layers"][0]["entropy"] == pytest.approx([1.0, 1.0], abs=1e-9)


def test_attention_patterns_of_lsa_read_raw_scores(tmp_path):
    """LSA's hook_pattern holds unnormalised scores e_iᵀ W_KQ e_q = x_iᵀx_q for the construction: slope 1."""
    out = attention_patterns(_lsa_construction(3, 0.1), _prompts(), tmp_path / "lsa.png")
    layer = out["layers"][0]
    assert layer["kind"] == "scores" and "entropy" not in layer
    assert layer["slope"] == pytest.approx([1.0]) and layer["r2"] == pytest.approx([1.0])
