"""Model construction from a composed config."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import ffn, kernels, norm, position  # noqa: F401  (importing a component registers it)
from .gpt import GPT


def build_model(cfg: Any) -> GPT:
    """The GPT for a composed (and validated) config, on CPU in fp32.

    Device placement and dtype belong to the caller (bench / train stages)."""
    from .layout import resolve_layout

    torch.manual_seed(int(cfg.seed))
    return GPT(cfg, resolve_layout(cfg))


def param_breakdown(model: nn.Module) -> dict[str, int]:
    """Parameters by component; tied weights are counted once (under embedding)."""
    groups = {"embedding": 0, "attention": 0, "ffn": 0, "norm": 0, "head": 0}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if name.startswith(("wte", "pos.")):
            key = "embedding"
        elif ".attn." in name:
            key = "attention"
        elif ".ffn." in name:
            key = "ffn"
        elif "norm" in name:
            key = "norm"
        else:
            key = "head"
        groups[key] += p.numel()
    groups["total"] = sum(groups.values())
    groups["non_embedding"] = groups["total"] - groups["embedding"]
    return groups


def kv_cache_bytes_per_token(cfg: Any, bytes_per_element: int = 4) -> int:
    """2 (k and v) · layers · n_kv_heads · head_dim · bytes per element;
    attn=mla: layers · (kv_lora_rank + rope_head_dim) · bytes (the latent and the shared RoPE key)."""
    from .layout import resolve_layout

    if cfg.attn.name == "mla":
        from .mla import kv_bytes_per_token

        return kv_bytes_per_token(cfg, bytes_per_element)
    head_dim = cfg.model.d_model // cfg.attn.n_heads
    return 2 * cfg.model.n_layers * resolve_layout(cfg) * head_dim * bytes_per_element
