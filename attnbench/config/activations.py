"""What a training step keeps for its backward pass, counted from the resolved spec (no model built).

The size check (size.py) used to count one activation tensor, the logits, which is a lower bound
several times under a training job's real peak (issue 25: 59 MiB estimated, 274 MiB measured for
d=256, L=4, B=8, T=256). A training step holds, at the start of its backward pass, every tensor
autograd saved in the forward pass. Per token and per block, in elements (d = d_model, kvd =
n_kv_heads · head_dim, h = the FFN's hidden width, H = heads):

    norms              2d       the two norms' inputs
    FFN                d + 2h   its input; gelu: its input and output (gated FFNs: 5h, the gate, the
                                value, the activation, its input copy and their product)
    softmax attention  4d + 2kvd  the block input, q/k/v (one projection), the kernel's output and its
                                (B, T, C) copy for the output projection; + d + 2kvd for attn.short_conv
                                (the convolved q/k/v); + 2(d + kvd) for RoPE (the
                                rotated halves and the rotated q, k); + 2(d + kvd) for qk-norm; + d +
                                gate width for a gate; + H·T' scores where the kernel materialises them
                                (manual, sdpa_math), T' = min(T, window)
    differential       + 6d and the scores of 2H heads: the doubled queries and outputs, the
                                difference and its sub-norm
    MLA                `_mla`: the query, the latent (+ its RoPE key) and its norm, the rotated
                                parts, the up-projected keys and values, the concatenated q and k, the
                                output and its copy; + H·T scores when the q/k and v widths differ
                                (SDPA then runs the math kernel on CPU)
    linear attention   `_linear`: q/k/v, φ(q), φ(k) (F = 1 + D + D² for taylor2; elu1 keeps elu's
                                input and output too; GQA broadcasts k to every query head), each
                                chunk's masked (C × C) scores, the numerator and denominator, and the
                                running states S, z (F × (Dv + 1) per KV head, one per chunk + 1 per
                                sequence): for taylor2 at D=32 they are most of the layer
    every block        + d/2    norm statistics, the kernel's log-sum-exp, small buffers (traced)
Outside the blocks: the embedding output and the final norm's input and output (3d per token).
Checked against the tensors autograd really saves (tests/test_size_estimate.py traces the model with
FakeTensorMode and compares) and against measured peaks (benchmarks/size_check.py).
"""
from __future__ import annotations

import math
from typing import Any

SCORES_KERNELS = ("manual", "sdpa_math")  # kernels that materialise the (T, S) attention weights


def block_elems(spec: Any, T: int) -> float:
    """Elements one block saves for backward, per token (see the module docstring)."""
    d, h = spec.d_model, spec.ffn_hidden
    ffn = d + (2 if spec.ffn_matrices == 2 else 5) * h
    a = spec.cfg.attn
    if spec.mla is not None:
        attn = _mla(spec, T)
    elif a.name == "linear":
        attn = _linear(spec, T)
    else:
        attn = _softmax(spec, T)
    return 2 * d + ffn + attn + d / 2  # d/2: norm statistics, the kernel's log-sum-exp, small buffers (traced)


def rotates(spec: Any) -> bool:
    """Whether the positional scheme rotates q and k (RoPE): it defines its own `rotary`."""
    from ..model.position import PositionalScheme
    from ..registry import POSITIONAL

    return POSITIONAL.get(spec.cfg.pos.name).rotary is not PositionalScheme.rotary


def _scores(spec: Any, T: int, heads: int) -> float:
    window = spec.cfg.attn.get("window")
    return heads * min(T, int(window)) if window else heads * T


def _softmax(spec: Any, T: int) -> float:
    a, d, H = spec.cfg.attn, spec.d_model, spec.n_heads
    kvd = spec.n_kv_heads * spec.head_dim
    out = d + (d + 2 * kvd) + 2 * d  # block input, q/k/v (one projection), kernel output, its copy
    if a.get("short_conv"):
        out += d + 2 * kvd  # attn.short_conv: the convolved q/k/v (as in _linear)
    if rotates(spec):
        out += 2 * (d + kvd)  # RoPE: the rotated halves and the rotated q and k
    if spec.cfg.norm.get("qk_norm"):
        out += 2 * (d + kvd)  # the normed q and k, and the norm's own input copies
    if spec.gate_dim:
        out += d + spec.gate_dim  # the gate's input (the kernel output) and the gate value
    heads = H
    if a.name == "diff":  # two maps per head: doubled queries and outputs, then the sub-norm's in and out
        out += 2 * d + d + 2 * d + d
        heads = 2 * H
    if str(a.impl) in SCORES_KERNELS:
        out += _scores(spec, T, heads)
    return out


def _mla(spec: Any, T: int) -> float:
    m, d = spec.mla, spec.d_model
    H = m.n_heads
    out = d + H * m.qk + (m.kv_rank + m.rope) + m.kv_rank  # input, query, latent (+ rope key), normed latent
    if m.q_rank:
        out += 2 * m.q_rank  # the low-rank query and its norm
    out += 2 * (H * m.rope + m.rope)  # RoPE: the rotated halves and the rotated q and k parts
    out += H * (m.nope + m.v) + 2 * H * m.qk  # up-projected keys and values; the concatenated q and k
    out += 2 * H * m.v  # the kernel output and its copy
    if str(spec.cfg.attn.impl) in SCORES_KERNELS or m.qk != m.v:  # unequal widths: the math kernel
        out += _scores(spec, T, H)
    return out


def _linear(spec: Any, T: int) -> float:
    from ..model.linear_attention import FEATURE_MAPS

    a, d, H, Hkv, D = spec.cfg.attn, spec.d_model, spec.n_heads, spec.n_kv_heads, spec.head_dim
    kvd = Hkv * D
    F = FEATURE_MAPS[str(a.feature_map)][1](D)
    C = min(int(a.chunk_size), T)
    chunks = math.ceil(T / C)
    out = d + (d + 2 * kvd) * (2 if a.get("short_conv") else 1)  # input, q/k/v (and the convolved copy)
    if rotates(spec):
        out += 2 * (d + kvd)
    grouped = H if Hkv < H else 0  # GQA: the matmuls broadcast k and the states to every query head
    out += (H + Hkv + grouped) * F * (3 if a.feature_map == "elu1" else 1)  # φ(q), φ(k) (elu1: elu's too)
    out += H * C + H * D + H  # the masked chunk scores, the numerator, the denominator
    out += (chunks + 1) * (Hkv + grouped) * F * (D + 1) / T  # the running states S (F × Dv), z (F) per sequence
    return out + 2 * d  # the output and its copy


def saved_bytes(spec: Any, B: int, T: int, elem: int) -> int:
    """Bytes a training step's forward pass saves for backward at batch B, length T (logits apart)."""
    per_token = spec.n_layers * block_elems(spec, T) + 3 * spec.d_model
    return int(B * T * per_token * elem)


def layer_bytes(spec: Any, B: int, T: int, elem: int) -> int:
    """One block's saved bytes: the unit of the backward pass's transient (size.py)."""
    return int(B * T * block_elems(spec, T) * elem)
