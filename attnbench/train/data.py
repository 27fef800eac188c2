"""Language-modelling data: synthetic associative recall, Tiny Shakespeare, any text file.

Every dataset hands out batches as (x, y) LongTensors of shape (B, T) where
y[t] is the target for the prediction made at x[..t]; positions that carry no
learnable target hold IGNORE (cross-entropy's ignore_index).

Training batches are a pure function of (seed, step), so the data position of a
run is its step number: resuming from a checkpoint replays exactly the batches
an uninterrupted run would have seen, with no iterator state to save.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from ..errors import ConfigError
from .lm_data import _VAL_STREAM, IGNORE, LMData, step_generator

log = logging.getLogger(__name__)

DATASETS = ("synthetic", "mqar", "mad", "shakespeare", "text")
GENERATED = ("synthetic", "mqar", "mad")  # made by a generator (data.train_examples applies), not read from a file
TOKENIZERS = ("char", "byte")


# ----------------------------------------------------------------------------- synthetic
class AssociativeRecall(LMData):
    """Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology").

    Layout of one sequence of length T with p pairs and q queries::

        k1 v1 k2 v2 … kp vp  0 0 … 0  ka 0 kb 0 …      (queries: the last 2q tokens)
        └──── context: 2p ────┘ pad   └── queries ──┘

    Token 0 is padding, keys and values come from disjoint id ranges, keys are
    distinct within a sequence. Queries sit at the end, so the nearest value a
    query must recall lies at least `min_distance(T)` positions back: a model
    whose receptive field (layers · (window − 1)) is shorter cannot recall at
    all, however long it trains. Only the answer positions (a query key → its
    value) carry a target: every other next token is random by construction, so
    supervising it adds irreducible loss and gradient noise and no signal. The
    answers are not fed back after their queries (padding follows each query key,
    as in Zoology): otherwise a model could answer the later queries by
    elimination (the context value not yet shown) without recalling anything.
    """

    name = "synthetic"
    metric_name = "recall_acc"

    def __init__(self, vocab_size: int, n_pairs: int, n_queries: Optional[int], seed: int):
        self.vocab_size = vocab_size
        self.n_pairs = n_pairs
        self.n_queries = n_queries or n_pairs
        self.n_keys = (vocab_size - 1) // 2  # ids 1 .. n_keys
        self.n_values = vocab_size - 1 - self.n_keys  # ids n_keys+1 .. vocab_size-1
        self.seed = seed

    def min_len(self) -> int:
        return 2 * (self.n_pairs + self.n_queries)

    def min_distance(self, seq_len: int) -> int:
        """Positions between the first query and the last context value."""
        return (seq_len - 2 * self.n_queries) - (2 * self.n_pairs - 1)

    def not_applicable(self, seq_len: int) -> Optional[str]:
        if seq_len < self.min_len():
            return f"shorter than the {self.min_len()} tokens of {self.n_pairs} pairs + {self.n_queries} queries"
        return None

    def generate(self, g: torch.Generator, n: int, T: int) -> tuple[Tensor, Tensor]:
        p, q = self.n_pairs, self.n_queries
        keys = torch.rand(n, self.n_keys, generator=g).argsort(dim=1)[:, :p] + 1  # (n, p) distinct
        vals = torch.randint(self.n_values, (n, p), generator=g) + 1 + self.n_keys  # (n, p)
        if q <= p:  # each pair queried at most once
            which = torch.rand(n, p, generator=g).argsort(dim=1)[:, :q]  # (n, q) pairs being queried
        else:  # more queries than pairs: keys are asked again
            which = torch.randint(p, (n, q), generator=g)
        q_keys, q_vals = keys.gather(1, which), vals.gather(1, which)  # (n, q)
        x = torch.zeros(n, T, dtype=torch.long)
        y = torch.full((n, T), IGNORE, dtype=torch.long)
        x[:, 0 : 2 * p : 2], x[:, 1 : 2 * p : 2] = keys, vals
        start = T - 2 * q
        x[:, start::2] = q_keys  # each followed by padding, not by its answer
        y[:, start::2] = q_vals  # at a query key, the target is its value
        return x, y

    def train_batch(self, step, batch_size, seq_len):
        return self.generate(step_generator(self.seed, 0, step), batch_size, seq_len)

    def val_batches(self, n_batches, batch_size, seq_len):
        g = step_generator(self.seed, _VAL_STREAM, seq_len)
        return [self.generate(g, batch_size, seq_len) for _ in range(n_batches)]

    def describe(self) -> dict:
        return {**super().describe(), "n_pairs": self.n_pairs, "n_queries": self.n_queries,
                "chance_acc": 1.0 / self.n_pairs}


# ----------------------------------------------------------------------------- text
class TextData(LMData):
    """A character- or byte-level corpus: first (1 − val_fraction) train, the rest validation."""

    metric_name = "bpc"

    def __init__(self, text: str | bytes, tokenizer: str, val_fraction: float, seed: int, name: str = "text"):
        """`text`: the corpus as str, or (byte tokenizer) the file's raw bytes, which need not be UTF-8."""
        self.name, self.tokenizer, self.seed = name, tokenizer, seed
        if tokenizer == "byte":
            raw = text if isinstance(text, bytes) else text.encode("utf-8")
            self.vocab_size = 256
            ids = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
            self.itos: Optional[list[str]] = None
        else:
            self.itos = sorted(set(text))  # the vocabulary of the whole file, as nanoGPT does
            self.vocab_size = len(self.itos)
            stoi = {ch: i for i, ch in enumerate(self.itos)}
            ids = torch.tensor([stoi[ch] for ch in text], dtype=torch.long)
        split = split_point(len(ids), val_fraction)
        self.train_ids, self.val_ids = ids[:split], ids[split:]

    @staticmethod
    def _windows(ids: Tensor, starts: Tensor, T: int) -> tuple[Tensor, Tensor]:
        idx = starts[:, None] + torch.arange(T + 1)[None, :]  # (B, T+1)
        chunk = ids[idx]
        return chunk[:, :-1], chunk[:, 1:]

    def train_batch(self, step, batch_size, seq_len):
        g = step_generator(self.seed, 0, step)
        starts = torch.randint(len(self.train_ids) - seq_len, (batch_size,), generator=g)
        return self._windows(self.train_ids, starts, seq_len)

    def not_applicable(self, seq_len: int) -> Optional[str]:
        if len(self.val_ids) < seq_len + 1:
            return f"validation split has only {len(self.val_ids)} tokens"
        return None

    def val_batches(self, n_batches, batch_size, seq_len):
        """Evenly spaced windows over the validation split (fixed, so evals are comparable)."""
        n = n_batches * batch_size
        starts = torch.linspace(0, len(self.val_ids) - seq_len - 1, n).long()
        return [self._windows(self.val_ids, starts[i : i + batch_size], seq_len) for i in range(0, n, batch_size)]

    def decode(self, ids: list[int]) -> str:
        if self.itos is None:
            return bytes(ids).decode("utf-8", errors="replace")
        return "".join(self.itos[i] for i in ids)

    def prompt(self) -> list[int]:
        """A one-token prompt: a newline if the corpus has one, else its first token."""
        if self.itos is not None and "\n" in self.itos:
            return [self.itos.index("\n")]
        return [10] if self.itos is None else [int(self.train_ids[0])]

    def describe(self) -> dict:
        return {**super().describe(), "tokenizer": self.tokenizer, "train_tokens": len(self.train_ids),
                "val_tokens": len(self.val_ids)}


# ----------------------------------------------------------------------------- corpus checks
def split_point(n_tokens: int, val_fraction: float) -> int:
    """Tokens [0, split) train, [split, n) validate."""
    return int(n_tokens * (1.0 - val_fraction))


def min_text_tokens(seq_len: int, val_fraction: float) -> int:
    """The shortest corpus with one window (seq_len inputs + 1 target) in each split.

    Training draws windows from the train split; validation at train.seq_len (always run)
    reads windows from the validation split."""
    need = seq_len + 1
    n = max(2 * need, math.ceil(need / max(val_fraction, 1e-9)), math.ceil(need / max(1 - val_fraction, 1e-9))) - 2
    n = max(n, 0)
    while not (split_point(n, val_fraction) >= need and n - split_point(n, val_fraction) >= need):
        n += 1  # a few steps at most: the bound above is off only by int() rounding
    return n


def read_corpus(path: Path, tokenizer: str) -> str | bytes:
    """The file as the tokenizer reads it: raw bytes (`byte`, any file) or UTF-8 text (`char`)."""
    raw = Path(path).read_bytes()
    if tokenizer == "byte":
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"data.path={path}: not UTF-8 text (byte {exc.start}: {exc.reason}), which "
                          "data.tokenizer=char needs; use data.tokenizer=byte to read the raw bytes") from None


def check_corpus_length(path: Path, n_tokens: int, tokenizer: str, seq_len: int, val_fraction: float) -> None:
    """One ConfigError line when the corpus cannot hold a training and a validation window."""
    need = min_text_tokens(seq_len, val_fraction)
    if n_tokens < need:
        empty = " (empty file)" if n_tokens == 0 else ""
        raise ConfigError(f"data.path={path}: {n_tokens} tokens{empty} with data.tokenizer={tokenizer}; "
                          f"train.seq_len={seq_len} needs >= {need} (a window of {seq_len}+1 tokens in both "
                          f"the train and the validation split, data.val_fraction={val_fraction})")


def corpus_tokens(path: Path, tokenizer: str) -> int:
    """Token count of a corpus file, without building the dataset (bytes: no read at all)."""
    if tokenizer == "byte":
        return Path(path).stat().st_size
    return len(read_corpus(path, tokenizer))


# ----------------------------------------------------------------------------- entry point
def load_data(cfg: Any) -> LMData:
    """The dataset named by `cfg.data` (downloads Tiny Shakespeare once if needed)."""
    d = cfg.data
    if d.name in GENERATED:
        data = _generated(cfg)
        n = d.get("train_examples")
        if n is None and d.name == "mad":
            n = data.default_examples  # MAD's own count for the task
        if n:  # a fixed training set read in epochs (train/pool.py); 0 or null: a fresh batch every step
            from .pool import FixedPool

            return FixedPool(data, int(n))
        return data
    if d.path:
        path = Path(d.path).expanduser()
    else:  # shakespeare without a local copy
        from .download import cache_dir, fetch

        path = fetch(d.url, d.sha256, cache_dir(d.cache_dir), f"{d.name}.txt")
    if d.name == "shakespeare" and d.sha256 and d.path:
        from .download import sha256_of

        if sha256_of(path) != d.sha256:
            log.warning("data.path=%s is not the canonical Tiny Shakespeare (SHA-256 differs)", path)
    text = read_corpus(path, d.tokenizer)
    # Again here: a downloaded corpus was not there to check at validation time.
    check_corpus_length(path, len(text), d.tokenizer, int(cfg.train.seq_len), float(d.val_fraction))
    return TextData(text, d.tokenizer, float(d.val_fraction), int(cfg.seed), name=d.name)


def _generated(cfg: Any) -> LMData:
    d, seed = cfg.data, int(cfg.seed)
    if d.name == "synthetic":
        return AssociativeRecall(int(d.vocab_size), int(d.n_pairs), d.n_queries, seed)
    if d.name == "mqar":
        from .mqar import ZoologyMQAR

        return ZoologyMQAR(int(d.vocab_size), int(d.n_pairs), d.n_queries, float(d.power_a), seed,
                           d.get("train_pairs"), bool(d.random_non_queries))
    from .mad import MADTask, mad_sizes

    return MADTask(str(d.task), mad_sizes(d), seed)


def prepare_data(cfg: Any) -> LMData:
    """Load the dataset once. Its `vocab_size` is the model's vocabulary: the job resolves the spec
    with it (config/spec.py), and the config itself is never changed."""
    data = load_data(cfg)
    if cfg.model.vocab_size != data.vocab_size:
        log.info("model.vocab_size %s -> %d (from data=%s)", cfg.model.vocab_size, data.vocab_size, data.name)
    return data
