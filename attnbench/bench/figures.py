"""Analytic model figures shared by the CLI summary, bench and report."""
from __future__ import annotations

from typing import Any

from torch import nn

from .flops import flops_per_token_fwd, flops_per_token_train
from ..device import DTYPES
from ..model import kv_cache_bytes_per_token, param_breakdown, recurrent_state_bytes
from ..config.spec import as_spec


def reference_seq_len(cfg: Any) -> int:
    """The length the per-token FLOPs are quoted at: training length if training, else the longest bench length."""
    if "train" in cfg.stages:
        return int(cfg.train.seq_len)
    return int(max(cfg.bench.seq_lens)) if cfg.bench.seq_lens else int(cfg.model.context_length)


def model_figures(cfg: Any, model: nn.Module) -> dict:
    """Parameters, FLOPs/token, KV bytes/token and the resolved init std of a spec (or config) and its model."""
    spec = as_spec(cfg)
    cfg = spec.cfg
    p = param_breakdown(model)
    T = reference_seq_len(cfg)
    elem = DTYPES[cfg.device.dtype].itemsize  # the KV cache is kept in the compute dtype
    return {
        "params": p["total"],
        "non_embedding_params": p["non_embedding"],
        "params_by_component": {k: v for k, v in p.items() if k not in ("total", "non_embedding")},
        "flops_per_token_fwd": flops_per_token_fwd(spec, T),
        "flops_per_token_train": flops_per_token_train(spec, T),
        "flops_seq_len": T,
        "kv_cache_bytes_per_token": kv_cache_bytes_per_token(spec, elem),
        # per sequence, constant in its length: attn=linear's recurrent state (0 for a KV cache)
        "recurrent_state_bytes": recurrent_state_bytes(spec, elem),
        "init_std": spec.init_std,  # model.init_std=null resolved to 1/sqrt(d_model)
    }
