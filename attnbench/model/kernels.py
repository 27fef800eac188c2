"""Attention kernels behind one signature.

    kernel(q, k, v, *, spec, bias, scale, dropout) -> out
    q: (B, H, T, D); k, v: (B, Hkv, S, D) with H % Hkv == 0; out: (B, H, T, D)

Kernels with `supports_softcap` also take `softcap=` (attn.softcap), kernels with `supports_sinks`
`sinks=` (attn.sinks: one logit per query head, (H,), model/sinks.py); each is only passed when set.

`manual` is the plain reference every other kernel is tested against. A kernel
declares what it cannot serve (device, bias, window, GQA, rotary, KV cache,
backward) and `unsupported()` turns that into a config error before anything is
allocated, so a kernel never silently falls back to another code path.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..registry import KERNELS
from . import sinks as _sinks  # attn.sinks inside the kernels
from .masks import MaskSpec as MaskSpec  # re-exported: kernels.MaskSpec is public
from .masks import additive_mask as additive_mask
from .masks import allowed_mask as allowed_mask

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

ALL_DEVICES = frozenset({"cpu", "cuda", "mps"})


class ProjectedAttention(Protocol):
    """What a kernel that `owns_projection` reads of the attention module (CausalSelfAttention)."""

    n_heads: int
    dropout: float
    training: bool
    qkv: nn.Linear
    out: nn.Linear


class Kernel:
    """Base class: capability flags + the check that turns them into config errors."""

    name = "base"
    devices: frozenset[str] = ALL_DEVICES
    backward_devices: frozenset[str] = ALL_DEVICES
    supports_bias = True
    supports_window = True
    supports_gqa = True
    supports_rotary = True
    supports_cache = True
    supports_softcap = False  # can apply attn.softcap (a score modification before the softmax)
    supports_qk_norm = True  # can normalise q/k between the projection and the scores
    supports_sinks = False  # can add a learned per-head sink logit to every softmax (attn.sinks); takes sinks=
    supports_v_head_dim = True  # v's head dim may differ from q/k's (attn=mla)
    owns_projection = False  # True: the kernel runs the projections itself (nn.MultiheadAttention)
    compiles_itself = False  # True: the kernel calls torch.compile on its own (flex)

    def unsupported(self, req: Requirements) -> str | None:
        """One-line reason this kernel cannot serve what a job requires, or None."""
        if req.device not in self.devices:
            return f"not available on {req.device} (runs on {sorted(self.devices)})"
        if req.bias and not self.supports_bias:
            return f"cannot add an attention bias, so not pos={req.pos}"
        if req.rotary and not self.supports_rotary:
            return f"cannot rotate q/k inside its projections, so not pos={req.pos}"
        if req.window and not self.supports_window:
            return "cannot apply a sliding window (attn.window must be null)"
        if req.gqa and not self.supports_gqa:
            return f"needs n_kv_heads = n_heads, so not attn={req.attn}"
        if req.softcap and not self.supports_softcap:
            return "cannot modify attention scores, so no attn.softcap (use attn.impl=manual or flex)"
        if req.qk_norm and not self.supports_qk_norm:
            return "cannot normalise q/k inside its projections, so not norm.qk_norm=true"
        if req.sinks and not self.supports_sinks:
            able = ", ".join(n for n in KERNELS.names() if KERNELS.get(n).supports_sinks)
            return f"cannot add a per-head sink logit, so not attn.sinks=true (use attn.impl={able})"
        if req.gate and self.owns_projection:
            return "runs its own output projection, so no attn.gate (the gate acts before it)"
        if req.needs_cache and not self.supports_cache:
            return "has no KV cache; drop prefill/decode from bench.modes"
        # Only training is rejected: the bench records a `skipped` train_step row instead.
        if req.needs_backward and req.device not in self.backward_devices:
            return f"has no backward on {req.device}, so no training; use stages=[bench]"
        return self._extra_unsupported(req)

    def _extra_unsupported(self, req: Requirements) -> str | None:
        return None

    # (B, H, T, D) from q (B, H, T, D), k/v (B, Hkv, S, D). The keywords each kernel takes are its own
    # (softcap=, sinks= only where it supports them), hence the open signature here.
    def __call__(self, q: Tensor, k: Tensor, v: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        raise NotImplementedError

    def module_forward(self, attn: ProjectedAttention, x: Tensor, spec: MaskSpec, bias: Tensor | None) -> Tensor:
        """(B, T, C) -> (B, T, C) with the module's own weights: only kernels that `owns_projection`."""
        raise NotImplementedError


@dataclass(frozen=True)
class Requirements:
    """What a job asks of its attention kernel, in plain terms: kernels never read the config.
    `pos` and `attn` only name the options in the messages."""

    device: str
    needs_backward: bool = False  # training
    needs_cache: bool = False  # prefill / decode benches
    bias: bool = False  # an additive score bias (ALiBi)
    rotary: bool = False  # q/k rotated between the projections and the scores (RoPE)
    window: bool = False
    gqa: bool = False  # fewer KV heads than query heads
    softcap: bool = False
    qk_norm: bool = False
    sinks: bool = False  # a learned sink logit per head in the softmax (attn.sinks)
    gate: bool = False  # a gate between the kernel and the output projection (attn.gate)
    dropout: bool = False  # attention dropout > 0
    dtype: str = "float32"  # device.dtype
    pos: str = ""
    attn: str = ""


def softcap_scores(scores: Tensor, softcap: float | None) -> Tensor:
    """Gemma 2 soft-capping: softcap · tanh(scores / softcap), smooth and bounded in (-cap, cap)."""
    return scores if softcap is None else softcap * torch.tanh(scores / softcap)


def manual_attention(q: Tensor, k: Tensor, v: Tensor, *, spec: MaskSpec, bias: Tensor | None,
                     scale: float, dropout: float = 0.0, softcap: float | None = None,
                     sinks: Tensor | None = None) -> Tensor:
    """Explicit softmax(cap(q kᵀ · scale) + bias, masked) v. GQA by a grouped reshape (no K/V copy).
    The cap acts on q kᵀ · scale only, before bias and mask (as Gemma 2 caps before its mask).
    `sinks` (H,): one more softmax column per head holding its sink logit, dropped after the softmax."""
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    G = H // Hkv
    qg = q.view(B, Hkv, G, T, D)  # (B, Hkv, G, T, D): query heads grouped by their KV head
    # The reference computes scores, bias and softmax in fp32 whatever the compute dtype: under bf16
    # autocast, q kᵀ rounded to bf16 (8 mantissa bits) is off by up to 0.4% of each score before the
    # softmax (docs/configuration.md, "bf16 attention reference"). Autocast would round the fp32
    # matmul back to bf16, hence the disabled region.
    with torch.autocast(q.device.type, enabled=False):
        scores = softcap_scores((qg.float() @ k.float().unsqueeze(2).transpose(-2, -1)) * scale, softcap)  # (B, Hkv, G, T, S)
    if bias is not None:
        scores = scores + bias.view(Hkv, G, T, S).float()
    scores = scores.masked_fill(~allowed_mask(T, S, spec, q.device), float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1) if sinks is None else _sinks.softmax_with_sinks(scores.float(), sinks)
    att = probs.to(q.dtype)
    if dropout > 0:
        att = F.dropout(att, p=dropout)
    return (att @ v.unsqueeze(2)).reshape(B, H, T, v.shape[-1])  # (B, Hkv, G, T, Dv) -> (B, H, T, Dv)


@KERNELS.register("manual")
class ManualKernel(Kernel):
    """Reference: materialises the (T, S) score matrix (O(T²) memory)."""

    name = "manual"
    supports_softcap = True
    supports_sinks = True

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, *, spec: MaskSpec, bias: Tensor | None, scale: float,
                 dropout: float = 0.0, softcap: float | None = None, sinks: Tensor | None = None) -> Tensor:
        return manual_attention(q, k, v, spec=spec, bias=bias, scale=scale, dropout=dropout, softcap=softcap,
                                sinks=sinks)


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, *, spec: MaskSpec, bias: Tensor | None,
                   scale: float, dropout: float = 0.0, sinks: Tensor | None = None) -> Tensor:
    """F.scaled_dot_product_attention with the cheapest correct mask (`sinks`: model/sinks.py).

    `is_causal=True` is only used when T == S and no offset: SDPA aligns its causal
    mask to the top-left, which is wrong for a chunk decoded after a KV cache."""
    if sinks is not None:
        return _sinks.sdpa_with_sinks(q, k, v, spec=spec, bias=bias, scale=scale, sinks=sinks, dropout=dropout)
    T, S = q.shape[2], k.shape[2]
    gqa = k.shape[1] != q.shape[1]
    plain = bias is None and spec.window is None and spec.causal
    if plain and spec.q_offset == 0 and T == S:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout, scale=scale, enable_gqa=gqa)
    if plain and T == 1 and spec.q_offset + 1 == S:  # one decode step sees every cached key
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scale, enable_gqa=gqa)
    if bias is None:
        mask = allowed_mask(T, S, spec, q.device)  # (T, S) bool
    else:
        # On CPU a float mask always goes to the math backend, which keeps fp32 intermediates: an fp32
        # bias is not rounded to bf16. CUDA's efficient kernel rejects a bias whose dtype is not q's.
        mask_dtype = torch.float32 if q.device.type == "cpu" else q.dtype
        mask = additive_mask(T, S, spec, bias, mask_dtype, q.device)  # (H, T, S)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale, enable_gqa=gqa)


@KERNELS.register("sdpa")
class SDPAKernel(Kernel):
    """PyTorch SDPA; PyTorch picks the backend (flash / efficient / math)."""

    name = "sdpa"
    backend: SDPBackend | None = None
    supports_sinks = True  # as one padded sink key (model/sinks.py)

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, *, spec: MaskSpec, bias: Tensor | None, scale: float,
                 dropout: float = 0.0, sinks: Tensor | None = None) -> Tensor:
        if self.backend is None:
            return sdpa_attention(q, k, v, spec=spec, bias=bias, scale=scale, dropout=dropout, sinks=sinks)
        with sdpa_kernel(self.backend):  # pinned: a fallback raises instead of lying in a timing
            return sdpa_attention(q, k, v, spec=spec, bias=bias, scale=scale, dropout=dropout, sinks=sinks)


@KERNELS.register("sdpa_math")
class SDPAMathKernel(SDPAKernel):
    """SDPA pinned to the math backend (materialises scores, like `manual`)."""

    name = "sdpa_math"
    backend = SDPBackend.MATH


@KERNELS.register("sdpa_flash")
class SDPAFlashKernel(SDPAKernel):
    """SDPA pinned to FlashAttention (Dao et al. 2022). On CPU it takes a boolean mask
    but no float bias; on CUDA it takes no mask at all (causal only)."""

    name = "sdpa_flash"
    backend = SDPBackend.FLASH_ATTENTION
    devices = frozenset({"cpu", "cuda"})
    supports_bias = False
    supports_v_head_dim = False  # "No available kernel" on CPU; CUDA's flash check wants equal q/k/v dims too

    def _extra_unsupported(self, req: Requirements) -> str | None:
        if req.device == "cuda" and req.window:
            return "takes no mask on cuda, so no sliding window (attn.window must be null)"
        if req.device == "cuda" and req.sinks:  # the sink key needs a mask once a chunk follows a cache
            return "takes no mask on cuda, so no attn.sinks (use attn.impl=sdpa or manual)"
        if req.device == "cuda" and req.dtype == "float32":  # CUDA's flash kernel is fp16/bf16 only
            return "runs only in float16/bfloat16 on cuda (set device.dtype=bfloat16)"
        if req.device == "cpu" and req.dropout:  # PyTorch's CPU flash kernel has no dropout
            return "has no attention dropout on cpu (attn.dropout must be 0)"
        return None


@KERNELS.register("sdpa_efficient")
class SDPAEfficientKernel(SDPAKernel):
    """SDPA pinned to memory-efficient attention (xFormers, Rabe & Staats 2021); CUDA only."""

    name = "sdpa_efficient"
    backend = SDPBackend.EFFICIENT_ATTENTION
    devices = frozenset({"cuda"})
    # torch 2.13's SDPA documentation: enable_gqa "works only for Flash_attention and math kernel";
    # pinned to this backend a GQA/MQA call would raise "No available kernel" at run time.
    supports_gqa = False


@KERNELS.register("wrapper")
class WrapperKernel(Kernel):
    """The textbook MultiHeadAttentionWrapper: each head attends on its own, results
    concatenated. Same parameters as every other kernel; the slow baseline."""

    name = "wrapper"
    supports_softcap = True  # each head runs manual_attention, which applies it
    supports_sinks = True  # each head passes its own sink logit

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, *, spec: MaskSpec, bias: Tensor | None, scale: float,
                 dropout: float = 0.0, softcap: float | None = None, sinks: Tensor | None = None) -> Tensor:
        H, Hkv = q.shape[1], k.shape[1]
        G = H // Hkv
        heads = []
        for h in range(H):
            kv = slice(h // G, h // G + 1)
            b = bias[h : h + 1] if bias is not None else None
            heads.append(manual_attention(q[:, h : h + 1], k[:, kv], v[:, kv], spec=spec, bias=b,
                                          scale=scale, dropout=dropout, softcap=softcap,
                                          sinks=sinks[h : h + 1] if sinks is not None else None))
        return torch.cat(heads, dim=1)  # (B, H, T, D)


@KERNELS.register("torch_mha")
class TorchMHAKernel(Kernel):
    """nn.MultiheadAttention's functional form run on the module's own qkv/out weights.
    It projects internally, so it cannot rotate q/k (RoPE), group KV heads or use a cache."""

    name = "torch_mha"
    supports_gqa = False
    supports_rotary = False
    supports_cache = False
    supports_qk_norm = False
    supports_v_head_dim = False  # nn.MultiheadAttention's own projections: one head dim
    owns_projection = True

    def module_forward(self, attn: ProjectedAttention, x: Tensor, spec: MaskSpec, bias: Tensor | None) -> Tensor:
        B, T, C = x.shape
        if bias is None:
            mask = ~allowed_mask(T, T, spec, x.device)  # nn.MHA: True = masked out
        else:  # (B*H, T, T), as nn.MultiheadAttention wants a per-head float mask
            mask = additive_mask(T, T, spec, bias, x.dtype, x.device).repeat(B, 1, 1)
        xt = x.transpose(0, 1)  # (T, B, C)
        out, _ = F.multi_head_attention_forward(
            xt, xt, xt, C, attn.n_heads, attn.qkv.weight, attn.qkv.bias, None, None, False,
            attn.dropout if attn.training else 0.0, attn.out.weight, attn.out.bias,
            training=attn.training, need_weights=False, attn_mask=mask,
        )
        return out.transpose(0, 1)  # (B, T, C), output projection already applied


@KERNELS.register("flex")
class FlexKernel(Kernel):
    """FlexAttention: block-sparse masks for causal/window (a banded window skips whole
    blocks) and a score_mod for the bias. No backward on CPU. Compiled on CUDA or when
    `device.compile=true` (eager flex materialises scores and is only a correctness path)."""

    name = "flex"
    compiles_itself = True  # torch.compile on CUDA even in eager mode: no dispatch-mode backend probe
    supports_softcap = True  # in the score_mod
    backward_devices = frozenset({"cuda"})
    devices = frozenset({"cpu", "cuda"})
    compile = os.environ.get("ATTNBENCH_FLEX_COMPILE", "0") == "1"

    def __init__(self) -> None:
        self._masks: dict[tuple[int, int, MaskSpec, str], BlockMask] = {}
        self._compiled: Callable[..., Tensor] | None = None

    def _extra_unsupported(self, req: Requirements) -> str | None:
        return "has no attention dropout (attn.dropout must be 0)" if req.dropout else None

    def _block_mask(self, T: int, S: int, spec: MaskSpec, device: torch.device) -> BlockMask:
        from torch.nn.attention.flex_attention import create_block_mask

        key = (T, S, spec, str(device))
        if key not in self._masks:
            off, win = spec.q_offset, spec.window

            def mask_mod(b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
                ok = ki <= qi + off if spec.causal else ki >= 0
                return ok & (qi + off - ki < win) if win is not None else ok

            if len(self._masks) > 64:
                self._masks.clear()
            self._masks[key] = create_block_mask(mask_mod, None, None, T, S, device=str(device))
        return self._masks[key]

    def _fn(self, device: torch.device) -> Callable[..., Tensor]:
        from torch.nn.attention.flex_attention import flex_attention

        if not (self.compile or device.type == "cuda"):
            return flex_attention
        if self._compiled is None:
            self._compiled = torch.compile(flex_attention, dynamic=False)
        return self._compiled

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, *, spec: MaskSpec, bias: Tensor | None, scale: float,
                 dropout: float = 0.0, softcap: float | None = None) -> Tensor:
        if dropout > 0:
            raise ValueError("attn.impl=flex: attention dropout is not supported (set attn.dropout=0)")
        T, S = q.shape[2], k.shape[2]
        score_mod: Callable[..., Tensor] | None = None
        if bias is not None and softcap is not None:
            def score_mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:  # score = q·k·scale; cap first, then the bias (as manual)
                return softcap * torch.tanh(score / softcap) + bias[h, qi, ki]
        elif softcap is not None:
            def score_mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
                return softcap * torch.tanh(score / softcap)
        elif bias is not None:
            def score_mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
                return score + bias[h, qi, ki]
        return self._fn(q.device)(q, k, v, score_mod=score_mod, block_mask=self._block_mask(T, S, spec, q.device),
                                  scale=scale, enable_gqa=k.shape[1] != q.shape[1])


def get_kernel(name: str) -> Kernel:
    """A fresh kernel instance (kernels may hold per-instance caches)."""
    kernel: Kernel = KERNELS.get(name)()
    return kernel


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
