"""The dataset interface every task implements (`LMData`), and the pieces the generators share.

A leaf of train/: the generators (data.py's, mqar.py, mad.py, pool.py) import it, and data.py imports
them, so nothing here may import another data module.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

IGNORE = -100  # F.cross_entropy's default ignore_index
_VAL_STREAM = 1  # stream ids keep validation batches disjoint from the training stream


def step_generator(seed: int, stream: int, step: int) -> torch.Generator:
    """A CPU generator whose state depends only on (seed, stream, step)."""
    mixed = (int(seed) * 0x9E3779B97F4A7C15 + stream * 0xBF58476D1CE4E5B9 + step) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


class LMData:
    """Interface shared by the datasets below."""

    name: str = "base"
    vocab_size: int
    metric_name: str  # recall_acc | acc (accuracy on the supervised positions) | bpc

    def train_batch(self, step: int, batch_size: int, seq_len: int) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def val_batches(self, n_batches: int, batch_size: int, seq_len: int) -> list[tuple[Tensor, Tensor]]:
        raise NotImplementedError

    def not_applicable(self, seq_len: int) -> Optional[str]:
        """Why this dataset cannot be evaluated at `seq_len`, or None."""
        return None

    def describe(self) -> dict:
        return {"name": self.name, "vocab_size": self.vocab_size}
