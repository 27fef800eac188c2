"""Differential attention (Ye et al. 2024, "Differential Transformer", section 2.1).

Each head's query and key are split in two halves of d = D/2 dims; the two softmax maps are
subtracted, with a learned scalar λ per layer, and the head is RMS-normalised:

    A_j     = softmax(Q_j K_jᵀ / √d)                          j = 1, 2
    head    = (1 − λ_init) · RMSNorm((A_1 − λ A_2) V)            V has D dims
    λ       = exp(λ_q1 · λ_k1) − exp(λ_q2 · λ_k2) + λ_init      λ_* ∈ R^d, N(0, 0.1) init
    λ_init  = 0.8 − 0.6 · exp(−0.3 · (l − 1))                  l = 1 .. n_layers (attn.lambda_init: a constant)

The projections have MHA's shapes (attn.n_heads heads of D = d_model / n_heads; q and k carry
both halves, [q_1 | q_2]), so a DIFF model has MHA's parameters plus 4·d + D per layer and MHA's
KV cache. Both maps are one kernel call: 2·H query heads [q_1 | 0] and [0 | q_2] against the
cached k = [k_1 | k_2] and v, heads 2h and 2h+1 sharing KV head h (the kernel's GQA grouping).
The zeroed half makes each dot product the half's own (q_1·k_1), at the cost of scoring in D
dims instead of d: one SDPA call of twice the heads rather than a kernel with q/k dims ≠ v dims,
which CPU flash and CUDA flash reject. RoPE rotates each half on its own (the official code
rotates 2·H heads of d dims), so with pos=rope d must be even.
"""
from __future__ import annotations

import math

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from ..spec import Spec
from .attention import AttnContext, KVCache, max_logit
from .kernels import Kernel, MaskSpec
from .mechanism import Mechanism, register
from .position import Rotary, apply_rotary
from .tags import mark_residual


def paper_lambda_init(layer: int) -> float:
    """λ_init of 0-based layer `layer`: 0.8 − 0.6 · exp(−0.3 · (l − 1)) with l = layer + 1."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer)


def rotate_halves(x: Tensor, rot: Rotary) -> Tensor:
    """RoPE on each d-dim half of x (B, H, T, 2d) with tables of d dims."""
    d = x.shape[-1] // 2
    return torch.cat([apply_rotary(x[..., :d], rot), apply_rotary(x[..., d:], rot)], dim=-1)


class DifferentialAttention(nn.Module):
    """Parameter names: qkv (fused, MHA shapes), lambda_q1/k1/q2/k2 (d,), subln (RMSNorm over D), out."""

    param_group = "attention"
    halves: Tensor  # buffer (2, D)

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, kernel: Kernel, lambda_init: float,
                 window: int | None = None, qkv_bias: bool = False, dropout: float = 0.0,
                 resid_dropout: float = 0.0, softcap: float | None = None, out_bias: bool = True,
                 eps: float = 1e-5):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.kernel, self.window, self.dropout, self.lambda_init = kernel, window, dropout, float(lambda_init)
        D, d = self.head_dim, self.head_dim // 2
        self.qkv = nn.Linear(d_model, (n_heads + 2 * n_kv_heads) * D, bias=qkv_bias)
        self.out = nn.Linear(d_model, d_model, bias=out_bias)
        mark_residual(self.out)
        self.resid_drop = nn.Dropout(resid_dropout)
        self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = (
            nn.Parameter(torch.randn(d) * 0.1) for _ in range(4))
        self.subln = nn.RMSNorm(D, eps=eps)  # per head: normalises each head's D output dims
        self.scale = d ** -0.5  # the maps score d-dim halves
        self.kernel_kw = {"softcap": softcap} if softcap is not None else {}
        first = torch.arange(D) < d
        # row 0 keeps q_1 (second half zeroed), row 1 keeps q_2
        self.register_buffer("halves", torch.stack([first, ~first]).float(), persistent=False)  # (2, D)
        self.record_max_logit = False  # set by attention.max_attention_logit
        self.max_logit: Tensor | None = None

    def lam(self) -> Tensor:
        """λ = exp(λ_q1 · λ_k1) − exp(λ_q2 · λ_k2) + λ_init (a 0-d tensor, fp32)."""
        return (torch.exp((self.lambda_q1 * self.lambda_k1).sum().float())
                - torch.exp((self.lambda_q2 * self.lambda_k2).sum().float()) + self.lambda_init)

    def forward(self, x: Tensor, ctx: AttnContext, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        B, T, C = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.qkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D) = [q_1 | q_2]
        k = k.view(B, T, Hkv, D).transpose(1, 2)  # (B, Hkv, T, D) = [k_1 | k_2]
        v = v.view(B, T, Hkv, D).transpose(1, 2)  # (B, Hkv, T, D)
        if ctx.rot is not None:
            q, k = rotate_halves(q, ctx.rot), rotate_halves(k, ctx.rot)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, Hkv, S, D)
        spec = MaskSpec(causal=ctx.spec.causal, window=self.window, q_offset=ctx.spec.q_offset)
        y = self.attend(q, k, v, spec, ctx.bias)  # (B, H, T, D)
        return self.resid_drop(self.out(y.transpose(1, 2).reshape(B, T, C)))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, spec: MaskSpec, bias: Tensor | None) -> Tensor:
        """The attention proper, q (B, H, T, D), k, v (B, Hkv, S, D) → normalised heads (B, H, T, D):
        the two maps in one kernel call, their difference, RMSNorm, (1 − λ_init). What the benchmark
        (benchmarks/mechanisms.py) compares with one SDPA call of the same shape."""
        B, H, T, D = q.shape
        # (B, H, 2, T, D) -> (B, 2H, T, D): heads 2h, 2h+1 = the two maps of head h, both on KV head h·Hkv/H
        q2 = (q.unsqueeze(2) * self.halves.to(q.dtype)[None, None, :, None, :]).reshape(B, 2 * H, T, D)
        bias = bias.repeat_interleave(2, dim=0) if bias is not None else None  # (2H, T, S)
        if self.record_max_logit:
            self.max_logit = max_logit(q2, k, spec, self.scale)
        drop = self.dropout if self.training else 0.0
        a = self.kernel(q2, k, v, spec=spec, bias=bias, scale=self.scale, dropout=drop, **self.kernel_kw)
        a = a.view(B, H, 2, T, D)  # A_1 V, A_2 V
        y = a[:, :, 0] - self.lam().to(a.dtype) * a[:, :, 1]  # (B, H, T, D)
        return self.subln(y) * (1.0 - self.lambda_init)


@register
class Differential(Mechanism):
    """attn=diff: differential attention (Ye et al. 2024)."""

    name = "diff"
    fields = ("lambda_init",)
    supports_qk_norm = False  # a norm over D would mix the two halves' scales; the paper has none
    supports_gate = False  # not built: the paper's head already ends in RMSNorm and the (1 − λ_init) scale
    supports_sinks = False  # a sink per map would need 2·H sink logits; not built
    kernel_needs_gqa = True  # the two maps are 2·H query heads on the KV heads

    @classmethod
    def _extra_unsupported(cls, cfg: DictConfig, kernel: Kernel) -> str | None:
        from ..registry import POSITIONAL

        D = cfg.model.d_model // cfg.attn.n_heads
        if D % 2:
            return (f"attn=diff: head_dim={D} (model.d_model / attn.n_heads) must be even: "
                    "q and k split into two halves, one per softmax map")
        if POSITIONAL.get(cfg.pos.name).rotates and (D // 2) % 2:
            return (f"pos={cfg.pos.name}: attn=diff rotates each q/k half of head_dim/2={D // 2} dims, "
                    "which must be even (model.d_model / attn.n_heads divisible by 4)")
        lam = cfg.attn.get("lambda_init")
        if lam is not None and not 0 <= lam < 1:
            return f"attn.lambda_init={lam}: must be in [0, 1) (null = the paper's depth schedule)"
        return None

    @classmethod
    def build(cls, spec: Spec, kernel: Kernel, layer: int) -> nn.Module:
        a, m = spec.cfg.attn, spec.cfg.model
        lam = paper_lambda_init(layer) if a.lambda_init is None else float(a.lambda_init)
        return DifferentialAttention(spec.d_model, spec.n_heads, spec.n_kv_heads, kernel, lam, a.window,
                                     bool(a.qkv_bias), float(a.dropout), float(m.dropout), a.softcap,
                                     bool(m.bias), float(spec.cfg.norm.eps))

    @classmethod
    def attention_flops(cls, spec: Spec, keys: float, decode: bool) -> float:
        """2·H heads of D dims scoring (the zeroed half included) and weighting V: 2 × MHA's 2·2·H·D·k̄.
        The written-out formula needs 2·H·d·k̄·2 for the scores and 2·2·H·D·k̄ for the two AVs (1.5 × MHA)."""
        return 2 * (2 * 2 * spec.n_heads * spec.head_dim * keys)
