"""The contract every sequence model keeps: a Learner that also defines its own training loss.

A model answers, like every algorithm (iclab.algorithms.base):
    predict(x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d]) -> [B, m]
    predict_prefixes(x [B, T, d], y [B, T]) -> [B, T]          (optional: causal models predict every prefix at once)
and for the trainer:
    training_loss(prompts) -> scalar tensor                   (default: ½·MSE at the queries, von Oswald's loss;
                                                               causal models with predict_prefixes: ½·MSE over
                                                               every prefix, Garg's loss; class labels:
                                                               cross-entropy at the queries)
    loss_name                                                 ("half_mse", "half_mse_all_prefixes", "nll",
                                                               "cross_entropy")

Class labels (docs/families.md "Class-label targets"): a family whose config declares `label_targets` can be built
with `n_labels = L` (`make_model(..., n_labels=L)`); such a model takes y as label indices [B, n] (long) and its
`predict` / `predict_prompts` return logits [B, m, L] (not labels: the loss needs them, and argmax gives the label;
the reference learners of iclab.algorithms.icl_classification return indices [B, m], and
`iclab.metrics.accuracy` scores both alike). `n_labels` is None for a model of real targets.
The trainer never branches on the kind of model: it calls `training_loss`, and evaluates `predict_prompts`.

Fast and naive paths: one switch, `impl: Literal["fast", "naive"]`. Every block with two implementations of the
same math carries a class attribute `impl = "fast"` (lsa.LSABlock: Gram form / written-out attention;
softmax.SoftmaxAttentionLayer and gpt.Attention: scaled_dot_product_attention / softmax written out; lla.LLABlock:
one batched solve / a least-squares solve per query; ssm.SSMBlock: associative scan / loop over time), and
`model.set_impl("naive")` sets it on every such block of a model (wrappers and sub-models included). "naive" is
the plain eager reference, in the spirit of flash-linear-attention's `naive.py`: the definition written out,
slow, used by tests and `iclab bench`. Why this name and form: one keyword for every family replaces three
(`fast`, `naive`, `parallel`, two of them booleans of opposite sense); a string, not a bool, says which path runs
and leaves room for a third implementation; and a per-block class attribute keeps the model constructors as they
are. Observing a hook that only the naive path computes (attention q/k/v/pattern in lsa, the pattern in softmax
and gpt) switches that block to the naive path for that call, whatever `impl` says; outputs are equal.

Weight convention (docs/weights.md): one for every attention model (lsa, softmax, gpt, lsa_features, separate,
lla), the column-vector one of von Oswald et al. and He et al., in which iclab's constructions, weight matches and
circuit statistics are written. Tokens are columns e ∈ R^D; per head h, `model.layer_weights(layer)` (an
`AttentionWeights`) answers, read-only,
    KQ [H, D, D]   score(key i, query j) = scale · e_iᵀ KQ_h e_j
    OV [H, D, D]   head h adds OV_h e_i times the attention it pays key i (LSA: times the raw score)
    scale          the score factor: 1 (lsa, He's softmax), 1/√D (separate's copy layer, lla's kernel), 1/√d_head (gpt)
and every layer names its factors W_Q, W_K, W_V, W_O (LSA's P is W_O; checkpoints that call it P still load).
For the concat models (column factors: W_Q, W_K, W_V [H, d_head, D], W_O [H, D, d_head]) KQ = W_Kᵀ W_Q and
OV = W_O W_V. TransformerLens's row-vector products are the transposes: W_QK = KQᵀ, W_OV = OVᵀ; the gpt stores its
factors the TransformerLens way (W_Q [H, d_model, d_head], W_O [H, d_head, d_model]) and answers KQ and OV in
this convention all the same, so analyses read every model alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import Tensor

from iclab.metrics import cross_entropy, half_mse
from iclab.models.hooks import HookedModule
from iclab.shapes import Float, shape_checked
from iclab.tasks.base import Prompts

if TYPE_CHECKING:
    from iclab.config import ModelConfig
    from iclab.tokens import Layout

__all__ = ["IMPLS", "AttentionWeights", "ICLModel", "Impl", "seeded_generator", "set_impl"]

Impl = Literal["fast", "naive"]
IMPLS: tuple[Impl, ...] = ("fast", "naive")


def seeded_generator(generator: torch.Generator | None) -> torch.Generator:
    """`generator`, or a fresh CPU generator seeded 0 when None: a model built without one is reproducible and
    never draws from (or advances) the global RNG (docs/conventions.md §6: every draw takes an explicit generator)."""
    return generator if generator is not None else torch.Generator().manual_seed(0)


class AttentionWeights:
    """Mixin of one attention layer's weights: the read-only circuits KQ and OV (module docstring).

    The defaults read column-vector factors W_Q, W_K, W_V [H, d_head, D] and W_O [H, D, d_head]; a layer that
    stores its factors otherwise (gpt.Attention) overrides `KQ` and `OV`.
    """

    scale: float = 1.0  # score(key i, query j) = scale · e_iᵀ KQ_h e_j

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the one weight convention call W_O by von Oswald's name, P (lsa, lla)
        if prefix + "P" in state_dict and prefix + "W_O" not in state_dict:
            state_dict[prefix + "W_O"] = state_dict.pop(prefix + "P")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[misc]

    W_Q: Tensor  # the factors: parameters registered by the layer (or views of them, gpt.Attention)
    W_K: Tensor
    W_V: Tensor
    W_O: Tensor

    @property
    def KQ(self) -> Tensor:
        """[H, D, D]: score(key i, query j) = scale · e_iᵀ KQ_h e_j."""
        return self.W_K.transpose(-1, -2) @ self.W_Q

    @property
    def OV(self) -> Tensor:
        """[H, D, D]: head h adds OV_h e_i times the attention (LSA: the score) it pays key i."""
        return self.W_O @ self.W_V


def set_impl(module: torch.nn.Module, impl: Impl) -> int:
    """Set `impl` ("fast" or "naive") on every block of `module` that has both paths; returns how many."""
    if impl not in IMPLS:
        raise ValueError(f"impl: choose one of {', '.join(IMPLS)}, got {impl!r}")
    blocks = [m for m in module.modules() if isinstance(getattr(type(m), "impl", None), str)]
    for m in blocks:
        m.impl = impl  # type: ignore[assignment]  # nn.Module.__setattr__'s stub admits only Tensor | Module values
    return len(blocks)


class ICLModel(HookedModule):
    """Base class of iclab's models (hook points, `run_with_cache`, the Learner and training contract).

    Declared capabilities (iclab.algorithms.base): `predicts_prefixes` — causal models (gpt, ssm) predict every
    prefix in one pass and train on all of them; `takes_mask` — predict accepts a context mask (lla).
    """

    takes_mask: ClassVar[bool] = False
    predicts_prefixes: ClassVar[bool] = False
    batched_members: ClassVar[bool] = False
    """the family writes out `members_training_loss` (iclab.training.ensemble uses it instead of vmap)"""
    members: int = 1
    """E > 1: E independent members stacked on every parameter's leading dimension (iclab.training.trainer)"""
    n_labels: int | None = None
    """L: the model reads label indices and predicts L logits per query (None: real targets)"""
    config: ModelConfig  # set by every family's constructor (its own ModelConfig subclass)
    d: int  # input dimension, set by every family's constructor
    layout: Layout  # how prompts become tokens (a class attribute, or set by the constructor)

    def set_impl(self, impl: Impl) -> ICLModel:
        """Run every block with two implementations on its "fast" or its "naive" path (module docstring)."""
        set_impl(self, impl)
        return self

    @property
    def loss_name(self) -> str:
        """What `training_loss` measures (the trainer logs it as train_<loss_name>)."""
        if self.n_labels is not None:
            return "cross_entropy"
        return "half_mse_all_prefixes" if self.predicts_prefixes else "half_mse"

    @property
    def name(self) -> str:
        return self.config.name

    @shape_checked
    def predict(
        self,
        x_ctx: Float[Tensor, "batch n_ctx d"],
        y_ctx: Float[Tensor, "batch n_ctx *k"],
        x_q: Float[Tensor, "batch n_q d"],
    ) -> Float[Tensor, "batch n_q *k"]:
        """x_ctx [B, n, d], y_ctx [B, n], x_q [B, m, d] → predictions [B, m]."""
        raise NotImplementedError

    @shape_checked
    def predict_prefixes(
        self, x: Float[Tensor, "batch T d"], y: Float[Tensor, "batch T *k"]
    ) -> Float[Tensor, "batch T *k"]:
        """x [B, T, d], y [B, T] → [B, T], prediction t from points < t (models that declare `predicts_prefixes`)."""
        raise NotImplementedError(f"model {self.name!r} does not predict prefixes in one pass")

    def members_training_loss(self, params: Mapping[str, Tensor], prompts: Prompts) -> Tensor:
        """[E] training losses of E models of this family and shape at once, for families that declare
        `batched_members`: `params` maps `named_parameters` names to the E members' values stacked [E, …];
        prompts hold E·B rows, member e's batch in rows e·B … (e + 1)·B − 1."""
        raise NotImplementedError(f"model {self.name!r} has no batched form for ensembles (it uses vmap)")

    @shape_checked
    def predict_prompts(self, prompts: Prompts) -> Float[Tensor, "batch n_q *k"]:
        """[B, n_queries] predictions for the prompts' queries."""
        return self.predict(prompts.x_ctx, prompts.y_ctx, prompts.x_q)

    @shape_checked
    def training_loss(self, prompts: Prompts) -> Float[Tensor, ""]:
        """Scalar loss of one training batch: ½·mean squared error at the queries, or, for models that predict
        every prefix in one causal pass (`predict_prefixes`), over the prediction of every point of the prompt
        (iclab.metrics.half_mse: summed over the outputs of vector targets, averaged over prompts and queries).
        Class labels (`n_labels` L): cross-entropy of the query logits [B, m, L] against y_q [B, m], averaged over
        prompts and queries (Reddy's loss: the query only, not every prefix)."""
        if self.n_labels is not None:
            return cross_entropy(self.predict_prompts(prompts), prompts.y_q)
        if self.predicts_prefixes:
            return half_mse(self.predict_prefixes(prompts.x, prompts.y), prompts.y)
        return half_mse(self.predict_prompts(prompts), prompts.y_q)
