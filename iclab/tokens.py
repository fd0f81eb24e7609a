"""Token layouts: how prompts become token sequences, and how predictions are read back out.

Notation: n context pairs, m queries, T = n + m points, inputs x ∈ R^d, targets y ∈ R (k = None, "scalar") or
y ∈ R^k (vector targets, Prompts.y [B, T, k]); k_out = 1 for scalar targets, else k.

"concat" (von Oswald): token j is [x_j, y_j] ∈ R^{d+k_out}; a query token is [x_q, 0]. The LSA construction
    writes −ŷ into the query's y-slot, so the readout is the *negated* final y-slot(s) of the full output tokens.
"interleaved" (Garg et al.): one stream x_1, y_1, x_2, y_2, … of 2T tokens of width max(d, k_out); the model's
    output head gives k_out values per token and the prediction for point t is read at x_t's token. Meaningful
    only for causal models: x_t's token sees x_1..x_t and y_1..y_{t−1}.
"separate" (von Oswald's induction-head view): x tokens [x_i, 0, pos] and y tokens [0, y_i, pos] of width
    d + k_out + P, then query tokens [x_q, 0, pos]; a softmax first layer can use the positions to copy x_i next
    to y_i, after which LSA layers do GD as on "concat".

Every layout answers `width(d)`, `encode(prompts)`, `encode_parts(x_ctx, y_ctx, x_q)` and
`readout(outputs, n_ctx)`; `make_layout(name, **kw)` builds one by name.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from iclab.config import ConfigError
from iclab.shapes import Float, shape_checked
from iclab.tasks.base import Prompts

__all__ = ["LAYOUTS", "ConcatLayout", "InterleavedLayout", "Layout", "SeparateLayout", "causal_mask", "make_layout"]


class Layout(Protocol):
    """What models and trainers use: tokens = encode(prompts); ŷ = readout(model(tokens), prompts.n_ctx).

    The layout owns where things sit in its token stream: `context_tokens(n)` leading tokens hold the context,
    and `query_positions(n, m)` indexes the m query tokens of `encode_parts` (the tokens readout reads), so
    analyses (probes, variance heads) never re-derive positions.
    """

    name: str
    k: int | None

    def width(self, d: int) -> int: ...
    def encode(self, prompts: Prompts) -> Tensor: ...
    def encode_parts(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor) -> Tensor: ...
    def readout(self, outputs: Tensor, n_ctx: int) -> Tensor: ...
    def context_tokens(self, n_ctx: int) -> int: ...
    def query_positions(self, n_ctx: int, n_q: int) -> slice: ...


def _check_k(k: int | None) -> None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ConfigError(f"layout.k: must be None (scalar targets) or an integer ≥ 1, got {k!r}")


def _as_vector(y: Tensor, k: int | None) -> Tensor:
    """y [B, T] (k None) or [B, T, k] → [B, T, k_out]; a target shape the layout was not built for fails loudly."""
    if k is None and y.dim() == 2:
        return y.unsqueeze(-1)
    if k is not None and y.dim() == 3 and y.shape[-1] == k:
        return y
    want = "[B, T]" if k is None else f"[B, T, {k}]"
    raise ValueError(f"layout built for targets {want} (k={k}), got y of shape {list(y.shape)}")


def _squeeze(pred: Tensor, k: int | None) -> Tensor:
    """[B, m, k_out] → [B, m] for scalar targets, unchanged for vector targets."""
    return pred[..., 0] if k is None else pred


def causal_mask(length: int, device: torch.device | str | None = None) -> Tensor:
    """[length, length] bool, True where row i may attend to column j (j ≤ i): the prefix mask."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


# --- concat ------------------------------------------------------------------------------------------------------
class ConcatLayout:
    """von Oswald's tokens: [B, n + m, d + k_out]; the first n tokens are context (keys/values).

    Context token [x_j, y_j], query token [x_q, 0_{k_out}]. readout(tokens, n_ctx) takes the model's *full output
    tokens* [B, n + m, d + k_out] and returns −(query y-slots): [B, m], or [B, m, k] for vector targets.
    """

    name = "concat"

    def __init__(self, k: int | None = None):
        _check_k(k)
        self.k = k
        if k is not None:
            # readout stays a staticmethod (callers use ConcatLayout.readout(tokens, n_ctx)); a vector instance binds k
            self.readout = partial(ConcatLayout.readout, k=k)  # type: ignore[method-assign]  # per-instance k, on purpose

    def width(self, d: int) -> int:
        return d + (1 if self.k is None else self.k)

    def encode(self, prompts: Prompts) -> Tensor:
        """prompts (x [B, n + m, d], y [B, n + m] or [..., k]) → tokens [B, n + m, d + k_out]."""
        _as_vector(prompts.y, self.k)
        return self.encode_parts(prompts.x_ctx, prompts.y_ctx, prompts.x_q)

    @staticmethod
    @shape_checked
    def encode_parts(
        x_ctx: Float[Tensor, "batch n_ctx d"], y_ctx: Float[Tensor, "batch n_ctx *k"], x_q: Float[Tensor, "batch n_q d"]
    ) -> Float[Tensor, "batch L D"]:
        """x_ctx [B, n, d], y_ctx [B, n] (or [B, n, k]), x_q [B, m, d] → tokens [B, n + m, d + k_out] (query y 0)."""
        y = y_ctx.unsqueeze(-1) if y_ctx.dim() == 2 else y_ctx  # [B, n, k_out]
        ctx = torch.cat([x_ctx, y], dim=-1)  # [B, n, d+k_out]
        qry = torch.cat([x_q, x_q.new_zeros((*x_q.shape[:-1], y.shape[-1]))], dim=-1)  # [B, m, d+k_out]
        return torch.cat([ctx, qry], dim=1)

    @staticmethod
    @shape_checked
    def readout(tokens: Float[Tensor, "batch L D"], n_ctx: int, k: int | None = None) -> Float[Tensor, "batch n_q *k"]:
        """tokens [B, n + m, d + k_out] → predictions [B, m] = −(query y-slot), or [B, m, k] = −(last k slots)."""
        return -tokens[:, n_ctx:, -1] if k is None else -tokens[:, n_ctx:, -k:]

    @staticmethod
    def context_tokens(n_ctx: int) -> int:
        """n: one token per context pair."""
        return n_ctx

    @staticmethod
    def query_positions(n_ctx: int, n_q: int) -> slice:
        """Tokens n … n + m − 1."""
        return slice(n_ctx, n_ctx + n_q)


# --- interleaved -------------------------------------------------------------------------------------------------
class InterleavedLayout:
    """Garg et al.'s stream x_1, y_1, …, x_T, y_T: tokens [B, 2T, D] with D = max(d, k_out).

    x token 2(t−1): [x_t, 0_{D−d}]; y token 2t−1: [y_t, 0_{D−k_out}] (Garg: D = d and [y, 0, …, 0]; iclab widens
    every token to D = k when vector targets have k > d). A causal model sees, at x_t's token, exactly x_1..x_t
    and y_1..y_{t−1}, so one pass predicts every prefix.

    encode(prompts) encodes all T = n + m points with their labels (Garg: every prefix of one stream; the queries
    are the last m points, each seeing the earlier queries *with labels*, as longer prefixes). encode_parts
    (x_ctx, y_ctx, x_q) has no query labels: query y tokens are zero, and `mask(T, n_ctx)` keeps each query from
    seeing the other queries (so the zeros are never seen by a readout position). Both give 2T tokens, so
    readout is the same: outputs [B, 2T, k_out] from the model's output head → predictions at the x tokens
    2t, t = n_ctx, …, T − 1 (0-based): [B, T − n_ctx] (or [..., k]); n_ctx = 0 gives every prefix [B, T].
    """

    name = "interleaved"

    def __init__(self, k: int | None = None):
        _check_k(k)
        self.k = k

    @staticmethod
    def context_tokens(n_ctx: int) -> int:
        """2n: an x and a y token per context pair."""
        return 2 * n_ctx

    @staticmethod
    def query_positions(n_ctx: int, n_q: int) -> slice:
        """The queries' x tokens 2n, 2n + 2, …, 2(n + m − 1)."""
        return slice(2 * n_ctx, 2 * (n_ctx + n_q), 2)

    @property
    def out_dim(self) -> int:
        """k_out: the values per token the model's output head produces."""
        return 1 if self.k is None else self.k

    def width(self, d: int) -> int:
        return max(d, self.out_dim)

    def encode(self, prompts: Prompts) -> Tensor:
        """prompts (x [B, T, d], y [B, T] or [B, T, k]) → tokens [B, 2T, max(d, k_out)], labels of all points."""
        return self.encode_stream(prompts.x, prompts.y)

    def encode_stream(self, x: Tensor, y: Tensor) -> Tensor:
        """x [B, T, d], y [B, T] (or [B, T, k]) → tokens [B, 2T, D]: x_1, y_1, x_2, y_2, …"""
        y = _as_vector(y, self.k)  # [B, T, k_out]
        (b, t, d), width = x.shape, self.width(x.shape[-1])
        x_tok = F.pad(x, (0, width - d))  # [B, T, D]
        y_tok = F.pad(y, (0, width - self.out_dim))  # [B, T, D]
        return torch.stack([x_tok, y_tok], dim=2).reshape(b, 2 * t, width)  # [B, T, 2, D] → [B, 2T, D]

    @shape_checked
    def encode_parts(
        self,
        x_ctx: Float[Tensor, "batch n_ctx d"],
        y_ctx: Float[Tensor, "batch n_ctx *k"],
        x_q: Float[Tensor, "batch n_q d"],
    ) -> Float[Tensor, "batch L D"]:
        """x_ctx [B, n, d], y_ctx [B, n] (or [..., k]), x_q [B, m, d] → tokens [B, 2(n + m), D], query y tokens 0."""
        y_ctx = _as_vector(y_ctx, self.k)  # [B, n, k_out]
        y_q = y_ctx.new_zeros((*x_q.shape[:-1], self.out_dim))  # [B, m, k_out]
        y = torch.cat([y_ctx, y_q], dim=1)  # [B, n+m, k_out]
        return self.encode_stream(torch.cat([x_ctx, x_q], dim=1), _squeeze(y, self.k))

    @shape_checked
    def readout(self, outputs: Float[Tensor, "batch L D"], n_ctx: int = 0) -> Float[Tensor, "batch n_q *k"]:
        """outputs [B, 2T, k_out] → [B, T − n_ctx] (or [B, T − n_ctx, k]): positions 2·n_ctx, 2·n_ctx + 2, …"""
        if outputs.shape[-1] != self.out_dim or outputs.shape[1] % 2:
            raise ValueError(
                f"interleaved readout: outputs must be [B, 2T, {self.out_dim}] (the model's output head), "
                f"got {list(outputs.shape)}"
            )
        return _squeeze(outputs[:, 2 * n_ctx :: 2], self.k)  # [B, T−n_ctx, k_out] → [B, T−n_ctx]

    @staticmethod
    def mask(n_points: int, n_ctx: int | None = None, device: torch.device | str | None = None) -> Tensor:
        """[2T, 2T] bool attention mask, True where a token may attend to another.

        n_ctx None: the causal (prefix) mask. n_ctx given: points t ≥ n_ctx are queries; each query's two tokens
        see the 2·n_ctx context tokens and their own pair only, so queries are predicted independently.
        """
        length = 2 * n_points
        mask = causal_mask(length, device)
        if n_ctx is None:
            return mask
        pos = torch.arange(length, device=device)
        same_pair = pos[:, None] // 2 == pos[None, :] // 2  # [2T, 2T]
        return mask & ((pos[None, :] < 2 * n_ctx) | same_pair)


# --- separate ----------------------------------------------------------------------------------------------------
PositionKind = Literal["sinusoidal", "onehot"]
PositionIndex = Literal["pair", "token"]
ReadoutFrom = Literal["y_slot", "head"]


class SeparateLayout:
    """x and y as separate tokens with positions: [B, 2n + m, d + k_out + P].

    Order x_1, y_1, …, x_n, y_n, x_q1, …, x_qm; the first 2n tokens are context (keys/values, `n_keys`).
    x token [x_i, 0_{k_out}, p(i)], y token [0_d, y_i, p(i)], query token [x_qj, 0_{k_out}, p(n + j)] (i, j from 0).
    Position index ("positions"): "pair" (default) — x_i and y_i share index i, so a softmax head whose query and
    key read the position block attends from y_i to its pair and can copy x_i next to y_i (it attends to y_i
    itself equally, which only adds a scale); queries get n + j. "token" — token t gets index t (x_i: 2i,
    y_i: 2i + 1, query j: 2n + j), as in von Oswald's code.
    Encoding p ∈ R^P ("pos_kind"): "sinusoidal" — p[2f] = sin(t·10000^(−2f/P)), p[2f+1] = cos(…), P even (von
    Oswald's `create_pos_encoding`); "onehot" — p = e_t, needs P ≥ the number of indices. P = 0: no positions.
    Readout at the query tokens 2n, …, 2n + m − 1 ("readout_from"): "y_slot" (default) — outputs are the model's
    full output tokens [B, 2n + m, d + k_out + P] and ŷ = −(query y-slots), the vO/LSA sign convention;
    "head" — outputs [B, 2n + m, k_out] from an output head and ŷ = outputs at the queries. ŷ: [B, m] or [B, m, k].

    von Oswald's code (`create_reg_data_classic_token`, "normal_token_construct" notebook) differs: tokens have
    width d — x token x_i, y token [0_{d−1}, y_i] (y overwrites x's last slot), query x_q, one query, 2n + 1
    tokens — with sinusoidal positions of size 10 over the token index concatenated (concat_pe), a softmax first
    layer and keys/values from all tokens but the query; prediction −(last channel of the query's output), which
    with concatenated positions is a position channel. iclab keeps x and y in disjoint slots and reads the y-slot.
    """

    name = "separate"

    def __init__(
        self,
        k: int | None = None,
        *,
        pos_dim: int = 10,
        pos_kind: PositionKind = "sinusoidal",
        positions: PositionIndex = "pair",
        readout_from: ReadoutFrom = "y_slot",
    ):
        _check_k(k)
        for field, value, allowed in (
            ("pos_kind", pos_kind, ("sinusoidal", "onehot")),
            ("positions", positions, ("pair", "token")),
            ("readout_from", readout_from, ("y_slot", "head")),
        ):
            if value not in allowed:
                raise ConfigError(f"layout.{field}: must be one of {', '.join(allowed)}, got {value!r}")
        if isinstance(pos_dim, bool) or not isinstance(pos_dim, int) or pos_dim < 0:
            raise ConfigError(f"layout.pos_dim: must be an integer ≥ 0, got {pos_dim!r}")
        if pos_kind == "sinusoidal" and pos_dim % 2:
            raise ConfigError(f"layout.pos_dim: sinusoidal positions need an even size, got {pos_dim}")
        self.k = k
        self.pos_dim = pos_dim
        self.pos_kind = pos_kind
        self.positions = positions
        self.readout_from = readout_from

    @property
    def out_dim(self) -> int:
        """k_out: 1 for scalar targets, else k."""
        return 1 if self.k is None else self.k

    def width(self, d: int) -> int:
        return d + self.out_dim + self.pos_dim

    @staticmethod
    def n_keys(n_ctx: int) -> int:
        """Number of leading context tokens (keys/values): 2·n_ctx."""
        return 2 * n_ctx

    context_tokens = n_keys

    @staticmethod
    def query_positions(n_ctx: int, n_q: int) -> slice:
        """Tokens 2n … 2n + m − 1."""
        return slice(2 * n_ctx, 2 * n_ctx + n_q)

    def position_index(self, n_ctx: int, n_q: int, device: torch.device | str | None = None) -> Tensor:
        """[2n + m] long: the position index of every token."""
        if self.positions == "token":
            return torch.arange(2 * n_ctx + n_q, device=device)
        pairs = torch.arange(n_ctx, device=device).repeat_interleave(2)  # [2n]: 0, 0, 1, 1, …
        return torch.cat([pairs, torch.arange(n_ctx, n_ctx + n_q, device=device)])

    def n_indices(self, n_ctx: int, n_q: int) -> int:
        """How many distinct position indices `position_index(n_ctx, n_q)` uses (host arithmetic)."""
        return 2 * n_ctx + n_q if self.positions == "token" else n_ctx + n_q

    def encoding(self, index: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """index [L] long → positional encodings [L, P]."""
        if self.pos_kind == "onehot":  # the callers check the index count on the host (`n_indices`): no sync here
            return F.one_hot(index, self.pos_dim).to(dtype)
        even = torch.arange(0, self.pos_dim, 2, device=index.device, dtype=torch.float64)  # 2f
        freq = torch.exp(even * (-math.log(10000.0) / self.pos_dim))  # [P/2]: 10000^(−2f/P)
        angle = index[:, None].to(torch.float64) * freq[None, :]  # [L, P/2]
        # interleave sin/cos: [L, P/2, 2] → [L, P]
        return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(len(index), self.pos_dim).to(dtype)

    def encode(self, prompts: Prompts) -> Tensor:
        """prompts (x [B, n + m, d], y [B, n + m] or [..., k]) → tokens [B, 2n + m, d + k_out + P]."""
        _as_vector(prompts.y, self.k)
        return self.encode_parts(prompts.x_ctx, prompts.y_ctx, prompts.x_q)

    @shape_checked
    def encode_parts(
        self,
        x_ctx: Float[Tensor, "batch n_ctx d"],
        y_ctx: Float[Tensor, "batch n_ctx *k"],
        x_q: Float[Tensor, "batch n_q d"],
    ) -> Float[Tensor, "batch L D"]:
        """x_ctx [B, n, d], y_ctx [B, n] (or [..., k]), x_q [B, m, d] → tokens [B, 2n + m, d + k_out + P]."""
        y_ctx = _as_vector(y_ctx, self.k)  # [B, n, k_out]
        (b, n, d), m = x_ctx.shape, x_q.shape[1]
        x_tok = F.pad(x_ctx, (0, self.out_dim))  # [B, n, d+k_out]: [x_i, 0]
        y_tok = F.pad(y_ctx, (d, 0))  # [B, n, d+k_out]: [0, y_i]
        ctx = torch.stack([x_tok, y_tok], dim=2).reshape(b, 2 * n, d + self.out_dim)  # [B, n, 2, ·] → [B, 2n, ·]
        seq = torch.cat([ctx, F.pad(x_q, (0, self.out_dim))], dim=1)  # [B, 2n+m, d+k_out]
        if self.pos_kind == "onehot" and self.n_indices(n, m) > self.pos_dim:
            raise ValueError(
                f"separate layout: one-hot positions need pos_dim ≥ {self.n_indices(n, m)}, got {self.pos_dim}"
            )
        pos = self.encoding(self.position_index(n, m, x_ctx.device), x_ctx.dtype)  # [2n+m, P]
        return torch.cat([seq, pos.expand(b, -1, -1)], dim=-1)  # [B, 2n+m, d+k_out+P]

    @shape_checked
    def readout(self, outputs: Float[Tensor, "batch L D"], n_ctx: int) -> Float[Tensor, "batch n_q *k"]:
        """outputs at the query tokens → [B, m] (or [B, m, k]); see the class docstring for the two conventions."""
        qry = outputs[:, 2 * n_ctx :]  # [B, m, ·]
        if self.readout_from == "head":
            if outputs.shape[-1] != self.out_dim:
                raise ValueError(
                    f"separate readout (head): outputs must be [B, L, {self.out_dim}], got {list(outputs.shape)}"
                )
            return _squeeze(qry, self.k)
        d = outputs.shape[-1] - self.out_dim - self.pos_dim  # y-slots sit at [d, d + k_out)
        if d < 1:
            raise ValueError(
                f"separate readout (y_slot): outputs must be full tokens [B, L, d + {self.out_dim + self.pos_dim}], "
                f"got {list(outputs.shape)}"
            )
        return _squeeze(-qry[..., d : d + self.out_dim], self.k)


# --- registry ----------------------------------------------------------------------------------------------------
LAYOUTS: dict[str, type] = {"concat": ConcatLayout, "interleaved": InterleavedLayout, "separate": SeparateLayout}


def make_layout(name: str, **kwargs) -> Layout:
    """The layout called `name`, built with `kwargs` (k for vector targets; SeparateLayout's position options)."""
    if name not in LAYOUTS:
        raise ConfigError(f"layout: unknown value {name!r}; choose one of: {', '.join(LAYOUTS)}")
    return LAYOUTS[name](**kwargs)
