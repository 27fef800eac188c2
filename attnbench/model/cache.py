"""The decoding cache's shared part: position bookkeeping, snapshots and size.

Every attention type's cache (KVCache in attention.py, MLA's LatentCache in mla.py, linear attention's
RecurrentState in linear_attention.py) is a `Cache`: `pos` counts the tokens already seen, the GPT
advances it after a chunk has gone through every layer, and `max_len` bounds the positions. What each
stores, and how a layer writes into it, is its own.
"""
from __future__ import annotations

from torch import Tensor


class Cache:
    """Base: `tensors()` are what the cache holds; a snapshot is the position (overwritten on rewind)."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.pos = 0

    def tensors(self) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def advance(self, T: int) -> None:
        self.pos += T

    def snapshot(self) -> object:
        """What `restore` needs to come back here: the position, for caches written at fixed positions."""
        return self.pos

    def restore(self, snap: object) -> None:
        """Back to a snapshot: what was written after it is overwritten by the next update."""
        assert isinstance(snap, int)
        self.pos = snap

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())
