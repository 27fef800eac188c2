"""The extension path of docs/extending.md stays real: a kernel and a positional scheme defined
here, outside the package, registered by name, run through a whole job (bench + train)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attnbench import load_config
from attnbench.job import run_job
from attnbench.model.kernels import Kernel, manual_attention
from attnbench.model.position import PositionalScheme
from attnbench.registry import KERNELS, POSITIONAL

CALLS = {"kernel": 0}


class ToyKernel(Kernel):
    """The reference maths, counting its calls; declares no GQA so the capability check is exercised."""

    name = "toy_kernel"
    supports_gqa = False

    def __call__(self, q, k, v, *, spec, bias, scale, dropout=0.0, softcap=None):
        CALLS["kernel"] += 1
        return manual_attention(q, k, v, spec=spec, bias=bias, scale=scale, dropout=dropout)


class ToyPositions(PositionalScheme):
    """A learned per-position scalar gate on the token embeddings, unlimited length (no table)."""

    def __init__(self, d_model, n_heads, context_length, base=10000.0):
        super().__init__(d_model, n_heads, context_length)
        self.slope = nn.Parameter(torch.zeros(d_model))

    def embed(self, x, pos):  # x (B, T, C), pos (T,)
        return x + torch.log1p(pos.float())[:, None] * self.slope  # (B, T, C) + (T, C)


@pytest.fixture
def registered():
    KERNELS.register("toy_kernel")(ToyKernel)
    POSITIONAL.register("toy_pos")(ToyPositions)
    try:
        yield
    finally:  # registries are process-wide: leave them as they were
        KERNELS._items.pop("toy_kernel", None)
        POSITIONAL._items.pop("toy_pos", None)


TINY = ["device=cpu", "logger=none", "model.n_layers=1", "model.d_model=32", "attn.n_heads=2",
        "bench=quick", "bench.seq_lens=[16]", "bench.repeats=1", "bench.warmup=0", "bench.memory=none",
        "train.steps=4", "train.batch_size=4", "train.seq_len=16", "data.n_pairs=2", "data.n_queries=2", "train.eval_every=0", "train.eval_batches=1",
        "train.sample_tokens=0"]


def test_toy_kernel_and_positional_scheme_run_through_a_job(registered, tmp_path):
    cfg = load_config([*TINY, "attn.impl=toy_kernel", "pos.name=toy_pos"])
    CALLS["kernel"] = 0
    res = run_job(cfg, tmp_path)
    assert res["status"] == "ok", res["error"]
    assert CALLS["kernel"] > 0  # the job attended through the toy kernel
    assert {r["status"] for r in res["bench"]} == {"ok"}
    assert res["model"]["params_by_component"]["embedding"] >= 32  # the toy scheme's parameters, as embedding
    assert math.isfinite(res["train"]["val_loss"])
    assert res["config"]["pos"]["name"] == "toy_pos" and res["config"]["attn"]["impl"] == "toy_kernel"


def test_toy_kernel_capabilities_are_checked(registered):
    from attnbench import ConfigError

    with pytest.raises(ConfigError, match=r"attn.impl=toy_kernel: needs n_kv_heads = n_heads, so not attn=mqa"):
        load_config([*TINY, "attn=mqa", "attn.impl=toy_kernel"])


def test_unregistered_names_are_still_rejected():
    from attnbench import ConfigError

    with pytest.raises(ConfigError, match=r"pos=toy_pos: unknown option"):
        load_config([*TINY, "pos.name=toy_pos"])
