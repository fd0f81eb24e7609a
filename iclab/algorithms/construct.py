"""Weights that make an LSA stack *be* an algorithm (von Oswald, Prop. 1 and its GD++ extension).

With W_K = W_Q = [[I_d, 0], [0, 0]] every score is x_iᵀx_j. GD: W_V = [[0, 0], [0, −1]] (value −y-slot),
W_O = (η/N)·I (vO's P), so the y-slots become y_j − ΔW x_j, one GD step from W₀ = 0 (the query's slot holds −ŷ).
GD++ adds W_V's x-block −I and W_O's x-block γ·I, i.e. x_j ← x_j − γ Σ_i x_i x_iᵀ x_j. Head 0 carries the
construction; other heads are zero. In iclab.models.base's convention: KQ = W_Kᵀ W_Q, OV = W_O W_V.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from iclab.models.lsa import LSA, LSAConfig

__all__ = ["construct_gd", "construct_gdpp", "gd_blocks"]


def gd_blocks(d: int, eta: float, n: int, gamma: float = 0.0) -> dict[str, torch.Tensor]:
    """The constructed (W_Q, W_K, W_V, W_O) of one layer, each [D, D] with D = d + 1 (float64; W_O is vO's P)."""
    width = d + 1
    kq = torch.zeros(width, width, dtype=torch.float64)
    kq[:d, :d] = torch.eye(d, dtype=torch.float64)
    w_v = torch.zeros(width, width, dtype=torch.float64)
    w_v[d, d] = -1.0
    p = torch.eye(width, dtype=torch.float64) * (eta / n)
    if gamma != 0.0:
        w_v[:d, :d] = -torch.eye(d, dtype=torch.float64)
        p[:d, :d] = torch.eye(d, dtype=torch.float64) * gamma
    return {"W_Q": kq.clone(), "W_K": kq.clone(), "W_V": w_v, "W_O": p}


def construct_gdpp(
    d: int, n: int, etas: Sequence[float], gammas: Sequence[float], *, heads: int = 1, tied: bool = False
) -> LSA:
    """An LSA (float64, len(etas) layers, no LayerNorm) equal to GD++ with these per-layer steps."""
    if len(etas) != len(gammas):
        raise ValueError(f"gammas: must have one value per layer ({len(etas)}), got {len(gammas)}")
    if tied and (len(set(etas)) > 1 or len(set(gammas)) > 1):
        raise ValueError("tied: a tied construction needs the same eta and gamma in every layer")
    config = LSAConfig(layers=len(etas), tied=tied, heads=heads)
    model = LSA(config, d, generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        for layer, weights in enumerate(model.weights):
            blocks = gd_blocks(d, etas[layer], n, gammas[layer])
            for name, value in blocks.items():
                param = getattr(weights, name)
                param.zero_()
                param[0] = value
    return model


def construct_gd(d: int, n: int, etas: Sequence[float], *, heads: int = 1, tied: bool = False) -> LSA:
    """An LSA equal to len(etas) GD steps from W₀ = 0 with steps etas (W_O = η/N)."""
    return construct_gdpp(d, n, etas, [0.0] * len(etas), heads=heads, tied=tied)
