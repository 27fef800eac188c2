"""Multi-head Latent Attention (MLA; DeepSeek-AI 2024, "DeepSeek-V2", section 2.1).

Keys and values are up-projected from one compressed latent c (kv_lora_rank dims,
RMSNorm'd) per token; position enters only through a decoupled RoPE key of
rope_head_dim dims shared by every head, concatenated to each head's
position-free key. The KV cache therefore holds c and the rotated shared key:
(kv_lora_rank + rope_head_dim) numbers per token and layer, whatever the head count.

    q_h = [q_nope_h ; RoPE(q_rope_h)]               (qk_nope_head_dim + rope_head_dim)
    k_h = [W_uk_h c ; RoPE(k_rope)]                 k_rope shared by all heads
    v_h = W_uv_h c                                  (v_head_dim)
    softmax scale 1 / sqrt(qk_nope_head_dim + rope_head_dim)

Absorbed decode (`attn.absorb`): q_nope_h · W_uk_h c = (W_uk_hᵀ q_nope_h) · c, so a
decode step can score the cached latent directly (an MQA-like attention with one
"KV head" of dim kv_lora_rank + rope_head_dim, value = c) and apply W_uv_h after the
weighted sum. Same logits, no per-step expansion of the whole cache. RoPE is the
reason for the decoupled key: a rotation between q and W_uk would depend on the
position and could not be folded into the weights.
"""
from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from ..spec import Spec
from .attention import AttnContext
from .cache import Cache
from .kernels import Kernel, MaskSpec
from .layout import MLADims
from .position import apply_rotary
from .tags import mark_residual

# MLA's positional path is its decoupled RoPE key; which `pos` schemes it accepts.
ACCEPTED_POS = ("rope",)
MLA_FIELDS = ("kv_lora_rank", "q_lora_rank", "qk_nope_head_dim", "rope_head_dim", "v_head_dim")


def config_problem(cfg: DictConfig, kernel: Kernel) -> str | None:
    """One-line reason the MLA part of a config is invalid (or MLA fields set without attn=mla), or None."""
    a = cfg.attn
    if a.name != "mla":
        for key in (*MLA_FIELDS, "absorb"):
            if a[key] not in (None, False):
                return f"attn.{key}={a[key]}: only used by attn=mla (got attn={a.name}); leave it unset"
        return None
    for key in MLA_FIELDS:
        value = a[key]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            return f"attn.{key}={value}: must be an integer >= 1 (or null for the default)"
    dims = MLADims.from_cfg(cfg)
    if dims.rope < 2 or dims.rope % 2:
        return f"attn.rope_head_dim={dims.rope}: must be even and >= 2 (RoPE rotates pairs; default d_model/n_heads/2)"
    if min(dims.nope, dims.v, dims.kv_rank) < 1:  # only reachable through a zero default (d_model < n_heads)
        return f"attn=mla: d_model/n_heads={cfg.model.d_model // a.n_heads} leaves a zero default dim; set them explicitly"
    if cfg.pos.name not in ACCEPTED_POS:
        return (f"pos={cfg.pos.name}: attn=mla takes position only through its decoupled RoPE key; "
                f"choose from [{', '.join(ACCEPTED_POS)}]")
    if a.window is not None:
        return f"attn.window={a.window}: attn=mla is full causal attention (attn.window must be null)"
    if cfg.norm.qk_norm:
        return "norm.qk_norm=true: attn=mla already RMS-normalises its query and KV latents; leave it false"
    if cfg.pos.scaling == "ntk" and dims.rope <= 2:  # base · factor^(d/(d-2)) needs d > 2
        return f"pos.scaling=ntk: attn.rope_head_dim={dims.rope} must be > 2"
    differs = dims.qk != dims.v or a.absorb  # absorbed decode: q/k dim kv_rank+rope vs value dim kv_rank
    if differs and not kernel.supports_v_head_dim:
        return (f"attn.impl={a.impl}: needs equal q/k and v head dims, but attn=mla has q/k {dims.qk} and v "
                f"{dims.kv_rank if a.absorb else dims.v}; use manual, sdpa, sdpa_math, wrapper or flex")
    if a.absorb and not kernel.supports_gqa:
        return f"attn.impl={a.impl}: attn.absorb=true decodes against one shared latent head (needs GQA support)"
    return None


class LatentCache(Cache):
    """Per layer and token: the normalised latent c and the rotated shared RoPE key, side by
    side in one buffer (L, B, max_len, kv_lora_rank + rope_head_dim), so the absorbed decode
    reads it as a single key tensor without a copy. Same interface as `KVCache`."""

    def __init__(self, n_layers: int, batch_size: int, max_len: int, kv_rank: int, rope_dim: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(max_len)
        self.kv = torch.zeros(n_layers, batch_size, max_len, kv_rank + rope_dim, device=device, dtype=dtype)
        self.kv_rank = kv_rank

    def update(self, layer: int, c: Tensor, k_rope: Tensor) -> Tensor:
        """Write a chunk's c (B, T, r) and k_rope (B, T, dr); return all cached (B, S, r + dr)."""
        end = self.pos + c.shape[1]
        self.kv[layer, :, self.pos : end, : self.kv_rank] = c
        self.kv[layer, :, self.pos : end, self.kv_rank :] = k_rope
        return self.kv[layer, :, :end]

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.kv,)


class MultiHeadLatentAttention(nn.Module):
    """MLA (DeepSeek-V2). Parameter names: q (full rank) or q_down/q_latent_norm/q_up (low rank),
    kv_down (d_model → latent | shared RoPE key), kv_latent_norm, kv_up (latent → per-head k_nope | v), out."""

    param_group = "attention"

    def __init__(self, d_model: int, dims: MLADims, kernel: Kernel, eps: float = 1e-5, absorb: bool = False,
                 qkv_bias: bool = False, dropout: float = 0.0, resid_dropout: float = 0.0,
                 softcap: float | None = None, out_bias: bool = True):
        super().__init__()
        self.dims, self.kernel, self.absorb, self.dropout = dims, kernel, absorb, dropout
        # attn.softcap caps q·k·scale; only passed when set, as kernels without it take no such argument
        self.kernel_kw = {"softcap": softcap} if softcap is not None else {}
        self.record_max_logit = False  # set by attention.max_attention_logit (results' max_attn_logit)
        self.max_logit: Tensor | None = None
        H, r = dims.n_heads, dims.kv_rank
        if dims.q_rank is None:
            self.q = nn.Linear(d_model, H * dims.qk, bias=qkv_bias)
        else:  # low-rank query, normalised like the KV latent (DeepSeek-V2 eq. 12)
            self.q_down = nn.Linear(d_model, dims.q_rank, bias=qkv_bias)
            self.q_latent_norm = nn.RMSNorm(dims.q_rank, eps=eps)
            self.q_up = nn.Linear(dims.q_rank, H * dims.qk, bias=False)
        self.kv_down = nn.Linear(d_model, r + dims.rope, bias=qkv_bias)
        self.kv_latent_norm = nn.RMSNorm(r, eps=eps)
        # No bias: a bias here could not be absorbed into the query and output.
        self.kv_up = nn.Linear(r, H * (dims.nope + dims.v), bias=False)
        self.out = nn.Linear(H * dims.v, d_model, bias=out_bias)
        mark_residual(self.out)
        self.resid_drop = nn.Dropout(resid_dropout)
        self.scale = dims.qk ** -0.5

    def _query(self, x: Tensor) -> Tensor:
        if self.dims.q_rank is None:
            return self.q(x)
        return self.q_up(self.q_latent_norm(self.q_down(x)))

    def forward(self, x: Tensor, ctx: AttnContext, cache: LatentCache | None = None, layer: int = 0) -> Tensor:
        B, T, _ = x.shape
        d = self.dims
        H, r = d.n_heads, d.kv_rank
        q = self._query(x).view(B, T, H, d.qk).transpose(1, 2)  # (B, H, T, nope + rope)
        q_nope, q_rope = q.split([d.nope, d.rope], dim=-1)
        c, k_rope = self.kv_down(x).split([r, d.rope], dim=-1)  # (B, T, r), (B, T, rope)
        c = self.kv_latent_norm(c)
        assert ctx.rot is not None, "attn=mla rotates its decoupled rope_head_dim (validate requires pos=rope)"
        q_rope = apply_rotary(q_rope, ctx.rot)  # rotate-half layout, tables of size rope_head_dim
        k_rope = apply_rotary(k_rope.unsqueeze(1), ctx.rot).squeeze(1)  # (B, T, rope), one key for all heads
        spec = MaskSpec(causal=ctx.spec.causal, q_offset=ctx.spec.q_offset)
        drop = self.dropout if self.training else 0.0
        if cache is None:
            y = self._expanded(q_nope, q_rope, c, k_rope, spec, drop)
        else:
            kv = cache.update(layer, c, k_rope)  # (B, S, r + rope)
            if self.absorb and T == 1:  # decode step; prefill stays expanded (compute-bound, as DeepSeek does)
                y = self._absorbed(q_nope, q_rope, kv, spec, drop)
            else:
                y = self._expanded(q_nope, q_rope, kv[..., :r], kv[..., r:], spec, drop)
        y = y.transpose(1, 2).reshape(B, T, H * d.v)
        return self.resid_drop(self.out(y))

    def _expanded(self, q_nope: Tensor, q_rope: Tensor, c: Tensor, k_rope: Tensor, spec: MaskSpec,
                  drop: float) -> Tensor:
        """Up-project every key's latent to per-head k_nope and v; (B, H, T, v_head_dim)."""
        d = self.dims
        B, S, _ = c.shape
        kv = self.kv_up(c).view(B, S, d.n_heads, d.nope + d.v).transpose(1, 2)  # (B, H, S, nope + v)
        k_nope, v = kv.split([d.nope, d.v], dim=-1)
        k = torch.cat([k_nope, k_rope.unsqueeze(1).expand(B, d.n_heads, S, d.rope)], dim=-1)  # (B, H, S, qk)
        q = torch.cat([q_nope, q_rope], dim=-1)  # (B, H, T, qk)
        if self.record_max_logit:
            from .attention import max_logit

            self.max_logit = max_logit(q, k, spec, self.scale)
        return self.kernel(q, k, v, spec=spec, bias=None, scale=self.scale, dropout=drop, **self.kernel_kw)

    def _absorbed(self, q_nope: Tensor, q_rope: Tensor, kv: Tensor, spec: MaskSpec, drop: float) -> Tensor:
        """Attend in latent space: W_uk folded into the query, W_uv applied after; (B, H, T, v_head_dim)."""
        d = self.dims
        w_uk, w_uv = self.kv_up.weight.view(d.n_heads, d.nope + d.v, d.kv_rank).split([d.nope, d.v], dim=1)
        q_lat = torch.einsum("bhtn,hnr->bhtr", q_nope, w_uk.to(q_nope.dtype))  # (B, H, T, r)
        q = torch.cat([q_lat, q_rope.to(q_lat.dtype)], dim=-1)  # (B, H, T, r + rope)
        k = kv.unsqueeze(1).to(q.dtype)  # (B, 1, S, r + rope): one latent "KV head" for all query heads
        o = self.kernel(q, k, k[..., : d.kv_rank], spec=spec, bias=None, scale=self.scale, dropout=drop,
                        **self.kernel_kw)  # (B, H, T, r); the scores are the expanded ones, so the same cap applies
        return torch.einsum("bhtr,hvr->bhtv", o, w_uv.to(o.dtype))  # (B, H, T, v)


def build(spec: Spec, kernel: Kernel) -> MultiHeadLatentAttention:
    """The MLA module for one layer of a resolved spec (config/spec.py)."""
    a, m = spec.cfg.attn, spec.cfg.model
    assert spec.mla is not None, "attn=mla resolves its latent sizes in the spec"
    return MultiHeadLatentAttention(spec.d_model, spec.mla, kernel, eps=float(spec.cfg.norm.eps),
                                    absorb=bool(a.absorb), qkv_bias=bool(a.qkv_bias), dropout=float(a.dropout),
                                    resid_dropout=float(m.dropout), softcap=a.softcap,
                                    out_bias=bool(m.bias))  # model.bias, as CausalSelfAttention's out
