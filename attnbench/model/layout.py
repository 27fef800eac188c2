"""Head layout: MHA, GQA and MQA differ only in the number of KV heads; MLA has none (one latent)."""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from ..errors import ConfigError


def resolve_layout(cfg: DictConfig) -> int:
    """The number of KV heads implied by `attn.name` and `attn.n_kv_heads`."""
    a = cfg.attn
    n_kv = a.n_kv_heads
    if a.name == "mla":  # every query head gets its own k and v, up-projected from the shared latent
        if n_kv is not None:
            raise ConfigError(f"attn.n_kv_heads={n_kv}: attn=mla has no KV heads (it caches one latent of "
                              "attn.kv_lora_rank dims); leave it null")
        return int(a.n_heads)
    if a.name == "mqa":
        if n_kv not in (None, 1):
            raise ConfigError(f"attn.n_kv_heads={n_kv}: attn=mqa uses exactly 1 KV head (use attn=gqa)")
        return 1
    if a.name in ("mha", "local"):
        if n_kv not in (None, a.n_heads):
            raise ConfigError(
                f"attn.n_kv_heads={n_kv}: attn={a.name} uses n_kv_heads = attn.n_heads ({a.n_heads}); use attn=gqa"
            )
        return int(a.n_heads)
    return int(a.n_heads if n_kv is None else n_kv)  # gqa


@dataclass(frozen=True)
class MLADims:
    """Resolved MLA sizes. Defaults (null in the config) follow DeepSeek-V2's ratios with
    D = d_model / n_heads: qk_nope = v = D, rope = D/2, kv_lora_rank = 4·D, q full rank."""

    n_heads: int
    kv_rank: int  # attn.kv_lora_rank
    q_rank: int | None  # attn.q_lora_rank; None = full-rank query projection
    nope: int  # attn.qk_nope_head_dim
    rope: int  # attn.rope_head_dim
    v: int  # attn.v_head_dim

    @property
    def qk(self) -> int:
        return self.nope + self.rope

    @classmethod
    def from_cfg(cfg_cls, cfg: DictConfig) -> MLADims:
        a = cfg.attn
        D = cfg.model.d_model // a.n_heads

        def pick(value: int | None, default: int) -> int:
            return default if value is None else int(value)

        return cfg_cls(n_heads=int(a.n_heads), kv_rank=pick(a.kv_lora_rank, 4 * D),
                       q_rank=None if a.q_lora_rank is None else int(a.q_lora_rank),
                       nope=pick(a.qk_nope_head_dim, D), rope=pick(a.rope_head_dim, D // 2), v=pick(a.v_head_dim, D))


def rotary_dim(cfg: DictConfig) -> int:
    """Channels per head that RoPE rotates: d_model / n_heads, attn=mla's decoupled rope_head_dim, attn=diff's half."""
    if cfg.attn.name == "mla":
        return MLADims.from_cfg(cfg).rope
    if cfg.attn.name == "diff":  # each d = D/2 half of q and k is rotated on its own (model/differential.py)
        return int(cfg.model.d_model) // int(cfg.attn.n_heads) // 2
    return int(cfg.model.d_model) // int(cfg.attn.n_heads)
