"""Analytic FLOPs (a multiply-add counts 2), after Kaplan et al. 2020 / PaLM appendix B.

Per token, per layer, with d = d_model, H query heads, Hkv KV heads, D = head_dim,
h = FFN hidden size and k̄ the average number of keys a query attends to:

    qkv projection   2·d·(H + 2·Hkv)·D
    output proj      2·d·d
    output gate      2·d·g              (attn.gate: g = H headwise, H·D elementwise, 0 none)
    scores + AV      2·2·H·D·k̄          (the T-dependent term)
    FFN              2·n_mats·d·h       (n_mats = 2 plain, 3 gated)
plus the LM head 2·d·V once per token. Training = 3 × forward (backward ≈ 2 × forward).

k̄ for a sequence of length T: full (non-causal) T; causal (T+1)/2 (the halving);
a window w: mean over positions i of min(i+1, w). GQA changes only the projection
term (fewer K/V heads), not the score term. Norms, softmax, activations and
embedding lookups are O(d) per token and left out, as is usual; so are the gate's sigmoid and
product (O(d)) and attn.sinks (one extra softmax column per head: O(H) per token, no value).

Decoding token n after a prompt of T tokens sees min(T+n, w) keys (the query at
absolute position p sees p+1 keys, capped by the window), so
`flops_per_token_decode` averages k̄ over the generated positions.

attn=diff and attn=linear keep the projection term and replace the score term with their own
(`attention_flops` in model/differential.py, model/linear_attention.py; linear attention's decode
term does not depend on the context). attn.short_conv = K adds 2·K·(H + 2·Hkv)·D per token and layer
(model/short_conv.py; inside linear attention's own term). attn=mla replaces the projection and score terms (see `mla_layer_flops`): its keys and values
are up-projected from the cached latent, once per token in a full pass but for every cached
key on each decode step, unless `attn.absorb` folds the up-projections into the query and output.
"""
from __future__ import annotations

from typing import Any, Optional

from ..config.spec import Spec, as_spec
from ..model import short_conv
from ..model.mechanism import mechanism_of


def mean_keys(T: int, causal: bool = True, window: Optional[int] = None) -> float:
    if not causal:
        return float(T)
    if window is None or window >= T:
        return (T + 1) / 2
    # positions 0..w-1 see i+1 keys, the remaining T-w see w keys
    return (window * (window + 1) / 2 + (T - window) * window) / T


def ffn_flops_per_token(spec: Spec) -> float:
    """2 · n_matrices · d · hidden: the FFN component says how many matrices and how wide (model/ffn.py)."""
    return 2 * spec.ffn_matrices * spec.d_model * spec.ffn_hidden


def mla_layer_flops(spec: Spec, keys: float, decode: bool = False) -> float:
    """attn=mla, one layer, one query token attending to `keys` keys (model/mla.py), with
    r = kv_lora_rank, rq = q_lora_rank, dn/dr/dv = qk_nope/rope/v head dims:

        query        2·d·H·(dn+dr), or low rank 2·d·rq + 2·rq·H·(dn+dr)
        kv_down      2·d·(r+dr)                  (latent and shared RoPE key of the new token)
        expanded     kv_up 2·r·H·(dn+dv) per latent expanded (1 per token in a full pass,
                     all `keys` on a decode step), scores 2·H·(dn+dr)·k̄, AV 2·H·dv·k̄
        absorbed     decode only: q·W_uk 2·H·dn·r, scores 2·H·(r+dr)·k̄, AV 2·H·r·k̄, ·W_uv 2·H·r·dv
        out          2·H·dv·d"""
    x, d = spec.mla, spec.d_model
    H, r = x.n_heads, x.kv_rank
    query = 2 * d * H * x.qk if x.q_rank is None else 2 * d * x.q_rank + 2 * x.q_rank * H * x.qk
    fixed = query + 2 * d * (r + x.rope) + 2 * H * x.v * d
    if decode and spec.cfg.attn.absorb:
        return fixed + 2 * H * x.nope * r + 2 * H * r * x.v + 2 * H * (r + x.rope + r) * keys
    expanded = keys if decode else 1
    return fixed + 2 * r * H * (x.nope + x.v) * expanded + 2 * H * (x.qk + x.v) * keys


def _flops_per_token(spec: Spec, keys: float, decode: bool = False) -> float:
    """Forward FLOPs of one token whose query attends to `keys` keys (on average)."""
    d, H, L, V = spec.d_model, spec.n_heads, spec.n_layers, spec.vocab_size
    if spec.mla is not None:
        return L * (mla_layer_flops(spec, keys, decode) + ffn_flops_per_token(spec)) + 2 * d * V
    D, Hkv = spec.head_dim, spec.n_kv_heads
    proj = 2 * d * (H + 2 * Hkv) * D + 2 * d * d + 2 * d * spec.gate_dim
    mech = mechanism_of(spec.cfg)  # attn=diff / linear count their own token mixing
    attn = mech.attention_flops(spec, keys, decode) if mech is not None else 2 * 2 * H * D * keys + short_conv.flops(spec)
    return L * (proj + attn + ffn_flops_per_token(spec)) + 2 * d * V


def flops_per_token_fwd(cfg: Any, seq_len: int, causal: bool = True) -> float:
    """Takes a resolved spec or a config (as every function here)."""
    spec = as_spec(cfg)
    return _flops_per_token(spec, mean_keys(seq_len, causal, spec.window))


def flops_per_token_train(cfg: Any, seq_len: int) -> float:
    return 3 * flops_per_token_fwd(cfg, seq_len)


def flops_per_token_decode(cfg: Any, prompt_len: int, new_tokens: int) -> float:
    """Average forward FLOPs per generated token, tokens prompt_len .. prompt_len+new_tokens-1."""
    spec = as_spec(cfg)
    w = spec.window
    keys = [p + 1 if w is None else min(p + 1, w) for p in range(prompt_len, prompt_len + new_tokens)]
    return _flops_per_token(spec, sum(keys) / max(len(keys), 1), decode=True)
