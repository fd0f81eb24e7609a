"""Sequence families: the prompt is one trajectory of a random linear dynamical system, and each point asks for the
next value (docs/papers.md §8: AR(p) sequences; x_{t+1} = W x_t mesa-optimisation, von Oswald et al. 2023).

Both generate the trajectory step by step (a loop over time, batched over prompts), so they override
`Task.sample`; `evaluate` (hence `Task.targets`) is the noiseless one-step prediction from the prompt's inputs.
Their label noise is the process's own innovation ε_t (variance noise_var): y_t = f(x_t) + ε_t, and y_t is also the
next input. The input-distribution fields (x_dist, x_scale, …) are ignored: the trajectory is the input.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from iclab.tasks.base import Prompts, Task

__all__ = ["AutoregressiveTask", "LinearDynamicsTask", "haar_orthogonal", "stable_ar_coefficients"]


def stable_ar_coefficients(
    batch: int, order: int, radius: float, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """[batch, order] coefficients a of stationary AR(order) processes z_t = Σ_j a_j z_{t−j} + ε_t.

    The roots of λ^p − a_1 λ^{p−1} − … − a_p (the companion matrix's eigenvalues) are drawn, then multiplied out:
    ⌊p/2⌋ complex-conjugate pairs uniform on the upper half of the disc |λ| ≤ radius (modulus radius·√u, angle
    U(0, π)), and for odd p one real root U(−radius, radius). All roots lie inside the disc, so the process is
    stable for radius < 1.
    """
    n_pairs = order // 2
    poly = torch.zeros((batch, order + 1), device=device, dtype=dtype)  # [B, p + 1] monic, highest power first
    poly[:, 0] = 1
    modulus = radius * torch.rand((batch, n_pairs), generator=generator, device=device, dtype=dtype).sqrt()
    angle = math.pi * torch.rand((batch, n_pairs), generator=generator, device=device, dtype=dtype)
    for j in range(n_pairs):  # × (λ² − 2r cos θ λ + r²), the pair r e^{±iθ}
        r, theta = modulus[:, j : j + 1], angle[:, j : j + 1]  # [B, 1]
        shifted1 = torch.nn.functional.pad(poly[:, :-1], (1, 0))  # coefficient k − 1 at position k
        shifted2 = torch.nn.functional.pad(poly[:, :-2], (2, 0))
        poly = poly - 2 * r * theta.cos() * shifted1 + r * r * shifted2
    if order % 2:  # × (λ − r), one real root
        root = radius * (2 * torch.rand((batch, 1), generator=generator, device=device, dtype=dtype) - 1)
        poly = poly - root * torch.nn.functional.pad(poly[:, :-1], (1, 0))
    return -poly[:, 1:]  # [B, p]: λ^p = Σ_j a_j λ^{p−j}


def haar_orthogonal(
    batch: int, d: int, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """[batch, d, d] Haar-distributed orthogonal matrices: Q of the QR of a Gaussian matrix, columns signed so that
    R has a positive diagonal (without the signs Q is not Haar; Mezzadri 2007)."""
    g = torch.randn((batch, d, d), generator=generator, device=device, dtype=dtype)
    q, r = torch.linalg.qr(g)  # [B, d, d] each
    signs = torch.where(r.diagonal(dim1=-2, dim2=-1) >= 0, 1.0, -1.0).to(dtype)  # [B, d]
    return q * signs.unsqueeze(-2)  # column j times sign(R_jj)


def _check_d_active(task: Task, d_active: int | None) -> int:
    k = task.check_d_active(d_active)
    if k < task.d and task.config.pool_size > 0:
        raise ValueError(f"d_active: task {task.config.name!r} with a finite pool needs d_active = d = {task.d}")
    return k


class AutoregressiveTask(Task):
    """Next-value prediction in a stationary AR(p) sequence, p = d: z_t = Σ_{j=1..p} a_j z_{t−j} + ε_t.

    ε_t ~ N(0, σ²), σ² = noise_var; a from `stable_ar_coefficients` (companion eigenvalues of modulus ≤
    spectral_radius ρ). Prompt point t: x_t = (z_{t−1}, …, z_{t−p}) (the window, most recent lag first),
    y_t = z_t, f_t = aᵀx_t, so params {"w": a} and every linear learner applies; consecutive windows shift:
    x_{t+1} = (y_t, x_t[:-1]).

    Start: p initial values N(0, s²), then `burn_in` steps before the first prompt point, so the transient (which
    decays like ρ^t) has shrunk by ρ^burn_in ≤ 10⁻³ (at most 1000 steps: for ρ > 0.993 the start is only near
    stationary). With σ² > 0, s = σ, so the whole prompt scales with σ. With σ² = 0 there is no non-trivial
    stationary law: s = 1, no burn-in, and the prompt is the deterministic, decaying continuation of its random
    initial values. w_scale and the input-distribution fields are ignored.
    """

    @property
    def burn_in(self) -> int:
        """Steps run before the first prompt point (0 without noise)."""
        if self.config.noise_var == 0:
            return 0
        return min(1000, math.ceil(math.log(1e-3) / math.log(self.config.spectral_radius)))

    def sample_params(
        self, batch: int, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        c = self.config
        a = stable_ar_coefficients(batch, c.d, c.spectral_radius, generator=generator, device=device, dtype=dtype)
        return {"w": a}

    def evaluate(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return torch.einsum("btp,bp->bt", x, params["w"])  # [B, T]

    def sample(
        self,
        batch: int,
        *,
        generator: torch.Generator,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        n_points: int | None = None,
        d_active: int | None = None,
    ) -> Prompts:
        """`batch` prompts of T = n + m consecutive points: x [B, T, p], y and f [B, T], params {"w": [B, p]}.

        d_active = k < p (curricula) draws AR(k) processes (a's last p − k lags zero) and zeroes the window's lags
        > k (the inactive coordinates, as in Garg's curriculum), so f = aᵀx still; not with a finite pool.
        """
        c = self.config
        device = generator.device if device is None else torch.device(device)
        n = c.n_points if n_points is None else n_points
        p, T, burn = c.d, n + c.n_queries, self.burn_in
        k = _check_d_active(self, d_active)
        if k < p:
            a = stable_ar_coefficients(batch, k, c.spectral_radius, generator=generator, device=device, dtype=dtype)
            params = {"w": torch.nn.functional.pad(a, (0, p - k))}  # [B, p]
        else:
            params = self.prompt_params(batch, generator=generator, device=device, dtype=dtype)
        sigma = math.sqrt(c.noise_var)
        z = torch.empty((batch, p + burn + T), device=device, dtype=dtype)  # the sequence, oldest first
        z[:, :p] = torch.randn((batch, p), generator=generator, device=device, dtype=dtype) * (sigma or 1.0)
        eps = torch.randn((batch, burn + T), generator=generator, device=device, dtype=dtype) * sigma
        a_old_first = params["w"].flip(-1)  # [B, p] (a_p, …, a_1), aligned with z[:, t − p : t]
        for t in range(p, p + burn + T):
            z[:, t] = (z[:, t - p : t] * a_old_first).sum(-1) + eps[:, t - p]
        windows = z.unfold(1, p, 1)  # [B, burn + T + 1, p]: window i is z[i : i + p], oldest first
        x = windows[:, burn : burn + T].flip(-1).contiguous()  # [B, T, p] (z_{t−1}, …, z_{t−p}) for targets z_t
        y = z[:, p + burn :].contiguous()  # [B, T]
        if k < p:
            x = x.masked_fill(torch.arange(p, device=device) >= k, 0.0)  # inactive lags carry zero weight anyway
        return Prompts(x=x, y=y, n_ctx=n, w=params["w"], f=self.evaluate(x, params), params=params)


class LinearDynamicsTask(Task):
    """Next-state prediction in s_{t+1} = W s_t + ε_t (von Oswald et al., mesa-optimisation), s ∈ R^d.

    W = ρ·Q with Q Haar-distributed orthogonal (one per prompt) and ρ = spectral_radius, s_0 ~ N(0, I_d),
    ε_t ~ N(0, σ²I_d). Prompt point t: x_t = s_t, y_t = s_{t+1} (vector targets [B, T, d]), f_t = W x_t.
    params {"W": [B, d, d]}. No burn-in: the prompt starts at s_0. w_scale and the input fields are ignored.
    """

    vector_targets = True

    def sample_params(
        self, batch: int, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        q = haar_orthogonal(batch, self.config.d, generator=generator, device=device, dtype=dtype)
        return {"W": self.config.spectral_radius * q}  # [B, d, d]

    def evaluate(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return torch.einsum("bij,btj->bti", params["W"], x)  # [B, T, d] = x @ Wᵀ

    def sample(
        self,
        batch: int,
        *,
        generator: torch.Generator,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        n_points: int | None = None,
        d_active: int | None = None,
    ) -> Prompts:
        """`batch` trajectories of T = n + m steps: x [B, T, d], y and f [B, T, d], params {"W": [B, d, d]}.

        d_active = k < d (curricula) runs k-dimensional systems in the first k coordinates (W = ρ·diag(Q_k, 0),
        the other coordinates of s and ε zero); not with a finite pool.
        """
        c = self.config
        device = generator.device if device is None else torch.device(device)
        n = c.n_points if n_points is None else n_points
        d, T = c.d, n + c.n_queries
        k = _check_d_active(self, d_active)
        if k < d:
            q = haar_orthogonal(batch, k, generator=generator, device=device, dtype=dtype)  # [B, k, k]
            params = {"W": torch.nn.functional.pad(c.spectral_radius * q, (0, d - k, 0, d - k))}  # [B, d, d]
        else:
            params = self.prompt_params(batch, generator=generator, device=device, dtype=dtype)
        W = params["W"]
        active = torch.arange(d, device=device) < k  # [d]
        s = torch.empty((batch, T + 1, d), device=device, dtype=dtype)
        s[:, 0] = torch.randn((batch, d), generator=generator, device=device, dtype=dtype) * active
        eps = torch.randn((batch, T, d), generator=generator, device=device, dtype=dtype) * (
            math.sqrt(c.noise_var) * active
        )
        for t in range(T):
            s[:, t + 1] = torch.einsum("bij,bj->bi", W, s[:, t]) + eps[:, t]
        x, y = s[:, :T].contiguous(), s[:, 1:].contiguous()  # [B, T, d] each
        return Prompts(x=x, y=y, n_ctx=n, f=self.evaluate(x, params), params=params)
