"""attn=mla (DeepSeek-V2 Multi-head Latent Attention): equal logits with transformers'
DeepseekV3ForCausalLM (dense layers, same weights), full and cached; the latent KV cache and its
bytes; absorbed decode = expanded decode; causality; kernels against manual; one-line errors."""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from torch import nn

from attnbench import ConfigError, build_model, load_config
from attnbench.model import kv_cache_bytes_per_token
from attnbench.model.mla import LatentCache, MLADims, MultiHeadLatentAttention

# d_model=64, 4 heads (D=16); MLA dims all different from each other and from D, so a mix-up shows.
BASE = ["stages=[]", "device=cpu", "attn=mla", "model.d_model=64", "attn.n_heads=4", "model.n_layers=2",
        "model.vocab_size=64", "model.context_length=32", "attn.impl=manual",
        "attn.kv_lora_rank=24", "attn.qk_nope_head_dim=12", "attn.rope_head_dim=8", "attn.v_head_dim=10"]
Q_LORA = ("attn.q_lora_rank=20",)


@lru_cache(maxsize=None)
def mla_cfg(*overrides: str):
    """Composed once per override set (composition dominates these tests' time on 2 cores)."""
    return load_config([*BASE, *overrides])


def mla_model(*overrides: str) -> nn.Module:
    return build_model(mla_cfg(*overrides)).eval()


def randomise_norms(model: nn.Module) -> None:
    """RMSNorm gains are 1 at init; random gains make a wrong norm placement visible."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.RMSNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)


def decode(model: nn.Module, idx: torch.Tensor, prompt: int) -> torch.Tensor:
    """Prefill `prompt` tokens, then one token per forward through the cache; (B, T, V)."""
    cache = model.init_cache(idx.shape[0], idx.shape[1] + 2)
    outs = [model(idx[:, :prompt], cache)]
    for t in range(prompt, idx.shape[1]):
        outs.append(model(idx[:, t : t + 1], cache))
    return torch.cat(outs, dim=1)


# ----------------------------------------------------------------------------- transformers
def hf_twin(model: nn.Module, cfg, rope_interleave: bool, attention_bias: bool):
    """DeepseekV3ForCausalLM with every layer dense, loaded with `model`'s weights."""
    transformers = pytest.importorskip("transformers")
    d = MLADims.from_cfg(cfg)
    L = cfg.model.n_layers
    hf_cfg = transformers.DeepseekV3Config(
        vocab_size=cfg.model.vocab_size, hidden_size=cfg.model.d_model,
        intermediate_size=model.blocks[0].ffn.gate.out_features, num_hidden_layers=L,
        num_attention_heads=d.n_heads, num_key_value_heads=d.n_heads, kv_lora_rank=d.kv_rank,
        q_lora_rank=d.q_rank, qk_rope_head_dim=d.rope, qk_nope_head_dim=d.nope, v_head_dim=d.v,
        first_k_dense_replace=L,  # every layer dense: no MoE layer is built
        n_routed_experts=4, n_group=1, topk_group=1, num_experts_per_tok=2,
        rms_norm_eps=cfg.norm.eps, max_position_embeddings=cfg.model.context_length,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.pos.base},  # i.e. rope_scaling=None
        rope_interleave=rope_interleave, attention_bias=attention_bias, tie_word_embeddings=False,
        attn_implementation="eager",
    )
    hf = transformers.DeepseekV3ForCausalLM(hf_cfg).eval()
    # DeepSeek-V3 in transformers rotates interleaved pairs (x0, x1), (x2, x3), ... and returns them
    # de-interleaved (evens then odds). attnbench rotates halves (x_i, x_{i+D/2}). We PERMUTE THE
    # WEIGHTS rather than replicate the interleave: HF's rope output rows are ours with
    # hf_row[perm[j]] = our_row[j], perm = [0, 2, 4, ..., 1, 3, 5, ...]; then HF's interleaved
    # rotation of its rows equals our rotate-half of ours, bit for bit, for q and for the shared key.
    perm = torch.cat([torch.arange(0, d.rope, 2), torch.arange(1, d.rope, 2)]) if rope_interleave \
        else torch.arange(d.rope)

    def rope_rows(w: torch.Tensor, start: int, stride: int, n: int) -> torch.Tensor:
        w = w.clone()
        for i in range(n):
            lo = i * stride + start
            block = w[lo : lo + d.rope].clone()
            w[lo + perm] = block
        return w

    sd = {"model.embed_tokens.weight": model.wte.weight, "model.norm.weight": model.norm_f.weight,
          "lm_head.weight": model.lm_head.weight}
    for i, blk in enumerate(model.blocks):
        p, a = f"model.layers.{i}.", blk.attn
        sd |= {p + "input_layernorm.weight": blk.norm1.weight, p + "post_attention_layernorm.weight": blk.norm2.weight,
               p + "mlp.gate_proj.weight": blk.ffn.gate.weight, p + "mlp.up_proj.weight": blk.ffn.up.weight,
               p + "mlp.down_proj.weight": blk.ffn.down.weight}
        s = p + "self_attn."
        if d.q_rank is None:
            sd[s + "q_proj.weight"] = rope_rows(a.q.weight, d.nope, d.qk, d.n_heads)
        else:
            sd |= {s + "q_a_proj.weight": a.q_down.weight, s + "q_a_layernorm.weight": a.q_latent_norm.weight,
                   s + "q_b_proj.weight": rope_rows(a.q_up.weight, d.nope, d.qk, d.n_heads)}
            if attention_bias:
                sd[s + "q_a_proj.bias"] = a.q_down.bias
        sd |= {s + "kv_a_proj_with_mqa.weight": rope_rows(a.kv_down.weight, d.kv_rank, 0, 1),
               s + "kv_a_layernorm.weight": a.kv_latent_norm.weight, s + "kv_b_proj.weight": a.kv_up.weight,
               s + "o_proj.weight": a.out.weight}
        if attention_bias:
            sd |= {s + "kv_a_proj_with_mqa.bias": rope_rows(a.kv_down.bias[:, None], d.kv_rank, 0, 1)[:, 0],
                   s + "o_proj.bias": a.out.bias}
        else:  # model.bias=false: no o_proj bias, as HF without attention_bias
            assert a.out.bias is None and a.kv_down.bias is None
    missing, unexpected = hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=False)
    assert not unexpected and not [k for k in missing if "rotary" not in k], (missing, unexpected)
    return hf


@pytest.mark.parametrize("q_lora", [False, True])
@pytest.mark.parametrize("rope_interleave", [True, False])
def test_logits_equal_transformers_deepseek_v3_full_and_cached(q_lora, rope_interleave):
    from transformers import DynamicCache

    bias = q_lora  # attention_bias=True needs the low-rank query (HF's full q_proj has no bias)
    overrides = [*(Q_LORA if q_lora else ()), "norm=rmsnorm", "ffn=swiglu", "model.tie_embeddings=false",
                 "norm.eps=1e-6", f"attn.qkv_bias={str(bias).lower()}", f"model.bias={str(bias).lower()}"]
    cfg = load_config([*BASE, *overrides])
    model = build_model(cfg).eval()
    randomise_norms(model)
    if bias:
        with torch.no_grad():
            for blk in model.blocks:
                for lin in (blk.attn.q_down, blk.attn.kv_down, blk.attn.out):
                    lin.bias.normal_(0, 0.1)
    hf = hf_twin(model, cfg, rope_interleave, attention_bias=bias)
    idx = torch.randint(0, cfg.model.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = hf(idx).logits
        torch.testing.assert_close(model(idx), want, atol=1e-4, rtol=0)
        cache = DynamicCache(config=hf.config)
        hf_steps = [hf(idx[:, :7], cache=cache, use_cache=True).logits]
        for t in range(7, 12):
            hf_steps.append(hf(idx[:, t : t + 1], cache=cache, use_cache=True).logits)
        torch.testing.assert_close(torch.cat(hf_steps, 1), want, atol=1e-4, rtol=0)
        torch.testing.assert_close(decode(model, idx, 7), want, atol=1e-4, rtol=0)
        absorbed = build_model(load_config([*BASE, *overrides, "attn.absorb=true"])).eval()
        absorbed.load_state_dict(model.state_dict())
        torch.testing.assert_close(decode(absorbed, idx, 7), want, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- cache and decoding
@pytest.mark.parametrize("impl, overrides", [
    ("manual", ()), ("manual", Q_LORA), ("manual", ("attn.absorb=true",)),
    *[(impl, o) for impl in ("sdpa", "sdpa_math", "wrapper", "flex") for o in (Q_LORA, (*Q_LORA, "attn.absorb=true"))],
])
def test_cached_decoding_equals_the_full_pass(impl, overrides):
    model = mla_model(f"attn.impl={impl}", *overrides)
    randomise_norms(model)
    idx = torch.randint(0, 64, (2, 11))
    with torch.no_grad():
        full = model(idx)
        torch.testing.assert_close(decode(model, idx, 5), full, atol=2e-5, rtol=1e-5)
        cache = model.init_cache(2, 16)  # chunked prefill: a multi-token chunk after a non-empty cache
        chunks = torch.cat([model(idx[:, :4], cache), model(idx[:, 4:9], cache), model(idx[:, 9:], cache)], 1)
        torch.testing.assert_close(chunks, full, atol=2e-5, rtol=1e-5)


def test_absorbed_decode_gives_the_expanded_logits_without_expanding_the_cache():
    plain = mla_model(*Q_LORA)
    absorbed = mla_model(*Q_LORA, "attn.absorb=true")
    absorbed.load_state_dict(plain.state_dict())
    assert absorbed.blocks[0].attn.absorb and not plain.blocks[0].attn.absorb
    idx = torch.randint(0, 64, (3, 10))
    with torch.no_grad():
        torch.testing.assert_close(decode(absorbed, idx, 4), decode(plain, idx, 4), atol=2e-5, rtol=1e-5)
    calls = []
    hook = absorbed.blocks[0].attn.kv_up.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[1]))
    with torch.no_grad():
        cache = absorbed.init_cache(3, 12)
        absorbed(idx[:, :4], cache)  # the prefill expands its 4 latents
        absorbed(idx[:, 4:5], cache)  # a decode step attends in latent space: kv_up is never called
    hook.remove()
    assert calls == [4]


def test_absorbed_attention_equals_expanded_attention_on_a_multi_token_chunk():
    """The identity itself, not only on decode steps: q_nope·(W_uk c) = (W_ukᵀ q_nope)·c and W_uv after."""
    attn = mla_model(*Q_LORA).blocks[0].attn
    from attnbench.model.kernels import MaskSpec

    B, T, d = 2, 6, attn.dims
    q_nope, q_rope = torch.randn(B, d.n_heads, T, d.nope), torch.randn(B, d.n_heads, T, d.rope)
    kv = torch.randn(B, 9, d.kv_rank + d.rope)
    spec = MaskSpec(q_offset=3)  # the chunk sits after 3 cached tokens
    want = attn._expanded(q_nope, q_rope, kv[..., : d.kv_rank], kv[..., d.kv_rank :], spec, 0.0)
    torch.testing.assert_close(attn._absorbed(q_nope, q_rope, kv, spec, 0.0), want, atol=1e-5, rtol=1e-5)


def test_causal_a_future_token_changes_no_earlier_logit():
    model = mla_model(*Q_LORA)
    idx = torch.randint(0, 64, (1, 10))
    changed = idx.clone()
    changed[0, 6] = (idx[0, 6] + 1) % 64
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=0, rtol=0)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


@pytest.mark.parametrize("impl", ["sdpa", "sdpa_math", "wrapper", "flex"])
def test_kernels_match_manual(impl):
    ref = mla_model(*Q_LORA)
    other = mla_model(*Q_LORA, f"attn.impl={impl}")
    other.load_state_dict(ref.state_dict())  # the kernel changes no parameter
    idx = torch.randint(0, 64, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(other(idx), ref(idx), atol=2e-5, rtol=1e-5)


def test_softcap_reaches_the_mla_scores():
    plain, capped = mla_model(), mla_model("attn.softcap=0.5")
    capped.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 64, (1, 8))
    with torch.no_grad():
        assert not torch.allclose(plain(idx), capped(idx), atol=1e-4)
        absorbed = mla_model("attn.softcap=0.5", "attn.absorb=true")
        absorbed.load_state_dict(plain.state_dict())
        torch.testing.assert_close(decode(absorbed, idx, 3), capped(idx), atol=2e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- sizes
def test_cache_holds_only_the_latent_and_the_shared_rope_key():
    cfg = load_config(BASE)
    model = build_model(cfg)
    cache = model.init_cache(3, 20)
    assert isinstance(cache, LatentCache)
    assert cache.kv.shape == (2, 3, 20, 24 + 8)  # (L, B, max_len, kv_lora_rank + rope_head_dim)
    assert kv_cache_bytes_per_token(cfg) == 2 * (24 + 8) * 4  # L · (r + dr) · fp32
    assert kv_cache_bytes_per_token(cfg, 2) == 2 * (24 + 8) * 2
    assert cache.nbytes() == 3 * 20 * kv_cache_bytes_per_token(cfg)
    half = model.init_cache(1, 4, dtype=torch.bfloat16)
    assert half.nbytes() == 4 * kv_cache_bytes_per_token(cfg, 2)


def test_default_dims_follow_deepseek_v2_ratios():
    cfg = load_config(["stages=[]", "attn=mla", "model.d_model=64", "attn.n_heads=4"])  # D = 16
    assert cfg.pos.name == "rope"  # attn=mla picks its positional scheme
    d = MLADims.from_cfg(cfg)
    assert (d.kv_rank, d.q_rank, d.nope, d.rope, d.v) == (64, None, 16, 8, 16)
    attn = build_model(cfg).blocks[0].attn
    assert isinstance(attn, MultiHeadLatentAttention)
    assert attn.scale == pytest.approx((16 + 8) ** -0.5)
    assert build_model(cfg).pos.inv_freq.shape == (4,)  # RoPE tables over rope_head_dim, not D
    shapes = {n: tuple(p.shape) for n, p in attn.named_parameters()}
    assert shapes["q.weight"] == (4 * 24, 64) and shapes["kv_down.weight"] == (64 + 8, 64)
    assert shapes["kv_up.weight"] == (4 * (16 + 16), 64) and shapes["out.weight"] == (64, 4 * 16)


def test_low_rank_query_and_latent_norms():
    attn = mla_model(*Q_LORA).blocks[0].attn
    names = {n for n, _ in attn.named_parameters()}
    assert {"q_down.weight", "q_latent_norm.weight", "q_up.weight", "kv_latent_norm.weight"} <= names
    assert "q.weight" not in names and attn.q_latent_norm.eps == attn.kv_latent_norm.eps == 1e-5


def test_mla_trains_a_step():
    model = build_model(load_config([*BASE, *Q_LORA, "attn.impl=sdpa"])).train()
    idx = torch.randint(0, 64, (2, 9))
    model(idx).logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("overrides, message", [
    (("pos=alibi",), "pos=alibi: attn=mla takes position only through its decoupled RoPE key; choose from [rope]"),
    (("pos=learned",), "pos=learned: attn=mla"),
    (("attn.impl=sdpa_flash",), "attn.impl=sdpa_flash: needs equal q/k and v head dims"),
    (("attn.impl=torch_mha",), "attn.impl=torch_mha: cannot rotate q/k"),
    (("attn.n_kv_heads=2",), "attn.n_kv_heads=2: attn=mla has no KV heads"),
    (("attn.window=4",), "attn.window=4: attn=mla is full causal attention"),
    (("attn.rope_head_dim=3",), "attn.rope_head_dim=3: must be even"),
    (("attn.kv_lora_rank=0",), "attn.kv_lora_rank=0: must be an integer >= 1"),
    (("attn.q_lora_rank=-2",), "attn.q_lora_rank=-2: must be an integer >= 1"),
    (("attn.n_heads=3",), "model.d_model=64: must be divisible by attn.n_heads=3"),
    (("norm.qk_norm=true",), "norm.qk_norm=true: attn=mla"),
    (("pos.scaling=ntk", "pos.factor=2", "attn.rope_head_dim=2"), "pos.scaling=ntk: attn.rope_head_dim=2"),
])
def test_bad_mla_configs_fail_with_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config([*BASE, *overrides])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("override", ["attn.kv_lora_rank=8", "attn.q_lora_rank=8", "attn.qk_nope_head_dim=8",
                                      "attn.rope_head_dim=8", "attn.v_head_dim=8", "attn.absorb=true"])
def test_mla_fields_without_attn_mla_are_rejected(override):
    with pytest.raises(ConfigError, match=rf"^attn\.{override.split('=')[0][5:]}=.*only used by attn=mla"):
        load_config(["stages=[]", "attn=gqa", override])


def test_sdpa_flash_is_fine_when_the_head_dims_happen_to_agree():
    # qk = 8 + 8 = v = 16 and no absorb: FlashAttention's equal-dims rule holds
    cfg = load_config([*BASE, "attn.impl=sdpa_flash", "attn.qk_nope_head_dim=8", "attn.v_head_dim=16"])
    assert cfg.attn.impl == "sdpa_flash"
    with pytest.raises(ConfigError, match="attn.impl=sdpa_flash: needs equal q/k and v head dims"):
        load_config([*BASE, "attn.impl=sdpa_flash", "attn.qk_nope_head_dim=8", "attn.v_head_dim=16",
                     "attn.absorb=true"])



def test_max_attention_logit_covers_mla_layers():
    """results' max_attn_logit (Finding 10) for MLA: max |q·k|·scale over the allowed keys, by hand for a 1-layer model."""
    from attnbench.model.attention import max_attention_logit
    from attnbench.model.position import apply_rotary

    model = mla_model(*Q_LORA, "model.n_layers=1")
    attn, d = model.blocks[0].attn, model.blocks[0].attn.dims
    idx = torch.randint(0, 64, (2, 7))
    xs = []
    hook = attn.register_forward_pre_hook(lambda m, args: xs.append(args[0]))
    got = max_attention_logit(model, idx)
    hook.remove()
    x, rot = xs[0], model.pos.rotary(torch.arange(7))
    with torch.no_grad():
        q = attn._query(x).view(2, 7, d.n_heads, d.qk).transpose(1, 2)
        c, k_rope = attn.kv_down(x).split([d.kv_rank, d.rope], dim=-1)
        k_nope = attn.kv_up(attn.kv_latent_norm(c)).view(2, 7, d.n_heads, -1).transpose(1, 2)[..., : d.nope]
        q = torch.cat([q[..., : d.nope], apply_rotary(q[..., d.nope :], rot)], -1)
        k = torch.cat([k_nope, apply_rotary(k_rope.unsqueeze(1), rot).expand(2, d.n_heads, 7, d.rope)], -1)
        scores = (q @ k.transpose(-2, -1)).abs() * attn.scale  # (B, H, T, S)
        want = scores.masked_fill(~torch.ones(7, 7, dtype=torch.bool).tril(), 0).amax()
    assert got == pytest.approx(float(want), rel=1e-5)
