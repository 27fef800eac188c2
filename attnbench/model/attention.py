"""Causal self-attention: fused QKV projection, head layout (MHA/GQA/MQA = one
number, `n_kv_heads`), positional hooks, a pluggable kernel and a KV cache."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from .kernels import Kernel, MaskSpec, default_scale
from .position import Rotary, apply_rotary


@dataclass
class AttnContext:
    """Per-forward inputs shared by every layer (computed once by the GPT)."""

    spec: MaskSpec
    rot: Optional[Rotary] = None  # RoPE (cos, sin), each (T, D)
    bias: Optional[Tensor] = None  # ALiBi (H, T, S)


class KVCache:
    """Pre-allocated keys and values for every layer: (L, B, Hkv, max_len, D) each.

    GQA/MQA store only their n_kv_heads. `pos` counts the tokens already cached;
    the GPT advances it after a chunk has gone through every layer."""

    def __init__(self, n_layers: int, batch_size: int, n_kv_heads: int, max_len: int, head_dim: int,
                 device: torch.device, dtype: torch.dtype):
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write a chunk's k, v (B, Hkv, T, D); return everything cached so far (B, Hkv, S, D)."""
        T = k.shape[2]
        end = self.pos + T
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, T: int) -> None:
        self.pos += T

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, kernel: Kernel, window: Optional[int] = None,
                 qkv_bias: bool = False, dropout: float = 0.0, resid_dropout: float = 0.0):
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.window, self.dropout, self.kernel = window, dropout, kernel
        # One fused projection: q (H·D) | k (Hkv·D) | v (Hkv·D). Its shape depends only on
        # the layout, never on the kernel, so state_dicts move between kernels.
        self.qkv = nn.Linear(d_model, (n_heads + 2 * n_kv_heads) * self.head_dim, bias=qkv_bias)
        self.out = nn.Linear(d_model, d_model)
        self.out.residual_proj = True
        self.resid_drop = nn.Dropout(resid_dropout)
        self.scale = default_scale(self.head_dim)

    def forward(self, x: Tensor, ctx: AttnContext, cache: Optional[KVCache] = None, layer: int = 0) -> Tensor:
        B, T, C = x.shape
        spec = MaskSpec(causal=ctx.spec.causal, window=self.window, q_offset=ctx.spec.q_offset)
        if self.kernel.owns_projection:
            return self.resid_drop(self.kernel.module_forward(self, x, spec, ctx.bias))
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.qkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, Hkv, D).transpose(1, 2)  # (B, Hkv, T, D)
        v = v.view(B, T, Hkv, D).transpose(1, 2)  # (B, Hkv, T, D)
        if ctx.rot is not None:
            q, k = apply_rotary(q, ctx.rot), apply_rotary(k, ctx.rot)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, Hkv, S, D), S = cached + T
        drop = self.dropout if self.training else 0.0
        y = self.kernel(q, k, v, spec=spec, bias=ctx.bias, scale=self.scale, dropout=drop)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.out(y))
