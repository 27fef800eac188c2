"""data=mad: one of MAD's six tasks (generators in mad_tasks.py), with MAD's default sizes.

`data.task` picks the task; every size field left null takes MAD's baseline value for that task
(mad-lab configs/tasks/*.yml and MADConfig): vocabulary, noise, copy count, motif sizes and the
number of training examples (a fixed training set, trained for several epochs as MAD does). The
sequence length is train.seq_len; MAD's own per task is MAD_DEFAULTS[task]["seq_len"], which
conf/experiment/mad/<task>.yaml sets. The metric is accuracy on the probed positions (MAD's test).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from ..errors import ConfigError
from .lm_data import _VAL_STREAM, LMData, step_generator
from .mad_tasks import TASKS, memorization_table

_RECALL = dict(seq_len=128, train_examples=12_800)
MAD_DEFAULTS: dict[str, dict[str, Any]] = {
    "in_context_recall": dict(vocab_size=16, noise_vocab_size=0, frac_noise=0.0, **_RECALL),
    "fuzzy_in_context_recall": dict(vocab_size=16, k_motif_size=3, v_motif_size=3, **_RECALL),
    "noisy_in_context_recall": dict(vocab_size=32, noise_vocab_size=16, frac_noise=0.2, **_RECALL),
    "selective_copying": dict(vocab_size=16, num_tokens_to_copy=16, seq_len=256, train_examples=12_800),
    "compression": dict(vocab_size=16, seq_len=32, train_examples=12_800),
    "memorization": dict(vocab_size=256, seq_len=32, train_examples=256),
}
SIZE_FIELDS = ("vocab_size", "noise_vocab_size", "frac_noise", "k_motif_size", "v_motif_size", "num_tokens_to_copy")


def mad_sizes(d: Any) -> dict[str, Any]:
    """The task's sizes: each data field that is set, else MAD's default (fields the task does not read: absent)."""
    task = d.get("task")
    if task not in MAD_DEFAULTS:
        raise ConfigError(f"data.task={task}: unknown MAD task; choose from [{', '.join(MAD_DEFAULTS)}]")
    defaults = MAD_DEFAULTS[task]
    out = {}
    for key in SIZE_FIELDS:
        value = d.get(key)
        if key not in defaults:
            if value is not None and key != "vocab_size":
                raise ConfigError(f"data.{key}={value}: data.task={task} does not use it; leave it null "
                                  f"(it sets: {', '.join(k for k in SIZE_FIELDS if k in defaults)})")
            continue
        out[key] = defaults[key] if value is None else value
    return out


def mad_problem(task: str, sizes: dict[str, Any], seq_len: int) -> Optional[str]:
    """Why these sizes cannot make the task's sequences (one line naming the field), or None."""
    V = int(sizes["vocab_size"])
    need_vocab = {"noisy_in_context_recall": 4 + sizes.get("noise_vocab_size", 0),
                  "in_context_recall": 2 + sizes.get("noise_vocab_size", 0),
                  "fuzzy_in_context_recall": 3 + max(sizes.get("k_motif_size", 1), sizes.get("v_motif_size", 1)) * 2,
                  "selective_copying": 3, "compression": 3, "memorization": 3}[task]
    if V < need_vocab:
        return f"data.vocab_size={V}: data.task={task} needs >= {need_vocab}"
    if not 0 <= float(sizes.get("frac_noise", 0.0)) < 1:
        return f"data.frac_noise={sizes['frac_noise']}: must be in [0, 1)"
    if float(sizes.get("frac_noise", 0.0)) > 0 and int(sizes.get("noise_vocab_size", 0)) < 1:
        return f"data.noise_vocab_size={sizes.get('noise_vocab_size')}: must be >= 1 when data.frac_noise > 0"
    for key in ("k_motif_size", "v_motif_size", "num_tokens_to_copy"):
        if key in sizes and int(sizes[key]) < 1:
            return f"data.{key}={sizes[key]}: must be >= 1"
    return _length_problem(task, sizes, seq_len)


def _length_problem(task: str, sizes: dict[str, Any], T: int) -> Optional[str]:
    if task.endswith("in_context_recall") and task != "fuzzy_in_context_recall" and (T % 2 or T < 4):
        return f"train.seq_len={T}: data.task={task} needs an even length >= 4 (key-value slots)"
    if task == "fuzzy_in_context_recall":
        need = 3 * (sizes["k_motif_size"] + sizes["v_motif_size"]) + 1
        if T < need:
            return f"train.seq_len={T}: data.task={task} with motifs of {sizes['k_motif_size']}/{sizes['v_motif_size']} needs >= {need}"
    if task == "selective_copying" and T <= 2 * sizes["num_tokens_to_copy"] + 1:
        return (f"train.seq_len={T}: data.task=selective_copying with data.num_tokens_to_copy="
                f"{sizes['num_tokens_to_copy']} needs > {2 * sizes['num_tokens_to_copy'] + 1}")
    if task in ("compression", "memorization") and T < 2:
        return f"train.seq_len={T}: data.task={task} needs >= 2"
    return None


class MADTask(LMData):
    """One MAD task: training batches with MAD's training targets, validation with its test targets."""

    name = "mad"
    metric_name = "acc"

    def __init__(self, task: str, sizes: dict[str, Any], seed: int):
        self.task, self.sizes, self.seed = task, dict(sizes), seed
        self.vocab_size = int(sizes["vocab_size"])
        self.default_examples = int(MAD_DEFAULTS[task]["train_examples"])  # data.train_examples=null
        self._gen = TASKS[task]
        self._extra: dict[str, Any] = {}
        if task == "memorization":
            self._extra["table"] = memorization_table(self.vocab_size, seed)

    def generate(self, g: torch.Generator, n: int, T: int, train: bool) -> tuple[Tensor, Tensor]:
        return self._gen(g, n, T, train=train, **self.sizes, **self._extra)

    def not_applicable(self, seq_len: int) -> Optional[str]:
        return mad_problem(self.task, self.sizes, seq_len)

    def train_batch(self, step: int, batch_size: int, seq_len: int) -> tuple[Tensor, Tensor]:
        return self.generate(step_generator(self.seed, 0, step), batch_size, seq_len, train=True)

    def val_batches(self, n_batches: int, batch_size: int, seq_len: int) -> list[tuple[Tensor, Tensor]]:
        g = step_generator(self.seed, _VAL_STREAM, seq_len)
        return [self.generate(g, batch_size, seq_len, train=False) for _ in range(n_batches)]

    def describe(self) -> dict:
        return {**super().describe(), "task": self.task, **self.sizes}
