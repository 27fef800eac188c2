"""GPT: token embedding → positional scheme → N blocks → final norm → LM head.

Readable top to bottom; every ablation axis is a component picked by name from
its registry, so this file has no per-option branches.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..registry import FFNS, NORMS, POSITIONAL
from .attention import AttnContext, CausalSelfAttention, KVCache
from .kernels import MaskSpec, get_kernel
from . import mla


def resolved_init_std(cfg: Any) -> float:
    """model.init_std, or 1/sqrt(model.d_model) when it is null, so the init follows the width
    (the value results.json records under model.init_std)."""
    std = cfg.model.get("init_std")
    return float(std) if std is not None else 1.0 / math.sqrt(cfg.model.d_model)


class Block(nn.Module):
    """Pre-LN: x + f(norm(x)) (GPT-2). Post-LN: norm(x + f(x)) (Vaswani et al. 2017)."""

    def __init__(self, attn: nn.Module, ffn: nn.Module, norm1: nn.Module, norm2: nn.Module, placement: str):
        super().__init__()
        self.attn, self.ffn, self.norm1, self.norm2 = attn, ffn, norm1, norm2
        self.pre = placement == "pre"

    def forward(self, x: Tensor, ctx: AttnContext, cache: Optional[KVCache] = None, layer: int = 0) -> Tensor:
        if self.pre:
            x = x + self.attn(self.norm1(x), ctx, cache, layer)
            return x + self.ffn(self.norm2(x))
        x = self.norm1(x + self.attn(x, ctx, cache, layer))
        return self.norm2(x + self.ffn(x))


class GPT(nn.Module):
    def __init__(self, cfg: Any, n_kv_heads: int):
        super().__init__()
        m, a = cfg.model, cfg.attn
        self.n_layers, self.n_kv_heads, self.init_std = m.n_layers, n_kv_heads, resolved_init_std(cfg)
        bias = bool(m.get("bias", True))  # model.bias=false: no bias in any Linear or LayerNorm (nanoGPT)
        self.head_dim = m.d_model // a.n_heads
        self.pre_norm = cfg.norm.placement == "pre"
        self.wte = nn.Embedding(m.vocab_size, m.d_model)
        self.pos = POSITIONAL.get(cfg.pos.name).from_config(cfg)
        self.drop = nn.Dropout(m.dropout)
        norm = partial(NORMS.get(cfg.norm.name), bias=bias)
        ffn = FFNS.get(cfg.ffn.name)
        qk_norm = cfg.norm.get("qk_norm", False)
        self.blocks = nn.ModuleList(
            Block(
                mla.build(cfg, get_kernel(a.impl)) if a.name == "mla" else
                CausalSelfAttention(m.d_model, a.n_heads, n_kv_heads, get_kernel(a.impl), a.window,
                                    a.qkv_bias, a.dropout, m.dropout,
                                    q_norm=norm(self.head_dim, cfg.norm.eps) if qk_norm else None,
                                    k_norm=norm(self.head_dim, cfg.norm.eps) if qk_norm else None,
                                    softcap=a.get("softcap"), out_bias=bias),
                ffn(m.d_model, cfg.ffn.mult, cfg.ffn.multiple_of, m.dropout,
                    approximate=cfg.ffn.get("approximate", "none"), bias=bias),
                norm(m.d_model, cfg.norm.eps), norm(m.d_model, cfg.norm.eps), cfg.norm.placement,
            )
            for _ in range(m.n_layers)
        )
        # Post-LN blocks already end in a norm; a final norm is the pre-LN convention.
        self.norm_f = norm(m.d_model, cfg.norm.eps) if self.pre_norm else nn.Identity()
        self.lm_head = nn.Linear(m.d_model, m.vocab_size, bias=False)
        if m.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.final_softcap = m.get("final_softcap")  # Gemma 2 logit soft-capping; None = off
        if not bias:  # components that take no bias flag (e.g. attn=mla's projections) lose theirs here
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.LayerNorm)) and module.bias is not None:
                    module.register_parameter("bias", None)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2 init: N(0, model.init_std); residual output projections scaled by 1/sqrt(2·layers)."""
        std = self.init_std
        if isinstance(module, nn.Linear):
            std = std / math.sqrt(2 * self.n_layers) if getattr(module, "residual_proj", False) else std
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)

    def init_cache(self, batch_size: int, max_len: int, device: Optional[torch.device] = None,
                   dtype: Optional[torch.dtype] = None) -> KVCache:
        """An empty KV cache for `max_len` tokens; GQA/MQA store only n_kv_heads."""
        kernel = self.blocks[0].attn.kernel
        if not kernel.supports_cache:  # it would ignore the cache and silently attend to the chunk only
            raise ValueError(f"attn.impl={kernel.name} has no KV cache; use another attn.impl for decoding")
        if self.pos.max_len is not None and max_len > self.pos.max_len:
            raise ValueError(f"max_len={max_len} > model.context_length={self.pos.max_len} with pos=learned")
        ref = self.wte.weight
        if isinstance(self.blocks[0].attn, mla.MultiHeadLatentAttention):  # only the latent + shared RoPE key
            d = self.blocks[0].attn.dims
            return mla.LatentCache(self.n_layers, batch_size, max_len, d.kv_rank, d.rope,
                                   device or ref.device, dtype or ref.dtype)
        return KVCache(self.n_layers, batch_size, self.n_kv_heads, max_len, self.head_dim,
                       device or ref.device, dtype or ref.dtype)

    def forward(self, idx: Tensor, cache: Optional[KVCache] = None) -> Tensor:
        """idx (B, T) → logits (B, T, vocab). With a cache: logits for this chunk only,
        positions continue after what the cache holds, and the cache is updated."""
        B, T = idx.shape
        offset = cache.pos if cache is not None else 0
        if self.pos.max_len is not None and offset + T > self.pos.max_len:
            raise ValueError(f"sequence length {offset + T} > model.context_length={self.pos.max_len} with pos=learned")
        if cache is not None and offset + T > cache.max_len:
            raise ValueError(f"KV cache full: {offset} + {T} tokens > max_len={cache.max_len}")
        pos = torch.arange(offset, offset + T, device=idx.device)  # (T,)
        x = self.drop(self.pos.embed(self.wte(idx), pos))  # (B, T, C)
        ctx = AttnContext(spec=MaskSpec(q_offset=offset), rot=self.pos.rotary(pos), bias=self.pos.bias(pos, offset + T))
        for i, block in enumerate(self.blocks):
            x = block(x, ctx, cache, i)
        if cache is not None:
            cache.advance(T)
        logits = self.lm_head(self.norm_f(x))  # (B, T, vocab)
        if self.final_softcap is not None:
            logits = self.final_softcap * torch.tanh(logits / self.final_softcap)
        return logits
