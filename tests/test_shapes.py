"""Shape contracts (iclab.shapes): with ICLAB_SHAPE_CHECKS=1 (tests/conftest.py) the annotated boundaries reject
inconsistent shapes with jaxtyping's TypeCheckError naming the argument, and accept consistent ones.

One learner (GD, a MaskedLearner) and one model per token layout (concat: LSA, interleaved: GPT, separate:
SeparateTokenModel), plus each layout's encode_parts / readout."""

import pytest
import torch
from jaxtyping import TypeCheckError

from iclab import shapes
from iclab.algorithms.gd import GD
from iclab.algorithms.trees import DecisionTree
from iclab.models.gpt import GPT, GPTConfig
from iclab.models.lla import LLAConfig, LocalLinearAttentionModel
from iclab.models.lsa import LSA, LSAConfig
from iclab.models.separate import SeparateConfig, SeparateTokenModel
from iclab.tokens import ConcatLayout, InterleavedLayout, SeparateLayout

B, N, M, D = 3, 5, 2, 4


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _parts(b: int = B, n: int = N, m: int = M, d: int = D) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = _gen()
    return torch.randn(b, n, d, generator=g), torch.randn(b, n, generator=g), torch.randn(b, m, d, generator=g)


LEARNERS = {
    "gd": lambda: GD([0.1]),
    "lsa (concat)": lambda: LSA(LSAConfig(), D, generator=_gen()),
    "gpt (interleaved)": lambda: GPT(GPTConfig(width=16, max_points=16), D, generator=_gen()),
    "separate": lambda: SeparateTokenModel(SeparateConfig(max_points=16), D, generator=_gen()),
}

# (what is wrong, the argument the error must name, x_ctx, y_ctx, x_q)
BAD_CALLS = {
    "x_q has another d": ("x_q", *_parts()[:2], torch.randn(B, M, D + 1)),
    "y_ctx has another batch": ("y_ctx", _parts()[0], torch.randn(B + 1, N), _parts()[2]),
    "y_ctx has another n_ctx": ("y_ctx", _parts()[0], torch.randn(B, N + 1), _parts()[2]),
    "x_q has another batch": ("x_q", *_parts()[:2], torch.randn(B + 1, M, D)),
}


def _raises_naming(arg: str, fn, *args, **kwargs) -> None:
    with pytest.raises(TypeCheckError) as info:
        fn(*args, **kwargs)
    assert f"parameter '{arg}'" in str(info.value), str(info.value)


def test_checks_are_on_in_the_test_session():
    assert shapes.CHECKS


@pytest.mark.parametrize("name", LEARNERS)
def test_consistent_predict_passes(name):
    learner = LEARNERS[name]()
    with torch.no_grad():
        assert learner.predict(*_parts()).shape == (B, M)


@pytest.mark.parametrize("bad", BAD_CALLS)
@pytest.mark.parametrize("name", LEARNERS)
def test_inconsistent_predict_names_the_argument(name, bad):
    arg, x_ctx, y_ctx, x_q = BAD_CALLS[bad]
    with torch.no_grad():
        _raises_naming(arg, LEARNERS[name]().predict, x_ctx, y_ctx, x_q)


def test_integer_inputs_are_rejected():
    x_ctx, y_ctx, x_q = _parts()
    _raises_naming("x_ctx", LSA(LSAConfig(), D, generator=_gen()).predict, x_ctx.long(), y_ctx, x_q)


@pytest.mark.parametrize(
    "learner", [lambda: GD([0.1]), lambda: LocalLinearAttentionModel(LLAConfig(), D, generator=_gen())]
)
def test_mask_must_match_the_context(learner):
    learner = learner()
    x_ctx, y_ctx, x_q = _parts()
    with torch.no_grad():
        assert learner.predict(x_ctx, y_ctx, x_q, torch.ones(B, N, dtype=torch.bool)).shape == (B, M)
        _raises_naming("mask", learner.predict, x_ctx, y_ctx, x_q, torch.ones(B, N + 1, dtype=torch.bool))
        _raises_naming("mask", learner.predict, x_ctx, y_ctx, x_q, torch.ones(B, N))  # float, not bool


@pytest.mark.parametrize("name", ["tree", "gpt (interleaved)"])
def test_predict_prefixes(name):
    # a tree uses MaskedLearner's generic predict_prefixes (GD's faster override carries no annotations yet)
    learner = DecisionTree(max_depth=2) if name == "tree" else LEARNERS[name]()
    g = _gen()
    x, y = torch.randn(B, N, D, generator=g), torch.randn(B, N, generator=g)
    with torch.no_grad():
        assert learner.predict_prefixes(x, y).shape == (B, N)
        _raises_naming("y", learner.predict_prefixes, x, y[:, :-1])
        _raises_naming("y", learner.predict_prefixes, x, y[:-1])


def test_vector_targets_bind_k_across_arguments_and_result():
    model = GPT(GPTConfig(width=16, max_points=16), D, k=2, generator=_gen())
    x_ctx, _, x_q = _parts()
    with torch.no_grad():
        assert model.predict(x_ctx, torch.randn(B, N, 2), x_q).shape == (B, M, 2)


LAYOUTS = {
    "concat": ConcatLayout(),
    "interleaved": InterleavedLayout(),
    "separate": SeparateLayout(pos_dim=4),
}


@pytest.mark.parametrize("name", LAYOUTS)
def test_layout_boundaries(name):
    layout = LAYOUTS[name]
    x_ctx, y_ctx, x_q = _parts()
    tokens = layout.encode_parts(x_ctx, y_ctx, x_q)
    assert tokens.dim() == 3 and tokens.shape[0] == B
    _raises_naming("x_q", layout.encode_parts, x_ctx, y_ctx, torch.randn(B, M, D + 1))
    _raises_naming("y_ctx", layout.encode_parts, x_ctx, torch.randn(B + 1, N), x_q)
    _raises_naming("outputs" if name != "concat" else "tokens", layout.readout, torch.randn(B, 2 * N), N)
