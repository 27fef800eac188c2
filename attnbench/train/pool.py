"""data.train_examples: a fixed training set, read in epochs (Zoology's 100k examples, MAD's 12,800).

The set is the first `train_examples` sequences of the task's own training stream, made once per
sequence length and kept in memory (int32: train_examples · T · 8 bytes for inputs and targets).
Each epoch reads it in its own order; the batch of a step is a pure function of (seed, step), as
every dataset's is (train/data.py), so a resumed run sees exactly the batches it would have seen.
Epochs = train.steps · train.batch_size / train_examples. Validation is the task's own (fresh
sequences), so the gap between train and validation loss is the set's overfitting.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .lm_data import LMData, step_generator

_EPOCH_STREAM = 2  # the epochs' orders: disjoint from the training (0) and validation (1) streams
_CHUNK = 1024  # sequences generated per call when the set is made


class FixedPool(LMData):
    """`base`'s training batches drawn from a fixed set of `n_examples` sequences; validation unchanged."""

    def __init__(self, base: LMData, n_examples: int):
        self.base, self.n_examples = base, int(n_examples)
        self.name, self.vocab_size, self.metric_name = base.name, base.vocab_size, base.metric_name
        self._sets: dict[int, tuple[Tensor, Tensor]] = {}

    def __getattr__(self, attr: str):  # task-specific facts (n_pairs, task, ...) stay the base's
        if attr == "base":
            raise AttributeError(attr)
        return getattr(self.base, attr)

    def examples(self, seq_len: int) -> tuple[Tensor, Tensor]:
        """The fixed set at this length: (x, y), each (n_examples, seq_len) int32."""
        if seq_len not in self._sets:
            xs, ys, made, chunk = [], [], 0, 0
            while made < self.n_examples:
                x, y = self.base.train_batch(chunk, min(_CHUNK, self.n_examples - made), seq_len)
                xs.append(x.to(torch.int32)), ys.append(y.to(torch.int32))
                made, chunk = made + len(x), chunk + 1
            self._sets[seq_len] = (torch.cat(xs), torch.cat(ys))
        return self._sets[seq_len]

    def order(self, epoch: int) -> Tensor:
        return torch.randperm(self.n_examples, generator=step_generator(self.base.seed, _EPOCH_STREAM, epoch))

    def train_batch(self, step: int, batch_size: int, seq_len: int) -> tuple[Tensor, Tensor]:
        x, y = self.examples(seq_len)
        flat = torch.arange(step * batch_size, (step + 1) * batch_size)  # positions in the epochs' stream
        epochs = flat // self.n_examples
        idx = torch.empty_like(flat)
        for e in epochs.unique().tolist():  # a batch spans at most a few epochs
            here = epochs == e
            idx[here] = self.order(e)[flat[here] % self.n_examples]
        return x[idx].long(), y[idx].long()

    def val_batches(self, n_batches: int, batch_size: int, seq_len: int) -> list[tuple[Tensor, Tensor]]:
        return self.base.val_batches(n_batches, batch_size, seq_len)

    def not_applicable(self, seq_len: int) -> Optional[str]:
        return self.base.not_applicable(seq_len)

    def describe(self) -> dict:
        return {**self.base.describe(), "train_examples": self.n_examples}
