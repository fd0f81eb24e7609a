"""The model contract in iclab.models.base: every registered model, built without a generator, is reproducible and
leaves the global RNG alone; with a generator, its initialisation follows the generator."""

import pytest
import torch

from iclab.config import ModelConfig, model_config
from iclab.models import MODELS, make_model

MODEL_NAMES = list(MODELS)


def _config(name: str, **kw) -> ModelConfig:
    if name in ("gpt", "separate"):
        kw.setdefault("max_points", 16)
    return model_config(name=name, **kw)


def _weights(model) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


@pytest.mark.parametrize("variance_head", [False, True])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_models_never_touch_the_global_rng(name, variance_head):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = make_model(_config(name, variance_head=variance_head), 3)
    b = make_model(_config(name, variance_head=variance_head), 3)
    assert torch.equal(before, torch.get_rng_state())
    assert all(torch.equal(p, q) for p, q in zip(_weights(a), _weights(b), strict=True))
    # no generator = a generator seeded 0, one stream for the model and then its variance head
    c = make_model(_config(name, variance_head=variance_head), 3, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(p, q) for p, q in zip(_weights(a), _weights(c), strict=True))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_initialisation_follows_the_generator(name):
    build = lambda seed: make_model(_config(name), 3, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    same = all(torch.equal(p, q) for p, q in zip(_weights(build(1)), _weights(build(1)), strict=True))
    differ = any(not torch.equal(p, q) for p, q in zip(_weights(build(1)), _weights(build(2)), strict=True))
    assert same and differ
