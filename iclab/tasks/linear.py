"""In-context linear regression (von Oswald et al.; Garg et al.; the theory of docs/papers.md §6) and its priors."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from iclab.tasks.base import Task

__all__ = ["LinearRegressionTask"]


class LinearRegressionTask(Task):
    """y = wᵀx + ε with x ~ U(−a, a)^d or N(0, a²Σ_x), ε ~ N(0, σ²) and w from `w_prior`:

    * ``gaussian``  w ~ N(0, τ²·diag(w_cov_diag)) (identity when unset);
    * ``sign``      w uniform on {−τ, +τ}^d (Bayesian-prism sign-vector regression);
    * ``low_rank``  w = vec(W), W = U Vᵀ/√r a √d×√d matrix of rank r = w_rank with U, V ~ N(0, 1) entries,
                    times τ: E‖w‖² = τ²d as for the Gaussian prior (Bayesian-prism low-rank regression).
    """

    def w_second_moment(self) -> Tensor:
        """Diagonal of E[w wᵀ], shape [d] (float64); every prior has E[w wᵀ] diagonal."""
        c = self.config
        diag = torch.ones(c.d, dtype=torch.float64) if c.w_cov_diag is None else torch.tensor(c.w_cov_diag)
        return diag.double() * c.w_scale**2

    def sample_params(
        self, batch: int, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        c = self.config
        if c.w_prior == "sign":
            w = (torch.randint(0, 2, (batch, c.d), generator=generator, device=device).to(dtype) * 2 - 1) * c.w_scale
        elif c.w_prior == "low_rank":
            side, r = math.isqrt(c.d), c.w_rank
            u = torch.randn((batch, side, r), generator=generator, device=device, dtype=dtype)
            v = torch.randn((batch, side, r), generator=generator, device=device, dtype=dtype)
            w = (u @ v.transpose(1, 2)).reshape(batch, c.d) * (c.w_scale / math.sqrt(r))  # [batch, d]
        else:
            w = torch.randn((batch, c.d), generator=generator, device=device, dtype=dtype) * c.w_scale
            if c.w_cov_diag is not None:
                diag = lambda: torch.tensor(c.w_cov_diag, dtype=torch.float64).sqrt().to(device, dtype)  # noqa: E731
                w = w * self._cached(("w_sqrt", device, dtype), diag)
        return {"w": w}

    def evaluate(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return torch.einsum("btd,bd->bt", x, params["w"])  # [B, T]
