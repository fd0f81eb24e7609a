"""Shared test set-up: shape contracts on (iclab.shapes), one torch thread per xdist worker (2-core CI machines)."""

import os

os.environ["ICLAB_SHAPE_CHECKS"] = "1"  # before iclab is imported: every @shape_checked boundary is checked

import torch

# The tensors in tests are tiny: with two threads per process on two cores, OpenMP's spinning makes small ops up
# to 100x slower when another worker is busy. One thread per test process is both faster and steadier.
torch.set_num_threads(1)
