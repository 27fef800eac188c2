"""Head layout: MHA, GQA and MQA differ only in the number of KV heads."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError


def resolve_layout(cfg: Any) -> int:
    """The number of KV heads implied by `attn.name` and `attn.n_kv_heads`."""
    a = cfg.attn
    n_kv = a.n_kv_heads
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
