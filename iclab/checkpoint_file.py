"""Checkpoint files that prove their own integrity: safetensors with a SHA-256 in the header.

A checkpoint is a safetensors file whose metadata carries ``sha256``: the digest of the file's data section (every
tensor's bytes, as laid out by safetensors), its tensor entries (names, dtypes, shapes, offsets) and every other
metadata entry (``meta``: the JSON of step, optimizer layout, …). `encode` computes it; `decode` recomputes it from
the bytes on disk and refuses the file — one line naming it, :class:`~iclab.errors.CheckpointError` — when the
header cannot be parsed, the file is shorter than its header says (a write cut off), a tensor's bytes, a tensor
entry or a metadata entry changed (a flipped bit), or there is no checksum at all (a file from before checksums,
which cannot be told apart from a damaged one). Nothing from a refused file is used.

Layout of a safetensors file: 8 bytes little-endian header length H, H bytes of JSON header (tensor dtypes, shapes and
data offsets, plus "__metadata__"), then the data section. Changing the metadata changes only the header, so the
digest is computed over a first encoding and stored in a second one with identical data and tensor entries.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from iclab.errors import CheckpointError

__all__ = ["decode", "encode"]

_KEY = "sha256"


def _split(data: bytes, name: str) -> tuple[dict[str, Any], bytes]:
    """(header JSON, data section) of a safetensors byte string; CheckpointError if it is not one."""
    if len(data) < 8:
        raise CheckpointError(f"checkpoint: {name} is truncated ({len(data)} bytes); refusing to load it")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise CheckpointError(f"checkpoint: {name} is truncated (header of {size} bytes, file of {len(data)})")
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"checkpoint: {name} has a damaged header; refusing to load it") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"checkpoint: {name} has a damaged header; refusing to load it")
    return header, data[8 + size :]


def _digest(header: dict[str, Any], body: bytes) -> str:
    """SHA-256 of the data section, the tensor entries of the header (names, dtypes, shapes, offsets) and every
    metadata entry but the checksum itself, the last two as canonical JSON."""
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    metadata = {k: v for k, v in (header.get("__metadata__") or {}).items() if k != _KEY}
    described = json.dumps([entries, metadata], sort_keys=True).encode("utf-8")
    return hashlib.sha256(body + described).hexdigest()


def encode(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes of `tensors` (CPU, contiguous, not sharing storage) with `metadata` plus its checksum."""
    first = safetensors_save(tensors, metadata)
    header, body = _split(first, "checkpoint being written")
    return safetensors_save(tensors, {**metadata, _KEY: _digest(header, body)})


def decode(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors on the CPU, metadata) of a checkpoint file after checking its checksum; CheckpointError naming the
    file if it is truncated, damaged, altered or has no checksum."""
    path = Path(path)
    data = path.read_bytes()
    header, body = _split(data, str(path))
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or _KEY not in metadata:
        raise CheckpointError(
            f"checkpoint: {path} has no checksum (written by an older iclab, or not by iclab); refusing to load it"
        )
    if _digest(header, body) != metadata[_KEY]:
        raise CheckpointError(f"checkpoint: {path} fails its checksum (the file was altered or damaged)")
    try:
        return safetensors_load(data), metadata
    except SafetensorError as exc:  # a consistent digest over an inconsistent header: still not loadable
        raise CheckpointError(f"checkpoint: {path} cannot be read ({exc}); refusing to load it") from None
