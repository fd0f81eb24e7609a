"""In-context classification with bursty, Zipfian item distributions (Reddy 2023; Chan et al. 2022; docs/papers.md §8).

The world (drawn once from `class_seed`, on the CPU in float64, so it is the same on every device and dtype):
K classes with centroids μ_k ~ N(0, I_D/D), and a label ℓ(k) ∈ {0, …, L−1} per class, balanced: a random
permutation of k ↦ k mod L, so each label holds ⌊K/L⌋ or ⌈K/L⌉ classes (Reddy 2023 §2: K classes assigned to
L ≤ K labels). An item of class k is

    x = (μ_k + ε η) / √(1 + ε²),   η ~ N(0, I_D/D)      (E|x|² = 1; ε = within_class_noise)

so that |x − μ_k/√(1+ε²)|² = ε²|η|²/(1+ε²) has mean ε²/(1+ε²) and variance (ε²/(1+ε²))²·2/D.

A prompt holds N = n_points item–label pairs and n_queries query items. Class k has probability p_k ∝ k^(−α)
(rank–frequency, Zipf exponent α = zipf_alpha; α = 0 is uniform). A fraction p_bursty of the prompts are
*bursty*: N/B distinct classes drawn from p without replacement (successive sampling: each from p renormalised
over the classes not yet drawn), each appearing exactly B = burstiness times at random positions, and each query
from one of those N/B classes (uniformly), so the context always holds the query's class (Chan et al. 2022's
burstiness; Reddy's "at least one item belongs to the same class as the target"). The other prompts draw every
item's and every query's class i.i.d. from p. (Successive sampling makes the classes of bursty prompts less
skewed than p when α > 0; the query's class of i.i.d. prompts follows p exactly.)

Representation (iclab.prompts): x [B, T, D] float items; y [B, T] **long label indices** < L with
`Prompts.y_vocab = L`, query labels included (`y_q`). A model consumes a label either through its own embedding
table (nn.Embedding(L, width), the usual choice: labels are symbols, not numbers, so they must never be fed as a
float scalar) or as Reddy's fixed random label vectors `label_vectors()` [L, D] (N(0, I_D/D), drawn from
class_seed + 1), and predicts L logits per query, trained with cross-entropy against y_q. Integer labels keep
their dtype through `Prompts.to`, and an index is what cross-entropy, accuracy and the label permutations need.
`params` carries, per prompt: "classes" [B, T] long (the class of every item; novel classes are numbered K, K+1,
… within their prompt) and "bursty" [B] bool. `f` is None (there is no noiseless real target).

Evaluation splits that separate the two strategies (Reddy 2023 Fig. 1b; each returns Prompts):
  `icl_novel`     in-context: bursty prompts of N/B *novel* classes (fresh centroids per prompt) with distinct
                  random labels; only the context can say the answer.
  `icl_permuted`  in-context: bursty prompts of trained classes whose labels go through one uniformly random
                  permutation of the L labels per prompt; the memorised label is right only by chance (1/L).
  `iwl`           in-weights: items and queries of trained classes from p, the query's class absent from the
                  context; copying a context label is right only when another class shares the label:
                  probability (K/L − 1)/(K − 1) ≈ 1/L over the label assignment when L divides K.
`sample` draws the training distribution; with p_novel > 0 (Reddy's p_C) that fraction of the training prompts
is drawn as `icl_novel` prompts, which only the context can answer (Reddy's novel classes come from a fixed set
of K_c = 128 extra centroids with labels drawn per sequence; here each such prompt has fresh centroids).
The reference learners (ideal induction head, class-mean lookup,
chance) are in `iclab.algorithms.icl_classification`.

Settings and their sources (defaults of the config): D = 63, N = 8, L = 32, ε = 0.1, α = 0, p_bursty = 1 are
Reddy 2023's base setting (§2 and Fig. 1; D = 63 leaves 65 of the 128 input dimensions to his one-hot positions);
K = 512 and B = 2 are Fig. 1d's (K = 2^7 … 2^16 and B ∈ {0, 1, 2, 4} are swept in Figs. 2–3, α ∈ [0, 1]); μ_k and η
~ N(0, I_D/D) and the item formula are the issue text's statement of Reddy's §2. Chan et al. 2022 (Omniglot) use
p_bursty = 0.9, bursty prompts of 3 classes, and α = 0 … 1 (their Zipf exponent on class frequencies). Reddy's
B = 0 ("no burstiness") is p_bursty = 0 here. The D, N, L, ε values were recalled from the paper, not re-read
from it in this session (its text was not in the searchable corpus): check them against §2 before a reproduction.

Ignored shared fields: x_dist, x_scale, x_cov_diag, x_condition, w_scale, noise_var (the items have their own
distribution, and ε is the noise); the finite task pool does not apply (pool_size must be 0: K is the pool).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from iclab.config import TaskConfig
from iclab.prompts import Prompts
from iclab.tasks.base import Draw, Task
from iclab.validation import check_int, check_real, fail

__all__ = [
    "SPLITS",
    "ICLClassificationConfig",
    "ICLClassificationTask",
    "ICLPrompts",
    "sample_excluding",
    "successive_sample",
    "zipf_probs",
]


@dataclass(frozen=True)
class ICLClassificationConfig(TaskConfig):
    """Reddy's in-context classification task (`ICLClassificationTask`); defaults are Reddy 2023's (module
    docstring and docs/families.md give the sources)."""

    name: ClassVar[str] = "icl_classification"
    iid_inputs: ClassVar[bool] = False  # bursty prompts are not i.i.d. points: the family cannot be mixed

    d: int = 63
    """item dimension D"""
    n_points: int = 8
    """item–label pairs per prompt (N)"""
    n_classes: int = 512
    """number of classes K"""
    n_labels: int = 32
    """number of labels L (<= K)"""
    within_class_noise: float = 0.1
    """within-class noise ε: x = (μ_k + εη)/√(1 + ε²)"""
    burstiness: int = 2
    """B: items of each context class in a bursty prompt (divides N)"""
    p_bursty: float = 1.0
    """fraction of bursty prompts (the rest draw every class i.i.d.)"""
    zipf_alpha: float = 0.0
    """rank–frequency exponent α: p_k ∝ k^(−α) (0: uniform)"""
    p_novel: float = 0.0
    """fraction of training prompts of novel classes, as the icl split draws them (Reddy's p_C)"""
    class_seed: int = 0
    """seed of the class centroids, the label assignment and the label vectors"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("task.n_labels", self.n_labels, 2)
        check_int("task.n_classes", self.n_classes, self.n_labels)
        check_real("task.within_class_noise", self.within_class_noise, low=0.0)
        check_int("task.burstiness", self.burstiness, 1)
        if self.n_points % self.burstiness:
            fail("task.burstiness", f"a divisor of task.n_points = {self.n_points}", self.burstiness)
        if self.n_points // self.burstiness > self.n_labels:  # the novel split gives its classes distinct labels
            fail("task.burstiness", f">= n_points / n_labels = {self.n_points / self.n_labels:g}", self.burstiness)
        check_real("task.p_bursty", self.p_bursty, low=0.0)
        if self.p_bursty > 1:
            fail("task.p_bursty", "a fraction in [0, 1]", self.p_bursty)
        check_real("task.zipf_alpha", self.zipf_alpha, low=0.0)
        check_real("task.p_novel", self.p_novel, low=0.0)
        if self.p_novel > 1:
            fail("task.p_novel", "a fraction in [0, 1]", self.p_novel)
        check_int("task.class_seed", self.class_seed, 0)
        if self.pool_size != 0:
            fail("task.pool_size", "0 (the K classes are this family's pool)", self.pool_size)

    @property
    def label_vocab(self) -> int:
        """L: targets are label indices < L (models output L logits; iclab.config.TaskConfig.label_vocab)."""
        return self.n_labels

    @property
    def n_context_classes(self) -> int:
        """N/B: classes in the context of a bursty prompt."""
        return self.n_points // self.burstiness


class ICLPrompts(Prompts):
    """Prompts of this family: `classes` [B, T] and `bursty` [B] views of params."""

    @property
    def classes(self) -> Tensor:
        assert self.params is not None
        return self.params["classes"]

    @property
    def bursty(self) -> Tensor:
        assert self.params is not None
        return self.params["bursty"]


def _make_prompts(x: Tensor, y: Tensor, n_ctx: int, classes: Tensor, bursty: Tensor, n_labels: int) -> ICLPrompts:
    return ICLPrompts(x=x, y=y, n_ctx=n_ctx, params={"classes": classes, "bursty": bursty}, y_vocab=n_labels)


def zipf_probs(n: int, alpha: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """[n] rank–frequency probabilities p_k ∝ k^(−α), k = 1 … n (index 0 is rank 1)."""
    p = torch.arange(1, n + 1, dtype=torch.float64).pow(-alpha)
    return (p / p.sum()).to(dtype)


def sample_excluding(p: Tensor, exclude: Tensor, n: int, *, generator: torch.Generator) -> Tensor:
    """[B, n] long: indices i.i.d. from the distribution p [K] conditioned on avoiding the j distinct indices of
    exclude [B, j] (j may be 0). Exact and O(B·n·j): the inverse CDF of p with the excluded intervals cut out —
    u ~ U(0, 1 − Σ p_excluded), then, over the excluded indices in ascending order, u skips each one's interval."""
    cdf = p.cumsum(0)  # [K]
    B, K = exclude.shape[0], p.shape[0]
    excl = exclude.sort(-1).values  # [B, j]
    p_ex = p[excl]  # [B, j]
    u = torch.rand((B, n), generator=generator, device=p.device, dtype=p.dtype) * (1 - p_ex.sum(-1, keepdim=True))
    for i in range(excl.shape[1]):
        lo = (cdf[excl[:, i]] - p_ex[:, i]).unsqueeze(1)  # [B, 1] where the excluded interval starts
        u = torch.where(u >= lo, u + p_ex[:, i : i + 1], u)
    return torch.searchsorted(cdf, u, right=True).clamp_max(K - 1)


def successive_sample(p: Tensor, batch: int, k: int, *, generator: torch.Generator) -> Tensor:
    """[batch, k] long: k distinct indices per row, drawn one after another from p [K] renormalised over the
    indices not yet drawn (sampling without replacement, "successive sampling")."""
    chosen = torch.empty((batch, 0), dtype=torch.long, device=p.device)
    for _ in range(k):
        chosen = torch.cat([chosen, sample_excluding(p, chosen, 1, generator=generator)], dim=1)
    return chosen


class ICLClassificationTask(Task[ICLClassificationConfig]):
    """Reddy's in-context classification task (module docstring): `sample` (training prompts), `icl_novel`,
    `icl_permuted`, `iwl` (evaluation splits), and the world: `class_centres`, `class_labels`, `label_vectors`."""

    # --- the world, drawn once ----------------------------------------------------------------------------------
    def _world(self) -> dict[str, Tensor]:
        def draw() -> dict[str, Tensor]:
            c = self.config
            gen = torch.Generator().manual_seed(c.class_seed)
            mu = torch.randn((c.n_classes, c.d), generator=gen, dtype=torch.float64) / math.sqrt(c.d)  # [K, D]
            labels = torch.randperm(c.n_classes, generator=gen) % c.n_labels  # [K], balanced
            gen_l = torch.Generator().manual_seed(c.class_seed + 1)  # label vectors apart: K does not shift them
            lv = torch.randn((c.n_labels, c.d), generator=gen_l, dtype=torch.float64) / math.sqrt(c.d)  # [L, D]
            return {"mu": mu, "labels": labels, "label_vectors": lv}

        return self._cached(("world",), draw)

    def _on(self, key: str, device: torch.device, dtype: torch.dtype | None = None) -> Tensor:
        t = self._world()[key]
        return self._cached((key, device, dtype), lambda: t.to(device=device, dtype=dtype))

    def class_means(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> Tensor:
        """[K, D] the centroids μ_k."""
        return self._on("mu", torch.device(device), dtype)

    def class_centres(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> Tensor:
        """[K, D] E[x | class k] = μ_k/√(1 + ε²): what an in-weights classifier compares items with."""
        return self.class_means(device, dtype) / math.sqrt(1 + self.config.within_class_noise**2)

    def class_labels(self, device: torch.device | str = "cpu") -> Tensor:
        """[K] long: the label ℓ(k) of each class."""
        return self._on("labels", torch.device(device))

    def label_vectors(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> Tensor:
        """[L, D] Reddy's fixed random label vectors, N(0, I_D/D): one way for a model to embed labels."""
        return self._on("label_vectors", torch.device(device), dtype)

    def class_probs(self, device: torch.device | str = "cpu") -> Tensor:
        """[K] float64 rank–frequency probabilities p_k ∝ k^(−α)."""
        c = self.config
        return self._cached(("p", torch.device(device)), lambda: zipf_probs(c.n_classes, c.zipf_alpha).to(device))

    # --- pieces of a prompt --------------------------------------------------------------------------------------
    def items(self, means: Tensor, *, generator: torch.Generator) -> Tensor:
        """Items x = (μ + εη)/√(1 + ε²) of the given centroids means [..., D] (one fresh η each) → [..., D]."""
        eps = self.config.within_class_noise
        eta = torch.randn(means.shape, generator=generator, device=means.device, dtype=means.dtype)
        return (means + eps * eta / math.sqrt(self.d)) / math.sqrt(1 + eps**2)

    def iid_classes(self, batch: int, n: int, *, generator: torch.Generator, device: torch.device) -> Tensor:
        """[batch, n] classes i.i.d. from p (inverse CDF)."""
        none = torch.empty((batch, 0), dtype=torch.long, device=device)
        return sample_excluding(self.class_probs(device), none, n, generator=generator)

    def iid_classes_except(self, exclude: Tensor, n: int, *, generator: torch.Generator) -> Tensor:
        """[B, n] classes i.i.d. from p conditioned on differing from exclude [B] (`sample_excluding`)."""
        p = self.class_probs(exclude.device)
        return sample_excluding(p, exclude.unsqueeze(1), n, generator=generator)

    def bursty_layout(self, batch: int, *, generator: torch.Generator, device: torch.device) -> Tensor:
        """[batch, N + m] long slot indices in {0, …, N/B − 1}: context slot j appears exactly B times at random
        positions, and each query is a uniformly random one of the N/B slots."""
        c = self.config
        n_cls = c.n_context_classes
        ctx = torch.arange(n_cls, device=device).repeat_interleave(c.burstiness)  # [N]
        order = torch.rand((batch, c.n_points), generator=generator, device=device).argsort(-1)  # [B, N]
        q = torch.randint(n_cls, (batch, c.n_queries), generator=generator, device=device)  # [B, m]
        return torch.cat([ctx[order], q], dim=1)

    def bursty_classes(self, batch: int, *, generator: torch.Generator, device: torch.device) -> Tensor:
        """[batch, N + m] classes of bursty prompts: N/B distinct classes drawn from p by successive sampling."""
        c = self.config
        chosen = successive_sample(self.class_probs(device), batch, c.n_context_classes, generator=generator)
        return chosen.gather(1, self.bursty_layout(batch, generator=generator, device=device))

    def _prompts(self, x: Tensor, y: Tensor, classes: Tensor, bursty: Tensor) -> ICLPrompts:
        return _make_prompts(x, y, self.config.n_points, classes, bursty, self.config.n_labels)

    # --- the training distribution -------------------------------------------------------------------------------
    def draw(self, batch: int, n: int, how: Draw) -> ICLPrompts:
        """`batch` training prompts: a fraction p_bursty bursty, the rest i.i.d. (module docstring)."""
        generator, device, dtype, d_active = how
        c = self.config
        if n != c.n_points:
            raise ValueError(f"n_points: {c.name} prompts have task.n_points = {c.n_points} pairs, got {n}")
        if d_active is not None:
            raise ValueError(f"d_active: {c.name} has no input curriculum")
        T = c.n_points + c.n_queries
        bursty = torch.rand(batch, generator=generator, device=device) < c.p_bursty  # [B]
        classes = self.iid_classes(batch, T, generator=generator, device=device)  # [B, T]
        if c.p_bursty > 0:
            classes = torch.where(
                bursty.unsqueeze(1), self.bursty_classes(batch, generator=generator, device=device), classes
            )
        prompts = self.labelled(classes, bursty, generator=generator, dtype=dtype)
        if c.p_novel > 0:  # Reddy's p_C: these prompts only the context can answer
            novel = torch.rand(batch, generator=generator, device=device) < c.p_novel  # [B]
            fresh = self.icl_novel(batch, generator=generator, device=device, dtype=dtype)
            pick = lambda a, b: torch.where(novel.view(-1, *[1] * (a.dim() - 1)), a, b)  # noqa: E731
            prompts = self._prompts(
                pick(fresh.x, prompts.x),
                pick(fresh.y, prompts.y),
                pick(fresh.classes, prompts.classes),
                pick(fresh.bursty, prompts.bursty),
            )
        return prompts

    def labelled(
        self, classes: Tensor, bursty: Tensor, *, generator: torch.Generator, dtype: torch.dtype
    ) -> ICLPrompts:
        """Prompts of trained classes [B, T] (fresh items, their own labels)."""
        device = classes.device
        x = self.items(self.class_means(device, dtype)[classes], generator=generator)  # [B, T, D]
        y = self.class_labels(device)[classes]  # [B, T]
        return self._prompts(x, y, classes, bursty)

    # --- evaluation splits ----------------------------------------------------------------------------------------
    def icl_novel(
        self, batch: int, *, generator: torch.Generator, device: torch.device | str | None = None, dtype=torch.float32
    ) -> ICLPrompts:
        """In-context split: bursty prompts of N/B novel classes (centroids ~ N(0, I_D/D) fresh per prompt, class
        ids K, K+1, …) with distinct uniformly random labels."""
        c = self.config
        device = generator.device if device is None else torch.device(device)
        n_cls = c.n_context_classes
        mu = torch.randn((batch, n_cls, c.d), generator=generator, device=device, dtype=dtype) / math.sqrt(c.d)
        labels = torch.rand((batch, c.n_labels), generator=generator, device=device).argsort(-1)[:, :n_cls]  # [B, N/B]
        slots = self.bursty_layout(batch, generator=generator, device=device)  # [B, T]
        x = self.items(mu.gather(1, slots.unsqueeze(-1).expand(-1, -1, c.d)), generator=generator)  # [B, T, D]
        y = labels.gather(1, slots)  # [B, T]
        bursty = torch.ones(batch, dtype=torch.bool, device=device)
        return self._prompts(x, y, slots + c.n_classes, bursty)

    def icl_permuted(
        self, batch: int, *, generator: torch.Generator, device: torch.device | str | None = None, dtype=torch.float32
    ) -> ICLPrompts:
        """In-context split: bursty prompts of trained classes, labels mapped through one uniformly random
        permutation of the L labels per prompt (the same class keeps one label within its prompt)."""
        c = self.config
        device = generator.device if device is None else torch.device(device)
        classes = self.bursty_classes(batch, generator=generator, device=device)  # [B, T]
        prompts = self.labelled(
            classes, torch.ones(batch, dtype=torch.bool, device=device), generator=generator, dtype=dtype
        )
        perm = torch.rand((batch, c.n_labels), generator=generator, device=device).argsort(-1)  # [B, L]
        return self._prompts(prompts.x, perm.gather(1, prompts.y), classes, prompts.bursty)

    def iwl(
        self, batch: int, *, generator: torch.Generator, device: torch.device | str | None = None, dtype=torch.float32
    ) -> ICLPrompts:
        """In-weights split: queries' classes i.i.d. from p, context classes i.i.d. from p given that they differ
        from the (first) query's class; every query of a prompt has the first query's class."""
        c = self.config
        device = generator.device if device is None else torch.device(device)
        q = self.iid_classes(batch, 1, generator=generator, device=device).squeeze(1)  # [B]
        ctx = self.iid_classes_except(q, c.n_points, generator=generator)  # [B, N]
        classes = torch.cat([ctx, q.unsqueeze(1).expand(batch, c.n_queries)], dim=1)  # [B, T]
        return self.labelled(
            classes, torch.zeros(batch, dtype=torch.bool, device=device), generator=generator, dtype=dtype
        )

    def split(self, name: str, batch: int, *, generator: torch.Generator, **kw) -> ICLPrompts:
        """The prompts of split `name` (one of SPLITS: train, icl_novel, icl_permuted, iwl)."""
        if name == "train":
            prompts = self.sample(batch, generator=generator, **kw)
            assert isinstance(prompts, ICLPrompts)  # `draw` makes them
            return prompts
        if name not in SPLITS:
            raise ValueError(f"split: unknown {name!r}; choose one of: {', '.join(SPLITS)}")
        return getattr(self, name)(batch, generator=generator, **kw)

    def eval_sets(self, n: int, *, generator: torch.Generator) -> dict[str, Prompts]:
        """The held-out sets (`Task.eval_sets`): "eval" (the training distribution), "icl" (`icl_novel`),
        "icl_permuted" and "iwl", n prompts each in float64; the trainer logs eval_cross_entropy, eval_accuracy,
        icl_accuracy, icl_permuted_accuracy, iwl_accuracy (and each set's cross-entropy)."""
        f64 = torch.float64
        return {
            "eval": self.sample(n, generator=generator, dtype=f64),
            "icl": self.icl_novel(n, generator=generator, dtype=f64),
            "icl_permuted": self.icl_permuted(n, generator=generator, dtype=f64),
            "iwl": self.iwl(n, generator=generator, dtype=f64),
        }

    def eval_measures(self, model, sets: dict[str, Prompts]) -> dict[str, Tensor]:
        """The induction-head and previous-token scores and Reddy's progress measures of one `model` on the
        in-context split "icl" (iclab.analysis.induction.training_measures); {} for a model
        without interleaved attention patterns."""
        from iclab.analysis.induction import training_measures  # analysis imports models, which import tasks

        return training_measures(model, sets["icl"])

    def targets(self, x: Tensor, prompts) -> Tensor:
        raise ValueError(f"targets: {self.config.name} labels belong to classes, not to inputs; draw a split instead")


SPLITS = ("train", "icl_novel", "icl_permuted", "iwl")
"""the splits `ICLClassificationTask.split` draws; the last three separate in-context from in-weights learning"""
