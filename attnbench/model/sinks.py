"""Attention sinks (attn.sinks): one learned logit per head that joins every softmax as an extra
column and takes probability mass without contributing a value (gpt-oss; "softmax off by one" with
a learned per-head offset). StreamingLLM (Xiao et al. 2023) finds that trained models dump attention
on the first tokens and that evicting them from a sliding window breaks the model; a sink logit
gives every head a place to put that mass that no window can evict.

    p_ij = exp(s_ij) / (exp(sink_h) + Σ_j' exp(s_ij'))        out_i = Σ_j p_ij v_j

Two implementations, both an extra logit column inside one kernel call (never a loop over heads):
- `softmax_with_sinks`: the explicit reference (manual): append the column, softmax, drop it, as
  gpt-oss's eager attention in transformers;
- `sdpa_with_sinks`: SDPA, which has no sink argument, on q, k, v padded by one sink key. Every query
  gets an extra channel holding sink_h / scale, the sink key is 1 in that channel and 0 elsewhere and
  every real key 0 there, so q·k·scale is unchanged for real keys and equals sink_h for the sink
  key; the sink's value is 0. The sink key sits at index 0, so a full causal pass keeps SDPA's
  `is_causal` fast path by prepending one dummy query row (row i+1 then sees the sink and keys 0..i).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from .masks import MaskSpec, additive_mask, allowed_mask


def softmax_with_sinks(scores: Tensor, sinks: Tensor) -> Tensor:
    """softmax over [scores, sink] without the sink column. scores (B, Hkv, G, T, S) masked with -inf,
    sinks (H,) with H = Hkv·G → probabilities (B, Hkv, G, T, S) that sum to 1 - p(sink) per row."""
    B, Hkv, G, T, _ = scores.shape
    col = sinks.to(scores.dtype).view(1, Hkv, G, 1, 1).expand(B, Hkv, G, T, 1)
    return torch.softmax(torch.cat([scores, col], dim=-1), dim=-1)[..., :-1]


def _pad(D: int, device: torch.device) -> int:
    """Extra channels: 1 on CPU; to a multiple of 8 elsewhere (CUDA's fused kernels want aligned head dims)."""
    return 1 if device.type == "cpu" else 8 - D % 8


def sdpa_with_sinks(q: Tensor, k: Tensor, v: Tensor, *, spec: MaskSpec, bias: Tensor | None, scale: float,
                    sinks: Tensor, dropout: float = 0.0) -> Tensor:
    """F.scaled_dot_product_attention with a sink logit per query head (see the module docstring).
    q (B, H, T, D); k, v (B, Hkv, S, D); sinks (H,) → (B, H, T, D)."""
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    P = _pad(D, q.device)
    causal_fast = bias is None and spec.window is None and spec.causal and spec.q_offset == 0 and T == S
    shift = 1 if causal_fast else 0  # the dummy query row that lines is_causal up with the sink key
    # One F.pad per tensor (zeros: real keys get 0 in the sink channel), then two small in-place writes.
    qs = F.pad(q, (0, P, shift, 0))  # (B, H, shift + T, D + P)
    qs[..., D] = (sinks / scale).to(q.dtype).view(1, H, 1)
    ks = F.pad(k, (0, P, 1, 0))  # (B, Hkv, 1 + S, D + P): the sink key, then the real keys
    ks[:, :, 0, D] = 1.0
    vs = F.pad(v, (0, P, 1, 0))  # the sink's value is 0; same width as q/k (CPU flash wants equal head dims)
    if causal_fast:
        return F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale, dropout_p=dropout,
                                              enable_gqa=Hkv != H)[:, :, 1:, :D]
    shifted = MaskSpec(causal=spec.causal, window=spec.window, q_offset=spec.q_offset + 1)  # real key j at index j+1
    if bias is None:
        mask = allowed_mask(T, S + 1, shifted, q.device)  # (T, 1 + S) bool
        mask[:, 0] = True  # the sink is never masked, whatever the window
    else:
        mask_dtype = torch.float32 if q.device.type == "cpu" else q.dtype  # as sdpa_attention
        padded = F.pad(bias, (1, 0))  # (H, T, 1 + S): no bias on the sink
        mask = additive_mask(T, S + 1, shifted, padded, mask_dtype, q.device)
        mask[..., 0] = 0.0
    return F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, scale=scale, dropout_p=dropout,
                                          enable_gqa=Hkv != H)[..., :D]


def config_problem(cfg: DictConfig) -> str | None:
    """One line naming the keys when attn.sinks cannot work with this config, else None (which kernels
    can add the logit is each kernel's `supports_sinks`, checked with the other capabilities)."""
    if cfg.attn.get("sinks", False) and cfg.attn.name == "mla":  # MLA's module (model/mla.py) has no sinks
        return "attn.sinks=true: not with attn=mla (no sink logits on latent attention); use attn=mha, gqa, mqa or local"
    return None
