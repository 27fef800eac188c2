"""Causal self-attention: fused QKV projection, head layout (MHA/GQA/MQA = one
number, `n_kv_heads`), positional hooks, a pluggable kernel and a KV cache."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, cast

import torch
from torch import Tensor, nn

from .cache import Cache
from .gating import OutputGate
from .kernels import Kernel, MaskSpec, allowed_mask, default_scale
from .position import Rotary, apply_rotary
from .short_conv import ShortConv
from .tags import mark_residual


@dataclass
class AttnContext:
    """Per-forward inputs shared by every layer (computed once by the GPT)."""

    spec: MaskSpec
    rot: Rotary | None = None  # RoPE (cos, sin), each (T, D)
    bias: Tensor | None = None  # ALiBi (H, T, S)


class KVCache(Cache):
    """Pre-allocated keys and values for every layer: (L, B, Hkv, max_len, D) each.

    GQA/MQA store only their n_kv_heads. `pos` counts the tokens already cached;
    the GPT advances it after a chunk has gone through every layer. attn.short_conv = K: also the
    last K - 1 q/k/v projections per layer, `conv` (L, B, K-1, channels) (model/short_conv.py)."""

    def __init__(self, n_layers: int, batch_size: int, n_kv_heads: int, max_len: int, head_dim: int,
                 device: torch.device, dtype: torch.dtype, conv_taps: int = 0, conv_channels: int = 0) -> None:
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.conv = torch.zeros(n_layers, batch_size, max(conv_taps - 1, 0), conv_channels, device=device, dtype=dtype)
        super().__init__(max_len)

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write a chunk's k, v (B, Hkv, T, D); return everything cached so far (B, Hkv, S, D)."""
        T = k.shape[2]
        end = self.pos + T
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def tensors(self) -> tuple[Tensor, ...]:
        return self.k, self.v, self.conv

    def snapshot(self) -> object:
        return self.pos, self.conv.clone()  # the conv's inputs are overwritten in place, the k/v rows are not

    def restore(self, snap: object) -> None:
        """Back to a snapshot: what was written after it is overwritten by the next update."""
        assert isinstance(snap, tuple)
        self.pos = snap[0]
        self.conv.copy_(snap[1])


class CausalSelfAttention(nn.Module):
    """Projections + head layout + positional hooks + a kernel (the one signature in kernels.py)."""

    param_group = "attention"

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, kernel: Kernel, window: int | None = None,
                 qkv_bias: bool = False, dropout: float = 0.0, resid_dropout: float = 0.0,
                 q_norm: nn.Module | None = None, k_norm: nn.Module | None = None,
                 softcap: float | None = None, out_bias: bool = True,
                 gate: OutputGate | None = None, sinks: bool = False, short_conv: int = 0) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.window, self.dropout, self.kernel = window, dropout, kernel
        # One fused projection: q (H·D) | k (Hkv·D) | v (Hkv·D). Its shape depends only on
        # the layout, never on the kernel, so state_dicts move between kernels.
        self.qkv = nn.Linear(d_model, (n_heads + 2 * n_kv_heads) * self.head_dim, bias=qkv_bias)
        self.conv = ShortConv(self.qkv.out_features, short_conv) if short_conv else None  # attn.short_conv
        self.out = nn.Linear(d_model, d_model, bias=out_bias)  # out_bias=False: model.bias=false
        mark_residual(self.out)
        self.resid_drop = nn.Dropout(resid_dropout)
        self.scale = default_scale(self.head_dim)
        # QK-norm (norm.qk_norm): one norm over head_dim shared by all heads, as Qwen3 (state_dict
        # keys attn.q_norm.weight / attn.k_norm.weight); None = off.
        self.q_norm, self.k_norm = q_norm, k_norm
        self.softcap = softcap
        self.gate = gate  # attn.gate: σ(x W_g) on the heads' outputs before `out` (model/gating.py)
        # attn.sinks: one learned logit per head in every softmax (model/sinks.py), 0 = "softmax off by one"
        self.sinks: nn.Parameter | None = nn.Parameter(torch.zeros(n_heads)) if sinks else None
        self.record_first_token: bool = False  # set by model.probes.first_token_attention
        self.first_token: Tensor | None = None
        self.record_max_logit: bool = False  # set by max_attention_logit()
        self.max_logit: Tensor | None = None

    def forward(self, x: Tensor, ctx: AttnContext, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        B, T, C = x.shape
        spec = MaskSpec(causal=ctx.spec.causal, window=self.window, q_offset=ctx.spec.q_offset)
        if self.kernel.owns_projection:
            projected: Tensor = self.resid_drop(self.kernel.module_forward(self, x, spec, ctx.bias))
            return projected
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = self.qkv(x)  # (B, T, (H + 2·Hkv)·D)
        if self.conv is not None:  # attn.short_conv: its decode state lives in the KV cache
            qkv = self.conv(qkv, cache, layer)
        q, k, v = qkv.split([H * D, Hkv * D, Hkv * D], dim=-1)
        q, k = q.view(B, T, H, D), k.view(B, T, Hkv, D)
        if self.q_norm is not None and self.k_norm is not None:  # per head, after the projection and before RoPE (Qwen3)
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.transpose(1, 2)  # (B, H, T, D)
        k = k.transpose(1, 2)  # (B, Hkv, T, D)
        v = v.view(B, T, Hkv, D).transpose(1, 2)  # (B, Hkv, T, D)
        if ctx.rot is not None:
            q, k = apply_rotary(q, ctx.rot), apply_rotary(k, ctx.rot)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, Hkv, S, D), S = cached + T
        drop = self.dropout if self.training else 0.0
        if self.record_max_logit:
            self.max_logit = max_logit(q, k, spec, self.scale)
        extra = self._kernel_extras()
        if self.record_first_token:
            self.first_token = first_token_mass(q, k, spec, self.scale, ctx.bias, self.softcap, self.sinks)
        y: Tensor = self.kernel(q, k, v, spec=spec, bias=ctx.bias, scale=self.scale, dropout=drop, **extra)  # (B, H, T, D)
        y = y.transpose(1, 2)  # (B, T, H, D)
        if self.gate is not None:
            y = self.gate(x, y)
        out: Tensor = self.resid_drop(self.out(y.reshape(B, T, C)))
        return out

    def _kernel_extras(self) -> dict[str, float | Tensor]:
        """softcap= and sinks=, only when set: only kernels that declare them take them."""
        extra: dict[str, float | Tensor] = {"softcap": self.softcap} if self.softcap is not None else {}
        if self.sinks is not None:
            extra["sinks"] = self.sinks
        return extra


def first_token_mass(q: Tensor, k: Tensor, spec: MaskSpec, scale: float, bias: Tensor | None,
                     softcap: float | None = None, sinks: Tensor | None = None) -> Tensor:
    """Mean attention probability on key 0 (the first token) per head, over the batch and the queries
    at positions >= 1 that may see it (query 0 can attend nowhere else); (H,), nan if none may.
    The attention-sink measure of Xiao et al. 2023 and Qiu et al. 2025. q (B, H, T, D), k (B, Hkv, S, D)."""
    from .kernels import manual_attention

    B, H, T, _ = q.shape
    S = k.shape[2]
    onehot = torch.zeros(B, k.shape[1], S, 1, device=q.device, dtype=torch.float32)
    onehot[:, :, 0] = 1.0  # as values: the output is the probability on key 0
    p0 = manual_attention(q.float(), k.float(), onehot, spec=spec, bias=bias, scale=scale, softcap=softcap,
                          sinks=sinks)[..., 0]  # (B, H, T)
    pos = torch.arange(spec.q_offset, spec.q_offset + T, device=q.device)
    sees = (pos >= 1) & allowed_mask(T, S, spec, q.device)[:, 0]  # (T,)
    return p0[:, :, sees].mean(dim=(0, 2))


def max_logit(q: Tensor, k: Tensor, spec: MaskSpec, scale: float) -> Tensor:
    """max |q kᵀ · scale| over the keys each query may see (before any softcap or bias); a 0-d tensor.
    q (B, H, T, D), k (B, Hkv, S, D)."""
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    qg = q.float().view(B, Hkv, H // Hkv, T, D)  # (B, Hkv, G, T, D)
    scores = (qg @ k.float().unsqueeze(2).transpose(-2, -1)).abs() * scale  # (B, Hkv, G, T, S)
    return scores.masked_fill(~allowed_mask(T, S, spec, q.device), 0.0).amax()


class LogitRecorder(Protocol):
    """An attention module that can record its largest logit (CausalSelfAttention, MLA, differential)."""

    record_max_logit: bool
    max_logit: Tensor | None


@torch.no_grad()
def max_attention_logit(model: nn.Module, idx: Tensor) -> float | None:
    """The largest attention logit |q·k|/sqrt(D) of any layer and head on `idx` (B, T), in eval mode.

    The quantity whose growth Wortsman et al. 2023 ("Small-scale proxies for large-scale Transformer
    training instabilities") tie to divergence at high learning rates, and which QK-norm bounds.
    Any attention module with a `record_max_logit` flag takes part; costs one extra (T, S) score
    matrix per layer, so call it on one batch at evaluation time, not every step. None when no layer
    exposes q and k (attn.impl=torch_mha projects inside the kernel; modules without the flag)."""
    layers = [cast(LogitRecorder, m) for m in model.modules() if hasattr(m, "record_max_logit")]
    if not layers:
        return None
    was_training = model.training
    model.eval()
    try:
        for m in layers:
            m.record_max_logit, m.max_logit = True, None
        model(idx)
        seen = [m.max_logit for m in layers if m.max_logit is not None]
    finally:
        for m in layers:
            m.record_max_logit, m.max_logit = False, None
        model.train(was_training)
    return float(torch.stack(seen).max()) if seen else None
