"""attn.short_conv = K: a causal depthwise convolution of K taps over time on the fused q, k, v projection.

Based (Arora et al. 2024) and every model of Zoology carry one: Zoology's attention baseline is
Hybrid[BaseConv, MHA], and fla's GLA / DeltaNet have ShortConvolution. On associative recall a value
must be stored under the key one token before it; the convolution hands each token its predecessors
directly instead of making a layer learn a previous-token head. attn=linear needs it to recall at
all (Finding 13); softmax attention (attn=mha, gqa, mqa, local) gets off MQAR's plateau much sooner
with it (issue 26's pilots: without it, one head at d_model 16 stays at 0.07 recall after 1000 steps).
It starts as the identity (weight 1 on the current token), so a model with it begins as one without.

Decoding keeps the last K - 1 projections per layer in the cache (`conv`, (L, B, K-1, channels)):
RecurrentState for attn=linear, KVCache for softmax attention; constant in the context.
Not with attn=diff or attn=mla (their modules project q, k, v their own way) nor with a kernel that
runs its own projections (attn.impl=torch_mha).
"""
from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvCache(Protocol):
    """A decoding cache with room for the conv's inputs: `conv` (L, B, taps - 1, channels)."""

    conv: Tensor


WITH = ("linear", "mha", "gqa", "mqa", "local")  # the modules whose fused qkv projection the conv follows


class ShortConv(nn.Module):
    """Causal depthwise convolution over time, `taps` wide, on (B, T, channels); identity at init.
    With a cache (anything with a `conv` tensor (L, B, taps-1, channels): RecurrentState, KVCache) it
    continues from (and writes back) the last taps - 1 inputs of the layer."""

    def __init__(self, channels: int, taps: int):
        super().__init__()
        self.taps = taps
        self.weight = nn.Parameter(torch.zeros(channels, 1, taps))  # Conv1d's depthwise layout
        with torch.no_grad():
            self.weight[:, 0, -1] = 1.0  # the current token: the mixer without a conv to start from

    def forward(self, x: Tensor, cache: ConvCache | None = None, layer: int = 0) -> Tensor:
        B, T, C = x.shape
        past = x.new_zeros(B, self.taps - 1, C) if cache is None else cache.conv[layer].to(x.dtype)
        full = torch.cat([past, x], dim=1)  # (B, taps - 1 + T, C)
        if cache is not None:
            cache.conv[layer] = full[:, T:]  # the last taps - 1 inputs
        y = F.conv1d(full.transpose(1, 2), self.weight.to(x.dtype), groups=C)  # (B, C, T)
        # contiguous: q, k, v as strided as a Linear's output, else SDPA on CPU falls back to its math
        # kernel and materialises the (T, T) scores (traced: 2,048 more saved elements a token at T=256)
        return y.transpose(1, 2).contiguous()  # (B, T, C)


def taps(cfg: Any) -> int:
    """attn.short_conv of a config, 0 without one."""
    return int(cfg.attn.get("short_conv") or 0)


def qkv_channels(spec: Any) -> int:
    return (spec.n_heads + 2 * spec.n_kv_heads) * spec.head_dim


def flops(spec: Any) -> float:
    """Forward FLOPs per token and layer: a multiply-add per tap and channel, 2·K·(H + 2·Hkv)·D."""
    return 2 * taps(spec.cfg) * qkv_channels(spec)


def state_elements(spec: Any) -> int:
    """What decoding keeps per sequence (all layers): the last K - 1 projections, L · (K - 1) · (H + 2·Hkv)·D."""
    return spec.n_layers * max(taps(spec.cfg) - 1, 0) * qkv_channels(spec)


def config_problem(cfg: Any, owns_projection: bool) -> str | None:
    """One line when attn.short_conv is set to a bad value or where it cannot apply; else None."""
    k, name = cfg.attn.get("short_conv"), cfg.attn.name
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        return f"attn.short_conv={k}: must be null (none) or an integer >= 2 (taps of the causal convolution)"
    if name not in WITH:
        return (f"attn.short_conv={k}: not with attn={name} (its module projects q, k, v its own way); "
                f"use attn={', '.join(WITH)}")
    if owns_projection:
        return f"attn.short_conv={k}: not with attn.impl={cfg.attn.impl} (it runs its own q, k, v projections)"
    return None
