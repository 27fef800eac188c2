"""data=mqar: Zoology's multi-query associative recall (Arora et al. 2023), generated as Zoology does.

Layout of one sequence of length T with p pairs (Zoology's `multiquery_ar`, figure-2 settings)::

    k1 v1 k2 v2 … kp vp | r r kb r r r ka r …      r: a random token (Zoology's random_non_queries)
    └── context: 2p ───┘ └── queries at even offsets 2·gap after the context ──┘

- keys are drawn without replacement from 1 .. V//2 - 1, values without replacement from V//2 .. V - 1;
- every key is queried once (n_queries = n_pairs; fewer asks a random subset), at gap g in
  0 .. (T - 2p)//2 - 1 drawn without replacement with P(g) ∝ (g + 1)^(a - 1), a = data.power_a: small
  gaps are likely, so most queries sit right after the context;
- the target at a query key is its value; every other position is IGNORE;
- every other input (Zoology's zeros) is a uniformly random token of the whole vocabulary, so the
  model cannot find the queries by position alone (data.random_non_queries=false keeps the zeros).

A training mixture (data.train_pairs) gives each example of a batch one of the listed pair counts, in
equal shares, as Zoology's and Based's training sets mix segments of several pair counts; validation
always uses data.n_pairs. Batches are a pure function of (seed, step), as in train/data.py.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError
from .lm_data import _VAL_STREAM, IGNORE, LMData, step_generator


def power_law(space: int, power_a: float) -> Tensor:
    """Zoology's gap distribution over 0 .. space-1: p(g) ∝ a · (g + 1)^(a - 1), normalised."""
    i = torch.arange(1, space + 1, dtype=torch.float64)
    p = power_a * i ** (power_a - 1)
    return p / p.sum()


def mqar_problem(vocab_size: int, n_pairs: int, n_queries: int, seq_len: int, power_a: float) -> Optional[str]:
    """Why these sizes cannot make an MQAR sequence (one line naming the field), or None."""
    if power_a <= 0:
        return f"data.power_a={power_a}: must be > 0 (Zoology's gap distribution p ∝ i^(a-1))"
    if n_pairs < 1 or n_queries < 1:
        return f"data.n_pairs={n_pairs} data.n_queries={n_queries}: must be >= 1"
    if n_queries > n_pairs:
        return f"data.n_queries={n_queries}: data=mqar queries each key at most once; must be <= data.n_pairs={n_pairs}"
    n_keys, n_values = vocab_size // 2 - 1, vocab_size - vocab_size // 2
    if n_pairs > n_keys or n_pairs > n_values:
        return (f"data.vocab_size={vocab_size}: {n_pairs} pairs need {n_pairs} distinct keys in 1..V/2-1 "
                f"(here {n_keys}); data.vocab_size >= {2 * n_pairs + 2}")
    space = (seq_len - 2 * n_pairs) // 2
    if n_queries > space:
        return (f"train.seq_len={seq_len}: {n_pairs} pairs + {n_queries} queries need >= "
                f"{2 * n_pairs + 2 * n_queries} tokens (2 x pairs context, 2 x queries query slots)")
    return None


class ZoologyMQAR(LMData):
    """Zoology's MQAR; see the module docstring for the layout."""

    name = "mqar"
    metric_name = "recall_acc"

    def __init__(self, vocab_size: int, n_pairs: int, n_queries: Optional[int], power_a: float, seed: int,
                 train_pairs: Optional[Sequence[int]] = None, random_non_queries: bool = True):
        self.vocab_size, self.n_pairs, self.power_a, self.seed = vocab_size, n_pairs, power_a, seed
        self.n_queries = n_queries or n_pairs
        self.train_pairs = list(train_pairs) if train_pairs else None
        self.random_non_queries = random_non_queries

    def not_applicable(self, seq_len: int) -> Optional[str]:
        return mqar_problem(self.vocab_size, self.n_pairs, self.n_queries, seq_len, self.power_a)

    def generate(self, g: torch.Generator, n: int, T: int, n_pairs: int, n_queries: int) -> tuple[Tensor, Tensor]:
        """n sequences of length T with n_pairs pairs, n_queries of them queried: (x, y), each (n, T)."""
        p, q, half = n_pairs, n_queries, self.vocab_size // 2
        keys = torch.rand(n, half - 1, generator=g).argsort(dim=1)[:, :p] + 1  # (n, p) distinct in 1..V/2-1
        vals = torch.rand(n, self.vocab_size - half, generator=g).argsort(dim=1)[:, :p] + half  # (n, p) distinct
        space = (T - 2 * p) // 2
        gaps = torch.multinomial(power_law(space, self.power_a).float().expand(n, space), q, replacement=False,
                                 generator=g)  # (n, q) distinct slots, small gaps likely
        asked = torch.rand(n, p, generator=g).argsort(dim=1)[:, :q] if q < p else torch.arange(p).expand(n, p)
        x = torch.zeros(n, T, dtype=torch.long)
        y = torch.full((n, T), IGNORE, dtype=torch.long)
        x[:, 0 : 2 * p : 2], x[:, 1 : 2 * p : 2] = keys, vals
        at = 2 * p + 2 * gaps  # (n, q) query positions
        x.scatter_(1, at, keys.gather(1, asked))
        y.scatter_(1, at, vals.gather(1, asked))  # the target at a query key is its value
        if self.random_non_queries:
            noise = torch.randint(self.vocab_size, (n, T), generator=g)
            filler = x == 0  # Zoology's zeros: everything after the context but the query keys
            x[filler] = noise[filler]
        return x, y

    def train_batch(self, step: int, batch_size: int, seq_len: int) -> tuple[Tensor, Tensor]:
        g = step_generator(self.seed, 0, step)
        if not self.train_pairs:
            return self.generate(g, batch_size, seq_len, self.n_pairs, self.n_queries)
        return self._mixture(g, batch_size, seq_len)

    def _mixture(self, g: torch.Generator, batch_size: int, seq_len: int) -> tuple[Tensor, Tensor]:
        """Equal shares of each pair count in data.train_pairs (every key queried), shuffled."""
        counts = self.train_pairs
        shares = [batch_size // len(counts) + (i < batch_size % len(counts)) for i in range(len(counts))]
        parts = [self.generate(g, k, seq_len, p, p) for p, k in zip(counts, shares) if k > 0]
        order = torch.randperm(batch_size, generator=g)
        return torch.cat([a for a, _ in parts])[order], torch.cat([b for _, b in parts])[order]

    def val_batches(self, n_batches: int, batch_size: int, seq_len: int) -> list[tuple[Tensor, Tensor]]:
        g = step_generator(self.seed, _VAL_STREAM, seq_len)
        return [self.generate(g, batch_size, seq_len, self.n_pairs, self.n_queries) for _ in range(n_batches)]

    def describe(self) -> dict:
        return {**super().describe(), "n_pairs": self.n_pairs, "n_queries": self.n_queries,
                "power_a": self.power_a, "train_pairs": self.train_pairs,
                "random_non_queries": self.random_non_queries, "chance_acc": 1.0 / self.n_pairs}


def check_mqar(d: Any, seq_len: int) -> None:
    """One ConfigError line for sizes no MQAR sequence can have (validation and the mixture's counts)."""
    problem = mqar_problem(int(d.vocab_size), int(d.n_pairs), int(d.n_queries or d.n_pairs), seq_len,
                           float(d.power_a))
    if problem:
        raise ConfigError(problem)
    for p in d.get("train_pairs") or []:
        problem = mqar_problem(int(d.vocab_size), int(p), int(p), seq_len, float(d.power_a))
        if problem:
            raise ConfigError(f"data.train_pairs={list(d.train_pairs)}: {p} pairs: {problem}")
