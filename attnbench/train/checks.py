"""Validation of the `train` and `data` config groups (called from config.validate).

Config checks: nothing is downloaded or allocated here (a local corpus is read once, to count its tokens). Each failure is a
one-line ConfigError naming the key and what is allowed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .data import DATASETS, GENERATED, TOKENIZERS, check_corpus_length, corpus_tokens


def _at_least(key: str, value: Any, low: float, integer: bool = True, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value < low:
        raise ConfigError(f"{key}={value}: must be {'an integer' if integer else 'a number'} >= {low}")


def check_train(tc: Any) -> None:
    for key, low in (("steps", 0), ("batch_size", 1), ("seq_len", 1), ("warmup_steps", 0), ("eval_every", 0),
                     ("eval_batches", 1), ("log_every", 1), ("checkpoint_every", 0), ("sample_tokens", 0),
                     ("pos_buckets", 0)):
        _at_least(f"train.{key}", tc[key], low)
    for key in ("weight_decay", "grad_clip"):
        _at_least(f"train.{key}", tc[key], 0, integer=False)
    if not tc.lr > 0:
        raise ConfigError(f"train.lr={tc.lr}: must be > 0")
    if not 0 <= tc.min_lr_ratio <= 1:
        raise ConfigError(f"train.min_lr_ratio={tc.min_lr_ratio}: must be in [0, 1]")
    for key in ("beta1", "beta2"):
        if not 0 <= tc[key] < 1:
            raise ConfigError(f"train.{key}={tc[key]}: must be in [0, 1)")
    for t in tc.eval_seq_lens:
        _at_least("train.eval_seq_lens", t, 1)
    _at_least("train.eval_window", tc.get("eval_window"), 1, allow_none=True)
    if tc.get("init_from") is not None and not Path(tc.init_from).expanduser().exists():
        raise ConfigError(f"train.init_from={tc.init_from}: no such checkpoint file or run directory")


def check_data(cfg: Any) -> None:
    d = cfg.data
    if d.name not in DATASETS:
        raise ConfigError(f"data={d.name}: unknown option; choose from [{', '.join(DATASETS)}]")
    _check_owned_fields(d)
    if d.name in GENERATED:
        _at_least("data.train_examples", d.get("train_examples"), 0, allow_none=True)
    if d.name == "synthetic":
        return check_synthetic(cfg)
    if d.name == "mqar":
        from .mqar import check_mqar

        return check_mqar(d, int(cfg.train.seq_len))
    if d.name == "mad":
        from .mad import mad_problem, mad_sizes

        problem = mad_problem(str(d.task), mad_sizes(d), int(cfg.train.seq_len))
        if problem:
            raise ConfigError(problem)
        return None
    if d.tokenizer not in TOKENIZERS:
        raise ConfigError(f"data.tokenizer={d.tokenizer}: not allowed; choose from [{', '.join(TOKENIZERS)}]")
    if not 0 < d.val_fraction < 1:
        raise ConfigError(f"data.val_fraction={d.val_fraction}: must be in (0, 1)")
    if d.path is None and (d.name == "text" or not d.url):
        raise ConfigError(f"data.path=null: data={d.name} needs data.path=/path/to/file.txt")
    if d.path is not None and not Path(d.path).expanduser().is_file():
        raise ConfigError(f"data.path={d.path}: no such file")
    if d.path is not None:  # before anything is built: an empty or short file fails here, in one line
        path = Path(d.path).expanduser()
        check_corpus_length(path, corpus_tokens(path, d.tokenizer), d.tokenizer, int(cfg.train.seq_len),
                            float(d.val_fraction))


def _check_owned_fields(d: Any) -> None:
    """A field of another dataset, set here, would do nothing: refused rather than ignored."""
    if d.get("vocab_size") is None and d.name in ("synthetic", "mqar"):
        raise ConfigError(f"data.vocab_size=null: data={d.name} needs a vocabulary size (only data=mad has defaults)")
    owners = {"task": ("mad",), "train_pairs": ("mqar",), "train_examples": GENERATED}
    for key, names in owners.items():
        if d.get(key) is not None and d.name not in names:
            raise ConfigError(f"data.{key}={d.get(key)}: only data={' | '.join(names)} reads it; "
                              f"leave it null with data={d.name}")


def check_synthetic(cfg: Any) -> None:
    d, T = cfg.data, cfg.train.seq_len
    _at_least("data.n_pairs", d.n_pairs, 1)
    _at_least("data.n_queries", d.n_queries, 1, allow_none=True)
    n_keys = (d.vocab_size - 1) // 2  # token 0 is padding; keys and values split the rest
    if n_keys < d.n_pairs or d.vocab_size - 1 - n_keys < 1:
        raise ConfigError(f"data.vocab_size={d.vocab_size}: needs >= {2 * d.n_pairs + 1} "
                          f"(padding + {d.n_pairs} distinct keys + values)")
    need = 2 * (d.n_pairs + (d.n_queries or d.n_pairs))
    if T < need:
        raise ConfigError(f"train.seq_len={T}: data=synthetic needs >= {need} (2 x (data.n_pairs + data.n_queries))")


def check(cfg: Any) -> None:
    """All train/data checks; only meaningful when the train stage runs."""
    check_train(cfg.train)
    check_data(cfg)
    if cfg.train.get("eval_window") is not None and cfg.attn.name == "mla":
        raise ConfigError(f"train.eval_window={cfg.train.eval_window}: attn=mla has no sliding window; leave it null")
