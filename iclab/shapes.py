"""Shape contracts at the public boundaries: one vocabulary of dimension names, checked at test time.

Public functions that take or return tensors annotate them with jaxtyping types over these names, e.g.
``x_ctx: Float[Tensor, "batch n_ctx d"]``, and carry `@shape_checked`. With ICLAB_SHAPE_CHECKS=1 (the test suite
sets it in tests/conftest.py) every call is checked by beartype: each tensor's rank and dtype kind, and every
named dimension bound consistently across the arguments and the result of one call. Otherwise `shape_checked` is
the identity: no cost in training or evaluation.

Dimension names:
    batch   prompts in a batch (B)            n_ctx   context points of a prompt (n)
    n_q     queries of a prompt (m)           T       points of a whole prompt (n + m, or every prefix)
    d       input dimension                   *k      target width: absent for scalar targets, k for y ∈ R^k
    L       tokens of a sequence              D       token width
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from jaxtyping import Bool, Float, Int, jaxtyped

__all__ = ["CHECKS", "Bool", "Float", "Int", "shape_checked"]

CHECKS = os.environ.get("ICLAB_SHAPE_CHECKS") == "1"

F = TypeVar("F", bound=Callable)


def shape_checked(fn: F) -> F:
    """`fn` with its jaxtyping annotations checked on every call when CHECKS is on; `fn` itself otherwise."""
    if not CHECKS:
        return fn
    from beartype import beartype

    return jaxtyped(typechecker=beartype)(fn)
