"""MAD's six synthetic tasks (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
Architectures"; github.com/athms/mad-lab, mad/data/instances.py), as batched generators.

Each generator returns (x, y), both (n, T): x the input tokens, y the target for the output at each
position (IGNORE where nothing is asked). `train=True` gives MAD's training targets, `train=False` its
test targets, whose non-IGNORE positions are the probed ones MAD's accuracy counts.

How the sequence length T maps onto MAD's `seq_len`: MAD's recall instances are seq_len tokens of
which the model reads the first seq_len - 1 (inputs[:-1], targets[1:]). Here x is all seq_len tokens
and the last position has no target, so predictions and accuracy are MAD's at seq_len = T (a causal
model's earlier outputs do not see the extra last token). Copying, memorisation and compression are
aligned already (x and y of length seq_len).

Departures, named: compression (MAD: an encoder-decoder whose decoder sees only the last position's
vector) is written for a causal LM: T//2 random tokens, the compression token, then blanks at which
the model writes the tokens back in order; attention can read them back directly, a fixed-state
mixer must carry them in its state. The kv map of memorisation comes from the run's seed, not MAD's
fixed 12345, so seeds are independent replicates.
"""
from __future__ import annotations

import random
from functools import lru_cache
from itertools import permutations
from typing import Callable

import torch
from torch import Tensor

from .lm_data import IGNORE

Gen = Callable[..., "tuple[Tensor, Tensor]"]


def _first_seen(keys: Tensor, live: Tensor) -> Tensor:
    """(n, P) bool: slot j holds a live key that no earlier live slot holds."""
    k = torch.where(live, keys, -1)  # (n, P)
    same = (k[:, :, None] == k[:, None, :]) & live[:, None, :]  # (n, P, P): slot i's key at slot j
    earlier = torch.ones(k.shape[1], k.shape[1], dtype=torch.bool).tril(-1)  # j < i
    return live & ~(same & earlier).any(-1)


def recall(g: torch.Generator, n: int, T: int, vocab_size: int, noise_vocab_size: int, frac_noise: float,
           train: bool, **_: object) -> tuple[Tensor, Tensor]:
    """In-context recall, multi-query (MAD's default), with noise: noisy_in_context_recall.

    T/2 slots; all but the last hold a key-value pair (or, with probability frac_noise, two noise
    tokens), keys drawn with replacement from the lower half of the non-noise vocabulary, each key's
    value fixed within the sequence. Test targets: a value whose key appeared before; the last slot
    repeats a presented key and its value is always asked."""
    P, ns = T // 2, vocab_size - noise_vocab_size
    n_keys = ns // 2
    keys = torch.randint(n_keys, (n, P), generator=g)  # (n, P)
    table = torch.randint(ns - n_keys, (n, n_keys), generator=g) + n_keys  # (n, keys): each key's value
    vals = table.gather(1, keys)
    live = torch.ones(n, P, dtype=torch.bool)
    if frac_noise > 0:
        keep = torch.randint(P - 1, (n,), generator=g)  # MAD keeps one pair, so a key can be probed
        live = torch.rand(n, P, generator=g) >= frac_noise
        live[torch.arange(n), keep] = True
        noise = torch.randint(noise_vocab_size, (n, P, 2), generator=g) + ns
        keys, vals = torch.where(live, keys, noise[..., 0]), torch.where(live, vals, noise[..., 1])
    live[:, -1] = False  # the last slot is the probe
    first = _first_seen(keys, live)
    probe = torch.multinomial(first.float(), 1, generator=g).squeeze(1)  # uniform over presented keys
    keys[:, -1], vals[:, -1] = keys[torch.arange(n), probe], vals[torch.arange(n), probe]
    asked = live & ~first
    asked[:, -1] = True
    return _pairs(keys, vals, asked, train, T)


def _pairs(keys: Tensor, vals: Tensor, asked: Tensor, train: bool, T: int) -> tuple[Tensor, Tensor]:
    n = keys.shape[0]
    x = torch.stack([keys, vals], -1).reshape(n, -1)[:, :T]  # (n, T): k v k v ...
    y = torch.full_like(x, IGNORE)
    if train:  # MAD trains on every next token of the recall tasks
        y[:, :-1] = x[:, 1:]
    else:  # at a key, its value when it is asked
        y[:, 0::2] = torch.where(asked, vals, IGNORE)[:, : (T + 1) // 2]
    return x, y


def memorization(g: torch.Generator, n: int, T: int, vocab_size: int, table: Tensor, train: bool,
                 **_: object) -> tuple[Tensor, Tensor]:
    """Key, insert token; the target at the insert token is the key's value in a map fixed for the run."""
    keys = torch.randint(len(table), (n, T // 2), generator=g)  # (n, T/2)
    x = torch.stack([keys, torch.full_like(keys, vocab_size - 1)], -1).reshape(n, -1)
    y = torch.stack([torch.full_like(keys, IGNORE), table[keys]], -1).reshape(n, -1)
    return x, y


def memorization_table(vocab_size: int, seed: int) -> Tensor:
    """MAD's map: each key 0 .. m//2-1 onto its own value in m//2 .. m-1 (m = vocab_size - 1), at random."""
    m = vocab_size - 1
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(m - m // 2, generator=gen)[: m // 2] + m // 2  # (m//2,) distinct values


def selective_copying(g: torch.Generator, n: int, T: int, vocab_size: int, num_tokens_to_copy: int,
                      **_: object) -> tuple[Tensor, Tensor]:
    """c tokens with T - 2c - 1 blanks inserted before random ones of them, the copy token, c blanks;
    the targets at those last c blanks are the c tokens in order."""
    c, blank, copy = num_tokens_to_copy, vocab_size - 2, vocab_size - 1
    nb = T - 2 * c - 1
    tokens = torch.randint(vocab_size - 2, (n, c), generator=g)  # (n, c)
    before = torch.zeros(n, c, dtype=torch.long).scatter_add_(  # blanks inserted before token j
        1, torch.randint(c, (n, nb), generator=g), torch.ones(n, nb, dtype=torch.long))
    at = torch.arange(c) + before.cumsum(1)  # (n, c) token positions
    x = torch.full((n, T), blank, dtype=torch.long)
    x.scatter_(1, at, tokens)
    x[:, c + nb] = copy
    y = torch.full((n, T), IGNORE, dtype=torch.long)
    y[:, c + nb + 1 :] = tokens
    return x, y


def compression(g: torch.Generator, n: int, T: int, vocab_size: int, **_: object) -> tuple[Tensor, Tensor]:
    """T//2 random tokens, the compression token, blanks; written back in order after it (causal form)."""
    m = T // 2
    tokens = torch.randint(vocab_size - 2, (n, m), generator=g)
    x = torch.full((n, T), vocab_size - 2, dtype=torch.long)  # blank
    x[:, :m], x[:, m] = tokens, vocab_size - 1
    y = torch.full((n, T), IGNORE, dtype=torch.long)
    y[:, m : 2 * m] = tokens
    return x, y


def fuzzy_recall(g: torch.Generator, n: int, T: int, vocab_size: int, k_motif_size: int, v_motif_size: int,
                 train: bool, **_: object) -> tuple[Tensor, Tensor]:
    """Keys and values of 1..k (1..v) distinct tokens (tests: keys of k); see `_fuzzy_one`."""
    seed = int(torch.randint(2**62, (1,), generator=g))
    rng = random.Random(seed)
    rows = [_fuzzy_one(rng, T, vocab_size, k_motif_size, v_motif_size, train) for _ in range(n)]
    return torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])


@lru_cache(maxsize=64)
def _motifs(vocab: range, size: int) -> list[tuple[int, ...]]:
    return list(permutations(vocab, size))


def _fuzzy_one(rng: random.Random, T: int, V: int, kmax: int, vmax: int, train: bool) -> tuple[list, list]:
    """One MAD fuzzy-recall instance (multi-query): pairs of motifs until the sequence is nearly full,
    the probe pair somewhere among them, the probe again at the end; padding in front to T + 1.
    As in MAD, the probe's offset can lie beyond where the filling stops; the probe then appears only
    at the end and its value cannot be recalled (kept: it is part of MAD's accuracy)."""
    pad, ns = V - 1, V - 1
    key_vocab, val_vocab = range(ns // 2), range(ns // 2, ns)
    k_sizes = list(range(1, kmax + 1)) if train else [kmax]
    v_sizes = list(range(1, vmax + 1))
    k_probe = rng.choice(_motifs(key_vocab, rng.choice(k_sizes)))
    v_probe = rng.choice(_motifs(val_vocab, rng.choice(v_sizes)))
    room = T - len(k_probe) - len(v_probe) - (kmax + vmax)
    probe_at = rng.randrange(T - 2 * (len(k_probe) + len(v_probe)))
    table, seen, added = {k_probe: v_probe}, set(), False
    inputs: list[int] = []
    targets: list[int] = []
    while len(inputs) < room:
        k_size, v_size = rng.choice(k_sizes), rng.choice(v_sizes)
        if len(inputs) >= probe_at and not added:  # the probe pair, never itself asked
            k, v, added, ask = k_probe, v_probe, True, False
        else:
            k = rng.choice(_motifs(key_vocab, k_size))
            v = table.setdefault(k, rng.choice(_motifs(val_vocab, v_size)))
            added, ask = added or k == k_probe, k in seen
        inputs += [*k, *v]
        targets += [IGNORE] * len(k) + (list(v) if ask else [IGNORE] * len(v))
        seen.add(k)
    inputs += [*k_probe, *v_probe]
    targets += [IGNORE] * len(k_probe) + list(v_probe)
    n_pad = max(0, T + 1 - len(inputs))
    inputs, targets = [pad] * n_pad + inputs, [IGNORE] * n_pad + targets
    x = inputs[-(T + 1):-1]
    return x, (inputs[-T:] if train else targets[-T:])


TASKS: dict[str, Gen] = {
    "in_context_recall": recall,
    "noisy_in_context_recall": recall,
    "fuzzy_in_context_recall": fuzzy_recall,
    "selective_copying": selective_copying,
    "compression": compression,
    "memorization": memorization,
}
