"""An attention-free sequence model: a selective state-space (Mamba-style) recurrence, in plain torch.

One block (pre-LayerNorm residual, r ← r + mixer(LN(r))), residual width W = config.width, inner width
E = 2W (EXPAND), state size N = config.state_dim per inner channel, Δ-rank R = ⌈W/16⌉:

    [x, z] = W_in u                                   u = LN(r) [L, W] → x, z [L, E]
    x = SiLU(causal depthwise conv_K(x))              kernel K = 4 over time (conv_kernel=0: no conv, x = SiLU(x))
    [δ, B, C] = W_x x                                 δ [L, R], B, C [L, N]: the selective (input-dependent) part
    Δ = softplus(W_dt δ + dt_bias)                    [L, E]
    A = −exp(A_log)                                   [E, N], diagonal and negative, learned
    h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t x_t          per channel e: h_t[e] ∈ R^N, h_0 = 0 (zero-order-hold decay,
                                                      Euler input: Mamba's simplified discretisation)
    y_t = C_t · h_t + D ⊙ x_t,   out = W_out (y ⊙ SiLU(z))

The recurrence has two implementations that tests compare: `scan_recurrent` (a loop over time) and
`scan_parallel` (a Hillis–Steele associative scan over the pairs (decay, input) with
(a₁, b₁) ∘ (a₂, b₂) = (a₁a₂, a₂b₁ + b₂): ⌈log₂ L⌉ elementwise steps, no exp of a growing cumulative sum, so
no overflow). The model uses the parallel form unless `SSMBlock.impl` is "naive".

The model (`SelectiveSSM`) reads Garg's interleaved stream x_1, y_1, x_2, y_2, … (iclab.tokens): a linear read-in
W_embed [W, max(d, 1)], the blocks, a final LayerNorm and a linear read-out W_unembed [1, W]; the prediction for
point t is the output at x_t's token, which (the model being causal) has seen x_1..x_t and y_1..y_{t−1}.
Initialisation as Mamba: A_log = log(1..N), D = 1, softplus(dt_bias) log-uniform in [1e-3, 1e-1], linear weights
U(±1/√fan_in) (W_out also / √layers), all from the given generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iclab.config import ModelConfig
from iclab.models.base import ICLModel, Impl, seeded_generator
from iclab.models.hooks import HookedModule, HookPoint
from iclab.shapes import Float, shape_checked
from iclab.tokens import InterleavedLayout
from iclab.validation import check_int

__all__ = ["SSMBlock", "SSMConfig", "SelectiveSSM", "scan_parallel", "scan_recurrent"]


@dataclass(frozen=True)
class SSMConfig(ModelConfig):
    """An attention-free gated linear recurrence with a selective scan (`SelectiveSSM`); heads is ignored."""

    name: ClassVar[str] = "ssm"

    width: int = 256
    """residual-stream width d_model"""
    state_dim: int = 16
    """state size per channel"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("model.width", self.width, 1)
        check_int("model.state_dim", self.state_dim, 1)


EXPAND = 2  # inner width E / residual width W (Mamba's default)
CONV_KERNEL = 4  # causal depthwise convolution length (Mamba's default)


def scan_recurrent(decay: Tensor, inp: Tensor) -> Tensor:
    """h_t = decay_t ⊙ h_{t−1} + inp_t with h_0 = 0, one step at a time.

    decay, inp [B, L, E, N] → states h [B, L, E, N] (h[:, t] after step t).
    """
    h = torch.zeros_like(inp[:, 0])  # [B, E, N]
    states = []
    for t in range(inp.shape[1]):
        h = decay[:, t] * h + inp[:, t]
        states.append(h)
    return torch.stack(states, dim=1)


def scan_parallel(decay: Tensor, inp: Tensor) -> Tensor:
    """The same recurrence as an inclusive Hillis–Steele scan over time (⌈log₂ L⌉ steps). Shapes as `scan_recurrent`.

    After the step with offset o, position t holds the composition of elements t − 2o + 1 … t; positions before
    the sequence start act as the identity (decay 1, input 0).
    """
    a, b = decay, inp  # [B, L, E, N]
    length, offset = inp.shape[1], 1
    while offset < length:
        a_prev = torch.cat([torch.ones_like(a[:, :offset]), a[:, :-offset]], dim=1)  # [B, L, E, N] shifted by o
        b_prev = torch.cat([torch.zeros_like(b[:, :offset]), b[:, :-offset]], dim=1)
        b = a * b_prev + b  # apply the earlier segment first, then this one
        a = a * a_prev
        offset *= 2
    return b


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator | None) -> nn.Parameter:
    return nn.Parameter((torch.rand(shape, generator=generator) * 2 - 1) * bound)


class SSMBlock(HookedModule):
    """One pre-LayerNorm residual block with a selective-scan mixer (module docstring); parameters named as there.

    W_in [2E, W], conv_weight [E, K], conv_bias [E], W_x [R + 2N, E], W_dt [E, R], dt_bias [E], A_log [E, N],
    D [E], W_out [W, E].
    """

    impl: Impl = "fast"  # "fast": `scan_parallel`; "naive": `scan_recurrent`, the loop over time (the reference)

    def __init__(
        self, width: int, state_dim: int, layers: int, conv_kernel: int, generator: torch.Generator | None = None
    ):
        super().__init__()
        E, N, R = EXPAND * width, state_dim, math.ceil(width / 16)
        self.inner, self.state_dim, self.rank, self.conv_kernel = E, N, R, conv_kernel
        self.ln = nn.LayerNorm(width)
        self.W_in = _uniform((2 * E, width), width**-0.5, generator)
        if conv_kernel:
            self.conv_weight = _uniform((E, conv_kernel), conv_kernel**-0.5, generator)
            self.conv_bias = _uniform((E,), conv_kernel**-0.5, generator)
        self.W_x = _uniform((R + 2 * N, E), E**-0.5, generator)
        self.W_dt = _uniform((E, R), R**-0.5, generator)
        dt = torch.exp(torch.rand(E, generator=generator) * math.log(100) + math.log(1e-3))  # log-U[1e-3, 1e-1]
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))  # [E, N]
        self.D = nn.Parameter(torch.ones(E))
        self.W_out = _uniform((width, E), E**-0.5 / math.sqrt(layers), generator)
        self.hook_delta = HookPoint()  # [B, L, E] step sizes Δ
        self.hook_B = HookPoint()  # [B, L, N]
        self.hook_C = HookPoint()  # [B, L, N]
        self.hook_state = HookPoint()  # [B, E, N] the final state h_L (read-only: editing it changes nothing)
        self.hook_mixer_out = HookPoint()  # [B, L, W] what the block adds to the residual stream
        self.hook_resid_post = HookPoint()  # [B, L, W]

    @property
    def A(self) -> Tensor:
        """[E, N] the (negative) diagonal state matrix."""
        return -torch.exp(self.A_log)

    def _conv(self, x: Tensor) -> Tensor:
        """Causal depthwise convolution over time: x [B, L, E] → [B, L, E] (output t sees inputs t − K + 1 … t)."""
        if not self.conv_kernel:
            return x
        L = x.shape[1]
        out = F.conv1d(
            x.transpose(1, 2),
            self.conv_weight.unsqueeze(1),
            self.conv_bias,
            padding=self.conv_kernel - 1,
            groups=x.shape[-1],
        )  # [B, E, L + K − 1]
        return out[..., :L].transpose(1, 2)  # [B, L, E]

    def forward(self, r: Tensor) -> Tensor:
        """Residual stream r [B, L, W] → [B, L, W]."""
        x, z = (self.ln(r) @ self.W_in.T).chunk(2, dim=-1)  # [B, L, E] each
        x = F.silu(self._conv(x))
        dt_low, B, C = (x @ self.W_x.T).split([self.rank, self.state_dim, self.state_dim], dim=-1)
        delta = self.hook_delta(F.softplus(dt_low @ self.W_dt.T + self.dt_bias))  # [B, L, E]
        B, C = self.hook_B(B), self.hook_C(C)  # [B, L, N]
        decay = torch.exp(delta.unsqueeze(-1) * self.A)  # exp(Δ_t A): [B, L, E, N]
        inp = (delta * x).unsqueeze(-1) * B.unsqueeze(2)  # Δ_t B_t x_t: [B, L, E, N]
        h = (scan_recurrent if self.impl == "naive" else scan_parallel)(decay, inp)  # [B, L, E, N]
        self.hook_state(h[:, -1])
        y = torch.einsum("blen,bln->ble", h, C) + self.D * x  # [B, L, E]
        out = self.hook_mixer_out((y * F.silu(z)) @ self.W_out.T)  # [B, L, W]
        return self.hook_resid_post(r + out)


class SelectiveSSM(ICLModel):
    """Selective state-space model on the interleaved layout (module docstring); a causal Learner.

    Config: layers, width (W), state_dim (N). `conv_kernel` (keyword, default 4; 0 turns the convolution off) is
    not a config field. `predict_prefixes` predicts every prefix in one causal pass; `training_loss` is ½·MSE
    over every prefix (Garg's objective, prefix 0 included); `predict` runs each query after the context as its
    own sequence (so queries never see each other).
    """

    layout = InterleavedLayout()
    predicts_prefixes = True

    def __init__(
        self,
        config: SSMConfig,
        d: int,
        *,
        generator: torch.Generator | None = None,
        conv_kernel: int = CONV_KERNEL,
    ):
        super().__init__()
        generator = seeded_generator(generator)  # never the global RNG
        self.config = config
        self.d = d
        width, tok = config.width, self.layout.width(d)
        self.W_embed = _uniform((width, tok), tok**-0.5, generator)
        self.b_embed = nn.Parameter(torch.zeros(width))
        self.hook_embed = HookPoint()  # [B, L, W]
        self.blocks = nn.ModuleList(
            SSMBlock(width, config.state_dim, config.layers, conv_kernel, generator) for _ in range(config.layers)
        )
        self.ln_final = nn.LayerNorm(width)
        self.W_unembed = _uniform((1, width), width**-0.5, generator)
        self.b_unembed = nn.Parameter(torch.zeros(1))

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [B, L, max(d, 1)] → outputs [B, L, 1]; output t depends on tokens ≤ t only."""
        r = self.hook_embed(tokens @ self.W_embed.T + self.b_embed)  # [B, L, W]
        for block in self.blocks:
            r = block(r)
        return self.ln_final(r) @ self.W_unembed.T + self.b_unembed  # [B, L, 1]

    @shape_checked
    def predict_prefixes(
        self, x: Float[Tensor, "batch T d"], y: Float[Tensor, "batch T *k"]
    ) -> Float[Tensor, "batch T *k"]:
        """x [B, T, d], y [B, T] → [B, T]; prediction t sees x_1..x_t and y_1..y_{t−1} (one pass)."""
        return self.layout.readout(self(self.layout.encode_stream(x, y)))

    @shape_checked
    def predict(
        self,
        x_ctx: Float[Tensor, "batch n_ctx d"],
        y_ctx: Float[Tensor, "batch n_ctx *k"],
        x_q: Float[Tensor, "batch n_q d"],
    ) -> Float[Tensor, "batch n_q *k"]:
        """x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d] → [B, m]: each query's x token after the 2n context tokens.

        The context is run once per query (B·m sequences of 2n + 1 tokens; the hook cache has that batch).
        """
        (B, m, _), n = x_q.shape, x_ctx.shape[1]
        ctx = self.layout.encode_stream(x_ctx, y_ctx)  # [B, 2n, D]
        qry = F.pad(x_q, (0, ctx.shape[-1] - x_q.shape[-1]))  # [B, m, D]
        seqs = torch.cat([ctx.unsqueeze(1).expand(B, m, 2 * n, ctx.shape[-1]), qry.unsqueeze(2)], dim=2)
        out = self(seqs.reshape(B * m, 2 * n + 1, ctx.shape[-1]))  # [B·m, 2n + 1, 1]
        return out[:, -1, 0].reshape(B, m)
