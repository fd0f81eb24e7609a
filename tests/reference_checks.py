"""Shared helpers of the learner tests: relative closeness to a numpy reference and numpy → torch."""

import numpy as np
import torch


def assert_rel_close(actual, expected, rtol: float = 1e-5, floor: float = 1e-12) -> None:
    """max |actual − expected| ≤ rtol · max(floor, max |expected|), actual finite and of the reference's shape;
    `floor` for references that are all ~0."""
    actual = np.asarray(actual.detach() if isinstance(actual, torch.Tensor) else actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.isfinite(actual).all()
    scale = max(floor, float(np.abs(expected).max(initial=0.0)))
    err = float(np.abs(actual - expected).max(initial=0.0))
    assert err <= rtol * scale, f"max abs error {err:.3g} > {rtol:g} × {scale:.3g}"


def as_tensor(a) -> torch.Tensor:
    """numpy array → torch tensor (same dtype, contiguous copy where needed)."""
    return torch.from_numpy(np.ascontiguousarray(a))


def per_prompt(fn, X, y, Xq, mask):
    """Naive per-prompt loop: fn(present X, present y, Xq) for each prompt → stacked [B, m] (or a tuple of them)."""
    outs = [fn(X[b][mask[b]], y[b][mask[b]], Xq[b]) for b in range(X.shape[0])]
    return np.stack(outs) if not isinstance(outs[0], tuple) else tuple(np.stack(o) for o in zip(*outs))


def per_prefix(fn, x, y):
    """Naive prefix loop: prediction t of prompt b from points < t → [B, T]."""
    B, T, _ = x.shape
    return np.array([[fn(x[b, :t], y[b, :t], x[b, t : t + 1])[0] for t in range(T)] for b in range(B)])
