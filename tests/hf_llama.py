"""Port an attnbench Llama-style GPT (pos=rope, norm=rmsnorm, ffn=swiglu, no biases) into
transformers' LlamaForCausalLM / Qwen3ForCausalLM with the same weights, for equivalence tests.

Layouts: attnbench's fused `qkv` is q | k | v, each head a contiguous D-slice (view (T, H, D)),
which is exactly how HF reshapes q_proj/k_proj/v_proj. Both rotate with the rotate-half
(GPT-NeoX) layout, pairing dims i and i + D/2 with cos/sin = cat(freqs, freqs), so no
permutation of q/k rows is needed (a GPT-J/Meta-interleaved checkpoint would need one)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attnbench.model.ffn import gated_hidden
from attnbench.model.layout import resolve_layout

LLAMA_OVERRIDES = ["stages=[]", "device=cpu", "pos=rope", "norm=rmsnorm", "ffn=swiglu", "attn.impl=manual",
                   "model.init_std=0.1"]


def hf_config(cfg: Any, arch: str = "llama", rope_parameters: dict | None = None):
    from transformers import LlamaConfig, Qwen3Config

    m, a = cfg.model, cfg.attn
    kw = dict(vocab_size=m.vocab_size, hidden_size=m.d_model, num_hidden_layers=m.n_layers,
              intermediate_size=gated_hidden(m.d_model, cfg.ffn.mult, cfg.ffn.multiple_of),
              num_attention_heads=a.n_heads, num_key_value_heads=resolve_layout(cfg),
              head_dim=m.d_model // a.n_heads, max_position_embeddings=m.context_length,
              rms_norm_eps=cfg.norm.eps, tie_word_embeddings=bool(m.tie_embeddings), attention_bias=False,
              rope_parameters={"rope_type": "default", "rope_theta": cfg.pos.base, **(rope_parameters or {})})
    conf = (LlamaConfig if arch == "llama" else Qwen3Config)(**kw)
    conf._attn_implementation = "eager"
    return conf


def port(model: nn.Module, cfg: Any, arch: str = "llama", rope_parameters: dict | None = None) -> nn.Module:
    """The HF model with `model`'s weights (biases must be zero: HF Llama has none)."""
    from transformers import LlamaForCausalLM, Qwen3ForCausalLM

    hf = (LlamaForCausalLM if arch == "llama" else Qwen3ForCausalLM)(hf_config(cfg, arch, rope_parameters)).eval()
    sd = model.state_dict()
    for name, t in sd.items():
        if name.endswith(".bias"):
            assert torch.count_nonzero(t) == 0, f"{name} is not zero; HF Llama has no biases"
    H, Hkv, D = cfg.attn.n_heads, hf.config.num_key_value_heads, cfg.model.d_model // cfg.attn.n_heads
    out = {"model.embed_tokens.weight": sd["wte.weight"], "model.norm.weight": sd["norm_f.weight"],
           "lm_head.weight": sd["lm_head.weight"]}
    for i in range(cfg.model.n_layers):
        b, h = f"blocks.{i}.", f"model.layers.{i}."
        q, k, v = sd[b + "attn.qkv.weight"].split([H * D, Hkv * D, Hkv * D], dim=0)
        out.update({
            h + "self_attn.q_proj.weight": q, h + "self_attn.k_proj.weight": k, h + "self_attn.v_proj.weight": v,
            h + "self_attn.o_proj.weight": sd[b + "attn.out.weight"],
            h + "input_layernorm.weight": sd[b + "norm1.weight"],
            h + "post_attention_layernorm.weight": sd[b + "norm2.weight"],
            h + "mlp.gate_proj.weight": sd[b + "ffn.gate.weight"], h + "mlp.up_proj.weight": sd[b + "ffn.up.weight"],
            h + "mlp.down_proj.weight": sd[b + "ffn.down.weight"],
        })
        if arch == "qwen3":
            out[h + "self_attn.q_norm.weight"] = sd[b + "attn.q_norm.weight"]
            out[h + "self_attn.k_norm.weight"] = sd[b + "attn.k_norm.weight"]
    missing, unexpected = hf.load_state_dict(out, strict=False)
    assert not unexpected, unexpected
    assert set(missing) <= {"lm_head.weight"}, missing  # tied: lm_head is embed_tokens
    return hf


def randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Norm gains away from 1, so a swapped or missing norm shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g))


def hf_cached_logits(hf: nn.Module, idx: torch.Tensor, prefix: int) -> torch.Tensor:
    """Prefill `prefix` tokens, then decode the rest one at a time with HF's KV cache."""
    with torch.no_grad():
        out = hf(idx[:, :prefix], use_cache=True)
        chunks, past = [out.logits], out.past_key_values
        for t in range(prefix, idx.shape[1]):
            out = hf(idx[:, t : t + 1], past_key_values=past, use_cache=True)
            chunks.append(out.logits)
            past = out.past_key_values
    return torch.cat(chunks, dim=1)


def cached_logits(model: nn.Module, idx: torch.Tensor, prefix: int) -> torch.Tensor:
    """attnbench: prefill `prefix` tokens into a KV cache, then decode the rest one at a time."""
    cache = model.init_cache(idx.shape[0], idx.shape[1])
    with torch.no_grad():
        chunks = [model(idx[:, :prefix], cache)]
        for t in range(prefix, idx.shape[1]):
            chunks.append(model(idx[:, t : t + 1], cache))
    return torch.cat(chunks, dim=1)
