"""GPT: token embedding → positional scheme → N blocks → final norm → LM head.

Readable top to bottom; every ablation axis is a component picked by name from
its registry, so this file has no per-option branches.
"""
from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor, nn

from ..registry import FFNS, NORMS, POSITIONAL
from ..spec import Spec
from . import differential, linear_attention, mla, short_conv  # noqa: F401  (importing a mechanism registers it)
from .attention import AttnContext, CausalSelfAttention, KVCache
from .cache import Cache
from .gating import build_gate
from .kernels import MaskSpec, get_kernel
from .mechanism import mechanism_of
from .tags import is_residual, tag_group


class Block(nn.Module):
    """Pre-LN: x + f(norm(x)) (GPT-2). Post-LN: norm(x + f(x)) (Vaswani et al. 2017)."""

    def __init__(self, attn: nn.Module, ffn: nn.Module | None, norm1: nn.Module, norm2: nn.Module | None,
                 placement: str):
        super().__init__()
        self.attn, self.norm1 = attn, norm1
        self.ffn: nn.Module | None = ffn  # None: ffn=none, attention only (then no second norm either)
        self.norm2: nn.Module | None = norm2 if ffn is not None else None
        self.pre = placement == "pre"

    def forward(self, x: Tensor, ctx: AttnContext, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        ffn, norm2 = self.ffn, self.norm2
        if self.pre:
            x = x + self.attn(self.norm1(x), ctx, cache, layer)
            return x if ffn is None or norm2 is None else x + ffn(norm2(x))
        x = self.norm1(x + self.attn(x, ctx, cache, layer))
        return x if ffn is None or norm2 is None else norm2(x + ffn(x))


class GPT(nn.Module):
    """Built from a resolved spec (config/spec.py): sizes come from the spec, plain switches
    (dropout, eps, biases, kernel) from the spec's read-only config copy."""

    def __init__(self, spec: Spec):
        super().__init__()
        cfg = spec.cfg
        m, a, d = cfg.model, cfg.attn, spec.d_model
        self.n_layers, self.n_kv_heads, self.init_std = spec.n_layers, spec.n_kv_heads, spec.init_std
        bias = bool(m.bias)  # model.bias=false: no bias in any Linear or LayerNorm (nanoGPT)
        self.head_dim = spec.head_dim
        self.pre_norm = cfg.norm.placement == "pre"
        self.wte = nn.Embedding(spec.vocab_size, d)
        tag_group(self.wte, "embedding")
        self.pos = POSITIONAL.get(cfg.pos.name).from_spec(spec)
        self.drop = nn.Dropout(m.dropout)
        norm = partial(NORMS.get(cfg.norm.name), bias=bias)
        ffn = FFNS.get(cfg.ffn.name)
        qk_norm = cfg.norm.qk_norm
        self.mechanism = mechanism_of(cfg)  # attn=diff / linear (model/mechanism.py); None = softmax or MLA

        def attention(layer: int) -> nn.Module:
            if self.mechanism is not None:
                return self.mechanism.build(spec, get_kernel(a.impl), layer)
            if spec.mla is not None:
                return mla.build(spec, get_kernel(a.impl))
            return CausalSelfAttention(d, spec.n_heads, spec.n_kv_heads, get_kernel(a.impl), a.window,
                                       a.qkv_bias, a.dropout, m.dropout,
                                       q_norm=norm(spec.head_dim, cfg.norm.eps) if qk_norm else None,
                                       k_norm=norm(spec.head_dim, cfg.norm.eps) if qk_norm else None,
                                       softcap=a.softcap, out_bias=bias,
                                       gate=build_gate(cfg, d, spec.n_heads, spec.head_dim), sinks=bool(a.sinks),
                                       short_conv=short_conv.taps(cfg))

        absent = getattr(ffn, "absent", False)  # ffn=none (model/ffn_none.py)
        self.blocks = nn.ModuleList(
            Block(
                attention(i),
                None if absent else ffn(d, cfg.ffn.mult, cfg.ffn.multiple_of, m.dropout,
                                        approximate=cfg.ffn.approximate, bias=bias),
                norm(d, cfg.norm.eps), None if absent else norm(d, cfg.norm.eps), cfg.norm.placement,
            )
            for i in range(spec.n_layers)
        )
        # Post-LN blocks already end in a norm; a final norm is the pre-LN convention.
        self.norm_f = norm(d, cfg.norm.eps) if self.pre_norm else nn.Identity()
        self.lm_head = nn.Linear(d, spec.vocab_size, bias=False)
        tag_group(self.lm_head, "head")
        if m.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.final_softcap = m.final_softcap  # Gemma 2 logit soft-capping; None = off
        if not bias:  # components that take no bias flag (e.g. attn=mla's projections) lose theirs here
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.LayerNorm)) and module.bias is not None:
                    module.register_parameter("bias", None)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2 init: N(0, model.init_std); residual output projections scaled by 1/sqrt(2·layers)."""
        std = self.init_std
        if isinstance(module, nn.Linear):
            std = std / math.sqrt(2 * self.n_layers) if is_residual(module) else std
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)

    def init_cache(self, batch_size: int, max_len: int, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> Cache:
        """An empty KV cache for `max_len` tokens; GQA/MQA store only n_kv_heads. attn=linear: its
        constant recurrent state (model/linear_attention.py), whatever `max_len`."""
        kernel = getattr(self.blocks[0].attn, "kernel", None)  # attn=linear has none
        if kernel is not None and not kernel.supports_cache:  # it would ignore the cache and silently attend to the chunk only
            raise ValueError(f"attn.impl={kernel.name} has no KV cache; use another attn.impl for decoding")
        if self.pos.max_len is not None and max_len > self.pos.max_len:
            raise ValueError(f"max_len={max_len} > model.context_length={self.pos.max_len} with pos=learned")
        ref = self.wte.weight
        own = self.mechanism.init_cache(self, batch_size, max_len, device or ref.device, dtype or ref.dtype) \
            if self.mechanism is not None else None
        if own is not None:
            return own
        if isinstance(self.blocks[0].attn, mla.MultiHeadLatentAttention):  # only the latent + shared RoPE key
            d = self.blocks[0].attn.dims
            return mla.LatentCache(self.n_layers, batch_size, max_len, d.kv_rank, d.rope,
                                   device or ref.device, dtype or ref.dtype)
        conv = getattr(self.blocks[0].attn, "conv", None)  # attn.short_conv: its last inputs too
        return KVCache(self.n_layers, batch_size, self.n_kv_heads, max_len, self.head_dim,
                       device or ref.device, dtype or ref.dtype,
                       conv.taps if conv is not None else 0, conv.weight.shape[0] if conv is not None else 0)

    def forward(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
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
