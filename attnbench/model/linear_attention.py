"""Causal linear attention (Katharopoulos et al. 2020, "Transformers are RNNs", eq. 6 and 16-20).

With a feature map φ (attn.feature_map) instead of the softmax, query i reads

    y_i = φ(q_i)ᵀ S_i / (φ(q_i)ᵀ z_i + ε),   S_i = Σ_{j≤i} φ(k_j) v_jᵀ  (F × Dv),   z_i = Σ_{j≤i} φ(k_j)

so decoding carries a constant state (S, z) per layer and KV head instead of a growing KV cache.
Training uses the chunked parallel form (`chunked_linear_attention`): within a chunk of
attn.chunk_size tokens the masked (C × C) form, across chunks the running state; memory is
O(T · (C + F · Dv / C)), linear in T. A one-token step (decode) updates the state
(`recurrent_step`). RoPE, when chosen, rotates q and k before φ; GQA shares a state per KV head.
ε = 1e-6 (the authors' code) keeps relu's all-zero features from dividing by zero.

attn.short_conv = K adds a causal depthwise convolution of K taps over time on the q, k, v
projections (Based, Arora et al. 2024; fla's ShortConvolution in GLA / DeltaNet; every fixed-state
model of Zoology has one). Why: on associative recall a value must be stored under the key one
token before it, and linear attention cannot form the sharp previous-token head that softmax
attention uses for that; the convolution gives each token its predecessors directly. It starts as
the identity (weight 1 on the current token), so K taps begin as plain linear attention. Decoding
keeps the last K - 1 projections per layer next to the state: still constant in the context.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from ..spec import Spec
from . import short_conv as conv_of
from .attention import AttnContext
from .cache import Cache
from .kernels import Kernel
from .mechanism import Mechanism, register
from .position import apply_rotary
from .short_conv import ShortConv
from .tags import mark_residual

EPS = 1e-6


def elu1(x: Tensor) -> Tensor:
    """elu(x) + 1: the paper's map, positive everywhere; F = D."""
    return F.elu(x) + 1


def relu(x: Tensor) -> Tensor:
    """max(x, 0); F = D. A query whose features are all zero reads 0."""
    return F.relu(x)


def taylor2(x: Tensor) -> Tensor:
    """Second-order Taylor features of exp(q·k/√D) (Zoology's Based, Arora et al. 2024):
    φ(q)·φ(k) = 1 + q·k/√D + (q·k)²/(2D), positive for every q, k; F = 1 + D + D²."""
    D = x.shape[-1]
    outer = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2) / math.sqrt(2 * D)  # (..., D²)
    return torch.cat([torch.ones_like(x[..., :1]), x / D ** 0.25, outer], dim=-1)


# attn.feature_map -> (φ, feature dim F as a function of the head dim D)
FEATURE_MAPS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[int], int]]] = {
    "elu1": (elu1, lambda D: D),
    "relu": (relu, lambda D: D),
    "taylor2": (taylor2, lambda D: 1 + D + D * D),
}


class RecurrentState(Cache):
    """Per layer the running S (B, Hkv, F, Dv) and z (B, Hkv, F), fp32 whatever the compute dtype
    (sums over thousands of tokens). Same interface as KVCache: `pos` counts the tokens seen, the
    GPT advances it; `max_len` only bounds positions (the state itself never fills)."""

    def __init__(self, n_layers: int, batch_size: int, n_kv_heads: int, feat: int, v_dim: int, max_len: int,
                 device: torch.device, conv_taps: int = 0, conv_channels: int = 0) -> None:
        super().__init__(max_len)
        self.S = torch.zeros(n_layers, batch_size, n_kv_heads, feat, v_dim, device=device)
        self.z = torch.zeros(n_layers, batch_size, n_kv_heads, feat, device=device)
        # attn.short_conv: the last K - 1 q/k/v projections per layer (B, K-1, channels); empty without
        self.conv = torch.zeros(n_layers, batch_size, max(conv_taps - 1, 0), conv_channels, device=device)

    def get(self, layer: int) -> tuple[Tensor, Tensor]:
        return self.S[layer], self.z[layer]

    def set(self, layer: int, S: Tensor, z: Tensor) -> None:
        self.S[layer], self.z[layer] = S, z

    def tensors(self) -> tuple[Tensor, ...]:
        return self.S, self.z, self.conv

    def snapshot(self) -> object:
        """The state is summed into, not written at positions: a snapshot copies it."""
        return self.pos, tuple(t.clone() for t in self.tensors())

    def restore(self, snap: object) -> None:
        """Back to a snapshot (the bench decodes the same positions on every call)."""
        assert isinstance(snap, tuple)
        self.pos, saved = snap
        for mine, old in zip(self.tensors(), saved, strict=True):
            mine.copy_(old)


def chunked_linear_attention(q: Tensor, k: Tensor, v: Tensor, chunk: int, state: tuple[Tensor, Tensor] | None = None
                             ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """The parallel form. q (B, H, T, F), k (B, Hkv, T, F) already feature-mapped, v (B, Hkv, T, Dv);
    state (S, z) of the tokens before (None = empty). Returns y (B, H, T, Dv) and the state after."""
    B, H, T, Fd = q.shape
    Hkv, Dv = k.shape[1], v.shape[-1]
    G, C = H // Hkv, min(chunk, T)
    N = -(-T // C)
    pad = N * C - T  # zero features at the end: they add nothing to any sum
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    qc = q.view(B, Hkv, G, N, C, Fd)  # query heads grouped by their KV head
    kc, vc = k.view(B, Hkv, N, C, Fd), v.view(B, Hkv, N, C, Dv)
    kv = kc.transpose(-1, -2) @ vc  # (B, Hkv, N, F, Dv): each chunk's Σ φ(k) vᵀ
    ks = kc.sum(-2)  # (B, Hkv, N, F)
    S0 = torch.zeros_like(kv[:, :, 0]) if state is None else state[0].to(kv.dtype)
    z0 = torch.zeros_like(ks[:, :, 0]) if state is None else state[1].to(ks.dtype)
    S_in = torch.cat([S0.unsqueeze(2), S0.unsqueeze(2) + kv.cumsum(2)], dim=2)  # (B, Hkv, N+1, F, Dv)
    z_in = torch.cat([z0.unsqueeze(2), z0.unsqueeze(2) + ks.cumsum(2)], dim=2)  # (B, Hkv, N+1, F)
    num = qc @ S_in[:, :, :N].unsqueeze(2)  # (B, Hkv, G, N, C, Dv): what earlier chunks left
    den = (qc * z_in[:, :, None, :N, None, :]).sum(-1)  # (B, Hkv, G, N, C)
    tril = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    A = (qc @ kc.unsqueeze(2).transpose(-1, -2)).masked_fill(~tril, 0.0)  # (B, Hkv, G, N, C, C) within the chunk
    num = num + A @ vc.unsqueeze(2)
    den = den + A.sum(-1)
    y = (num / (den.unsqueeze(-1) + EPS)).reshape(B, H, N * C, Dv)[:, :, :T]
    return y, (S_in[:, :, N], z_in[:, :, N])


def recurrent_step(q: Tensor, k: Tensor, v: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One token: q (B, H, 1, F), k (B, Hkv, 1, F), v (B, Hkv, 1, Dv); S += φ(k) vᵀ, z += φ(k), then read."""
    B, H, _, Fd = q.shape
    Hkv = k.shape[1]
    S = state[0] + k[:, :, 0, :, None].to(state[0].dtype) * v[:, :, 0, None, :].to(state[0].dtype)  # (B, Hkv, F, Dv)
    z = state[1] + k[:, :, 0].to(state[1].dtype)  # (B, Hkv, F)
    qg = q.view(B, Hkv, H // Hkv, Fd).to(S.dtype)  # (B, Hkv, G, F)
    y = (qg @ S) / ((qg * z.unsqueeze(2)).sum(-1, keepdim=True) + EPS)  # (B, Hkv, G, Dv)
    return y.reshape(B, H, 1, -1).to(q.dtype), (S, z)


class LinearAttention(nn.Module):
    """Parameter names as CausalSelfAttention's (qkv fused, out; q_norm/k_norm with norm.qk_norm)."""

    param_group = "attention"

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, feature_map: str, chunk_size: int,
                 qkv_bias: bool = False, resid_dropout: float = 0.0, out_bias: bool = True,
                 q_norm: nn.Module | None = None, k_norm: nn.Module | None = None, short_conv: int = 0):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.phi, feat = FEATURE_MAPS[feature_map]
        self.feature_dim, self.chunk_size = feat(self.head_dim), chunk_size
        channels = (n_heads + 2 * n_kv_heads) * self.head_dim
        self.qkv = nn.Linear(d_model, channels, bias=qkv_bias)
        self.conv = ShortConv(channels, short_conv) if short_conv else None
        self.out = nn.Linear(d_model, d_model, bias=out_bias)
        mark_residual(self.out)
        self.resid_drop = nn.Dropout(resid_dropout)
        self.q_norm, self.k_norm = q_norm, k_norm

    def forward(self, x: Tensor, ctx: AttnContext, cache: RecurrentState | None = None, layer: int = 0) -> Tensor:
        B, T, C = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = self.qkv(x)  # (B, T, (H + 2·Hkv)·D)
        if self.conv is not None:
            qkv = self.conv(qkv, cache, layer)
        q, k, v = qkv.split([H * D, Hkv * D, Hkv * D], dim=-1)
        q, k = q.view(B, T, H, D), k.view(B, T, Hkv, D)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, H, T, D), (B, Hkv, T, D)
        v = v.view(B, T, Hkv, D).transpose(1, 2)  # (B, Hkv, T, D)
        if ctx.rot is not None:
            q, k = apply_rotary(q, ctx.rot), apply_rotary(k, ctx.rot)
        q, k = self.phi(q), self.phi(k)  # (B, H|Hkv, T, F)
        if cache is None:
            y, _ = chunked_linear_attention(q, k, v, self.chunk_size)
        elif T == 1:
            y, state = recurrent_step(q, k, v, cache.get(layer))
            cache.set(layer, *state)
        else:  # prefill: the parallel form, starting from (and writing back) the state
            y, state = chunked_linear_attention(q, k, v, self.chunk_size, cache.get(layer))
            cache.set(layer, *state)
        y = y.to(x.dtype).transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.out(y))


@register
class Linear(Mechanism):
    """attn=linear: causal linear attention (Katharopoulos et al. 2020)."""

    name = "linear"
    fields = ("feature_map", "chunk_size")  # attn.short_conv: model/short_conv.py (softmax attention too)
    supports_bias = False
    supports_window = False
    supports_softcap = False
    supports_dropout = False
    supports_gate = False  # not built (gated linear attention, GLA, gates the state instead)
    supports_sinks = False  # no softmax to take mass from
    uses_kernel = False

    @classmethod
    def _extra_unsupported(cls, cfg: DictConfig, kernel: Kernel) -> str | None:
        a = cfg.attn
        if a.feature_map not in FEATURE_MAPS:
            return f"attn.feature_map={a.feature_map}: not allowed; choose from [{', '.join(FEATURE_MAPS)}]"
        c = a.chunk_size
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            return f"attn.chunk_size={c}: must be an integer >= 1 (tokens per chunk of the parallel form)"
        return None

    @classmethod
    def build(cls, spec: Spec, kernel: Kernel, layer: int) -> nn.Module:
        from ..registry import NORMS

        cfg = spec.cfg
        a, m = cfg.attn, cfg.model
        norm = (lambda: NORMS.get(cfg.norm.name)(spec.head_dim, cfg.norm.eps, bias=bool(m.bias))) \
            if cfg.norm.qk_norm else (lambda: None)
        return LinearAttention(spec.d_model, spec.n_heads, spec.n_kv_heads, str(a.feature_map), int(a.chunk_size),
                               bool(a.qkv_bias), float(m.dropout), bool(m.bias), q_norm=norm(), k_norm=norm(),
                               short_conv=cls.conv_taps(spec))

    @staticmethod
    def conv_taps(spec: Spec) -> int:
        """attn.short_conv, 0 without one."""
        return conv_of.taps(spec.cfg)

    @staticmethod
    def qkv_channels(spec: Spec) -> int:
        return conv_of.qkv_channels(spec)

    @classmethod
    def feature_dim(cls, spec: Spec) -> int:
        return FEATURE_MAPS[spec.cfg.attn.feature_map][1](spec.head_dim)

    @classmethod
    def attention_flops(cls, spec: Spec, keys: float, decode: bool) -> float:
        """Per token (F feature dims, Dv = D, G = H / Hkv): reading the state 2·H·F·Dv + its normaliser 2·H·F,
        adding the token to it 2·Hkv·F·Dv (decode: that is all, whatever the context). In a full pass the
        chunk's masked scores and AV add 2·H·(F + Dv)·c̄ with c̄ = (C + 1) / 2 keys per query.
        attn.short_conv = K adds 2·K·(H + 2·Hkv)·D, in both."""
        H, Hkv, D, Fd = spec.n_heads, spec.n_kv_heads, spec.head_dim, cls.feature_dim(spec)
        state = 2 * H * Fd * D + 2 * H * Fd + 2 * Hkv * Fd * D + conv_of.flops(spec)
        if decode:
            return state
        c = min(int(spec.cfg.attn.chunk_size), max(int(2 * keys - 1), 1))  # keys = (T + 1) / 2 for causal T
        return state + 2 * H * (Fd + D) * (c + 1) / 2

    @classmethod
    def kv_bytes_per_token(cls, spec: Spec, bytes_per_element: int) -> int:
        return 0  # nothing grows with the sequence

    @classmethod
    def state_bytes(cls, spec: Spec, bytes_per_element: int) -> int:
        """S and z of every layer and KV head, kept in fp32: L · Hkv · (F · D + F) · 4 per sequence,
        plus with attn.short_conv = K the last K - 1 projections: L · (K - 1) · (H + 2·Hkv)·D · 4."""
        Fd = cls.feature_dim(spec)
        return (spec.n_layers * spec.n_kv_heads * (Fd * spec.head_dim + Fd) + conv_of.state_elements(spec)) * 4

    @classmethod
    def init_cache(cls, model: nn.Module, batch_size: int, max_len: int, device: torch.device,
                   dtype: torch.dtype) -> RecurrentState:
        attn = model.get_submodule("blocks.0.attn")
        assert isinstance(attn, LinearAttention)
        taps, channels = (attn.conv.taps, attn.conv.weight.shape[0]) if attn.conv is not None else (0, 0)
        blocks = model.get_submodule("blocks")
        assert isinstance(blocks, nn.ModuleList)
        return RecurrentState(len(blocks), batch_size, attn.n_kv_heads, attn.feature_dim, attn.head_dim,
                              max_len, device, taps, channels)
