"""Head layout: MHA, GQA and MQA differ only in the number of KV heads; MLA has none (one latent)."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError


def resolve_layout(cfg: Any) -> int:
    """The number of KV heads implied by `attn.name` and `attn.n_kv_heads`."""
    a = cfg.attn
    n_kv = a.n_kv_heads
    if a.name == "mla":  # every query head gets its own k and v, up-projected from the shared latent
        if n_kv is not None:
            raise ConfigError(f"attn.n_kv_heads={n_kv}: attn=mla has no KV heads (it caches one latent of "
                              "attn.kv_lora_rank dims); leave it null")
        return a.n_heads
    if a.name == "mqa":
        if n_kv not in (None, 1):
            raise ConfigError(f"attn.n_kv_heads={n_kv}: attn=mqa uses exactly 1 KV head (use attn=gqa)")
        return 1
    if a.name in ("mha", "local"):
        if n_kv not in (None, a.n_heads):
            raise ConfigError(
                f"attn.n_kv_heads={n_kv}: attn={a.name} uses n_kv_heads = attn.n_heads ({a.n_heads}); use attn=gqa"
            )
        return a.n_heads
    return a.n_heads if n_kv is None else n_kv  # gqa


def rotary_dim(cfg: Any) -> int:
    """Channels per head that RoPE rotates: d_model / n_heads, or attn=mla's decoupled rope_head_dim."""
    if cfg.attn.name == "mla":
        from .mla import MLADims

        return MLADims.from_cfg(cfg).rope
    return cfg.model.d_model // cfg.attn.n_heads
