"""attnbench against Hugging Face's reference implementations (transformers is a test-only dependency).

attnbench's weights are copied into GPT2LMHeadModel / LlamaForCausalLM / MistralForCausalLM
(eager attention, float32) and the logits must agree to 1e-4: the full forward, attnbench's own
KV cache (`init_cache` + a forward in uneven chunks) and HF's cache. The mapping of names and
layouts is documented in docs/reference-models.md. Every parameter is perturbed away from its
init first (norm gains, biases), so a tensor left unmapped or mapped transposed cannot pass.
"""
from __future__ import annotations

import inspect
import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")

from attnbench import build_model, load_config  # noqa: E402
from attnbench.model.ffn import gated_hidden  # noqa: E402

# Tiny matmuls: with torch's default threads on a loaded 2-core box a 32-wide Linear took 38 ms (profiled).
pytestmark = pytest.mark.usefixtures("one_thread")
ATOL = 1e-4
TINY = ["model.d_model=32", "model.n_layers=2", "attn.n_heads=4", "model.vocab_size=64", "model.context_length=64",
        "bench.seq_lens=[8]"]
T = 24  # tokens per test sequence; longer than every window below
CHUNKS = [7, 1, 5, 1, 10]  # uneven prefill + decode steps; sums to T

logging.getLogger("transformers").setLevel(logging.ERROR)  # tiny vocabularies trip bos/eos-id warnings


# ----------------------------------------------------------------------------- helpers
def _attnbench(*overrides: str, zero_biases: bool = False):
    cfg = load_config([*TINY, *overrides])
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if zero_biases and name.endswith(".bias"):
                p.zero_()  # the HF architecture has no bias here; a zero bias is exactly no bias
            else:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return cfg, model


def _hf(model_cls, config, state: dict[str, torch.Tensor]):
    hf = model_cls(config).eval()
    missing, unexpected = hf.load_state_dict(state, strict=False)
    # GPT-2 registers no persistent buffers; Llama/Mistral neither. Everything must be mapped.
    assert not missing and not unexpected, (missing, unexpected)
    return hf


def _tokens(vocab: int, B: int = 2) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(2))  # (B, T)


def _attnbench_chunked(model, idx: torch.Tensor) -> torch.Tensor:
    cache = model.init_cache(idx.shape[0], T)
    out, start = [], 0
    for n in CHUNKS:
        out.append(model(idx[:, start : start + n], cache))
        start += n
    assert start == T and cache.pos == T
    return torch.cat(out, dim=1)  # (B, T, V)


def _hf_chunked(hf, idx: torch.Tensor) -> torch.Tensor:
    # transformers 5.x renames `past_key_values` to `cache` (argument and output); accept either.
    kw = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
    out, start, past = [], 0, None
    for n in CHUNKS:
        res = hf(idx[:, start : start + n], use_cache=True, **{kw: past})
        out.append(res.logits)
        past, start = getattr(res, kw), start + n
    return torch.cat(out, dim=1)  # (B, T, V)


def _compare(model, hf, vocab: int, hf_cache: bool = True) -> None:
    idx = _tokens(vocab)
    with torch.no_grad():
        ref = hf(idx, use_cache=False).logits  # (B, T, V)
        ours = model(idx)
        torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)
        torch.testing.assert_close(_attnbench_chunked(model, idx), ref, atol=ATOL, rtol=0)
        if hf_cache:
            torch.testing.assert_close(_hf_chunked(hf, idx), ref, atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------- GPT-2
def gpt2_state(model) -> dict[str, torch.Tensor]:
    """attnbench → GPT2LMHeadModel. HF's Conv1D stores (in, out): every Linear weight is transposed."""
    s = model.state_dict()
    out = {"transformer.wte.weight": s["wte.weight"], "transformer.wpe.weight": s["pos.wpe.weight"],
           "transformer.ln_f.weight": s["norm_f.weight"], "transformer.ln_f.bias": s["norm_f.bias"],
           "lm_head.weight": s["lm_head.weight"]}
    names = {"norm1": "ln_1", "norm2": "ln_2", "attn.qkv": "attn.c_attn", "attn.out": "attn.c_proj",
             "ffn.up": "mlp.c_fc", "ffn.down": "mlp.c_proj"}
    for i in range(model.n_layers):
        for ours, theirs in names.items():
            w, b = s[f"blocks.{i}.{ours}.weight"], s[f"blocks.{i}.{ours}.bias"]
            out[f"transformer.h.{i}.{theirs}.weight"] = w if ours.startswith("norm") else w.t().contiguous()
            out[f"transformer.h.{i}.{theirs}.bias"] = b
    return out


def gpt2_config(cfg) -> "transformers.GPT2Config":
    m = cfg.model
    return transformers.GPT2Config(
        vocab_size=m.vocab_size, n_positions=m.context_length, n_embd=m.d_model, n_layer=m.n_layers,
        n_head=cfg.attn.n_heads, n_inner=int(cfg.ffn.mult * m.d_model), activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=cfg.norm.eps,
        tie_word_embeddings=bool(m.tie_embeddings), bos_token_id=None, eos_token_id=None,
        attn_implementation="eager",
    )


GPT2 = ["attn=mha", "pos=learned", "norm=layernorm", "ffn=gelu", "ffn.approximate=tanh", "attn.qkv_bias=true"]


@pytest.mark.parametrize("extra", [[], ["model.tie_embeddings=false"], ["attn.impl=manual"]],
                         ids=["tied", "untied", "manual"])
def test_gpt2_matches_hf(extra):
    cfg, model = _attnbench(*GPT2, *extra)
    hf = _hf(transformers.GPT2LMHeadModel, gpt2_config(cfg), gpt2_state(model))
    _compare(model, hf, cfg.model.vocab_size)


def test_gpt2_exact_gelu_differs_from_hf():
    """The comparison is sharp enough to see the GELU approximation (exact erf vs GPT-2's tanh)."""
    cfg, model = _attnbench(*[o for o in GPT2 if not o.startswith("ffn.approximate")], "ffn.approximate=none")
    hf = _hf(transformers.GPT2LMHeadModel, gpt2_config(cfg), gpt2_state(model))
    idx = _tokens(cfg.model.vocab_size)
    with torch.no_grad():
        assert (model(idx) - hf(idx).logits).abs().max() > ATOL


# ----------------------------------------------------------------------------- Llama / Mistral
def llama_state(model, attention_bias: bool = False) -> dict[str, torch.Tensor]:
    """attnbench → LlamaForCausalLM / MistralForCausalLM. The fused qkv (q | k | v rows) splits into
    q_proj / k_proj / v_proj; RoPE is rotate-half in both, so q and k need no permutation.
    Without `attention_bias` the attention biases must be zero (no bias = a zero bias)."""
    s = model.state_dict()
    for name, t in s.items():
        if name.endswith(".bias") and not attention_bias:
            assert not t.any(), f"{name} is not zero: Llama without attention_bias has no bias there"
    H, Hkv, D = model.blocks[0].attn.n_heads, model.n_kv_heads, model.head_dim
    out = {"model.embed_tokens.weight": s["wte.weight"], "model.norm.weight": s["norm_f.weight"],
           "lm_head.weight": s["lm_head.weight"]}
    for i in range(model.n_layers):
        p, q = f"blocks.{i}.", f"model.layers.{i}."
        for kind in ("weight", "bias") if attention_bias else ("weight",):
            if f"{p}attn.qkv.{kind}" in s:
                wq, wk, wv = s[f"{p}attn.qkv.{kind}"].split([H * D, Hkv * D, Hkv * D], dim=0)
                out.update({f"{q}self_attn.q_proj.{kind}": wq, f"{q}self_attn.k_proj.{kind}": wk,
                            f"{q}self_attn.v_proj.{kind}": wv})
            if f"{p}attn.out.{kind}" in s:
                out[f"{q}self_attn.o_proj.{kind}"] = s[f"{p}attn.out.{kind}"]
        out.update({f"{q}mlp.gate_proj.weight": s[f"{p}ffn.gate.weight"], f"{q}mlp.up_proj.weight": s[f"{p}ffn.up.weight"],
                    f"{q}mlp.down_proj.weight": s[f"{p}ffn.down.weight"],
                    f"{q}input_layernorm.weight": s[f"{p}norm1.weight"],
                    f"{q}post_attention_layernorm.weight": s[f"{p}norm2.weight"]})
    return out


def llama_kwargs(cfg, model, attention_bias: bool) -> dict:
    m = cfg.model
    return dict(
        vocab_size=m.vocab_size, hidden_size=m.d_model, num_hidden_layers=m.n_layers,
        intermediate_size=gated_hidden(m.d_model, cfg.ffn.mult, cfg.ffn.multiple_of),
        num_attention_heads=cfg.attn.n_heads, num_key_value_heads=model.n_kv_heads, hidden_act="silu",
        max_position_embeddings=m.context_length, rms_norm_eps=cfg.norm.eps,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.pos.base)},
        tie_word_embeddings=bool(m.tie_embeddings), attention_bias=attention_bias, mlp_bias=False,
        bos_token_id=None, eos_token_id=None, attn_implementation="eager",
    )


LLAMA = ["pos=rope", "norm=rmsnorm", "ffn=swiglu"]


@pytest.mark.parametrize("extra", [
    ["attn=mha"],
    ["attn=gqa", "attn.n_kv_heads=2"],
    ["attn=mqa"],
    ["attn=gqa", "attn.n_kv_heads=2", "pos.base=500"],
    ["attn=mha", "model.tie_embeddings=false"],
], ids=["mha", "gqa", "mqa", "base500", "untied"])
def test_llama_matches_hf(extra):
    # Llama has no biases; attnbench's output projection has one (zero at init): zeroed here.
    cfg, model = _attnbench(*LLAMA, *extra, zero_biases=True)
    hf = _hf(transformers.LlamaForCausalLM, transformers.LlamaConfig(**llama_kwargs(cfg, model, False)),
             llama_state(model))
    _compare(model, hf, cfg.model.vocab_size)


def test_llama_with_attention_bias_matches_hf():
    """attn.qkv_bias=true (+ attnbench's output-projection bias) = Llama's attention_bias=True, biases random."""
    cfg, model = _attnbench(*LLAMA, "attn=gqa", "attn.n_kv_heads=2", "attn.qkv_bias=true")
    assert model.blocks[0].attn.out.bias.abs().sum() > 0
    hf = _hf(transformers.LlamaForCausalLM, transformers.LlamaConfig(**llama_kwargs(cfg, model, True)),
             llama_state(model, attention_bias=True))
    _compare(model, hf, cfg.model.vocab_size)


def test_llama_model_bias_false_matches_hf_without_zeroing():
    """model.bias=false leaves no bias anywhere, so the perturbed model maps onto Llama as is."""
    cfg, model = _attnbench(*LLAMA, "attn=gqa", "attn.n_kv_heads=2", "model.bias=false")
    assert not [n for n, _ in model.named_parameters() if n.endswith(".bias")]
    hf = _hf(transformers.LlamaForCausalLM, transformers.LlamaConfig(**llama_kwargs(cfg, model, False)),
             llama_state(model))
    _compare(model, hf, cfg.model.vocab_size)


@pytest.mark.parametrize("extra", [
    ["attn=gqa", "attn.n_kv_heads=2", "attn.window=5"],
    ["attn=local", "attn.window=8", "attn.impl=manual"],
    ["attn=mqa", "attn.window=1"],
], ids=["gqa-w5", "local-w8-manual", "mqa-w1"])
def test_mistral_matches_hf(extra):
    """attnbench's window w (query p sees keys p-w+1..p) = Mistral's sliding_window=w (HF masks
    kv_idx > q_idx - sliding_window); T=24 is longer than each window, so the band is exercised."""
    cfg, model = _attnbench(*LLAMA, *extra, zero_biases=True)
    conf = transformers.MistralConfig(**llama_kwargs(cfg, model, False), sliding_window=int(cfg.attn.window))
    hf = _hf(transformers.MistralForCausalLM, conf, llama_state(model))
    # HF's own sliding-window cache breaks at sliding_window=1 (transformers 5.24: a mask for 5 keys
    # against 13 cached ones); attnbench's cache is still compared against HF's full forward there.
    _compare(model, hf, cfg.model.vocab_size, hf_cache=cfg.attn.window > 1)


def test_mistral_window_off_by_one_is_visible():
    """sliding_window = attn.window + 1 must not pass: the test can tell the conventions apart."""
    cfg, model = _attnbench(*LLAMA, "attn=gqa", "attn.n_kv_heads=2", "attn.window=5", zero_biases=True)
    conf = transformers.MistralConfig(**llama_kwargs(cfg, model, False), sliding_window=6)
    hf = _hf(transformers.MistralForCausalLM, conf, llama_state(model))
    idx = _tokens(cfg.model.vocab_size)
    with torch.no_grad():
        assert (model(idx) - hf(idx).logits).abs().max() > ATOL
