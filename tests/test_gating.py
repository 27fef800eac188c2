"""attn.gate: output gating, σ(x W_g) on each head's attention output before the output projection
(Qiu et al. 2025; Qwen3-Next's full-attention layers). The elementwise gate is checked against
transformers' Qwen3-Next with every layer set to full attention and a dense MLP, same weights, logits
to 1e-4 in a full pass and cached; the headwise gate against the paper's formula written out."""
from __future__ import annotations

import inspect

import pytest
import torch

from attnbench import ConfigError, build_model, load_config
from attnbench.bench.flops import flops_per_token_fwd
from attnbench.model import kv_cache_bytes_per_token
from attnbench.model.ffn import gated_hidden

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["stages=[]", "device=cpu", "model.d_model=32", "model.n_layers=2", "attn.n_heads=4", "model.vocab_size=64",
        "model.context_length=64", "pos=rope"]
QWEN3_NEXT = ["norm=rmsnorm", "ffn=swiglu", "norm.qk_norm=true", "attn.gate=elementwise", "model.bias=false",
              "attn=gqa", "attn.n_kv_heads=2", "norm.eps=1e-6"]
ATOL = 1e-4


def _perturbed(*overrides: str):
    cfg = load_config([*TINY, *overrides])
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # every tensor away from its init, so an unmapped one cannot pass
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return cfg, model


def qwen3_next(cfg, model):
    """transformers' Qwen3NextForCausalLM with `model`'s weights. Its q_proj holds q and the gate
    interleaved per head (rows [q_h | gate_h], 2·D per head); its RMSNorms scale by (1 + w)."""
    transformers = pytest.importorskip("transformers")
    m, a = cfg.model, cfg.attn
    H, Hkv, D = a.n_heads, model.n_kv_heads, model.head_dim
    conf = transformers.Qwen3NextConfig(
        vocab_size=m.vocab_size, hidden_size=m.d_model, num_hidden_layers=m.n_layers, num_attention_heads=H,
        num_key_value_heads=Hkv, head_dim=D, intermediate_size=gated_hidden(m.d_model, cfg.ffn.mult, cfg.ffn.multiple_of),
        layer_types=["full_attention"] * m.n_layers, num_experts=0, partial_rotary_factor=1.0,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.pos.base)}, rms_norm_eps=cfg.norm.eps,
        max_position_embeddings=m.context_length, tie_word_embeddings=bool(m.tie_embeddings), attention_bias=False,
        bos_token_id=None, eos_token_id=None, pad_token_id=None)
    conf._attn_implementation = "eager"
    hf = transformers.Qwen3NextForCausalLM(conf).eval()
    s = model.state_dict()
    out = {"model.embed_tokens.weight": s["wte.weight"], "model.norm.weight": s["norm_f.weight"] - 1,
           "lm_head.weight": s["lm_head.weight"]}
    for i in range(m.n_layers):
        b, h = f"blocks.{i}.", f"model.layers.{i}."
        q, k, v = s[b + "attn.qkv.weight"].split([H * D, Hkv * D, Hkv * D], dim=0)
        gate = s[b + "attn.gate.proj.weight"]  # (H·D, C)
        q_and_gate = torch.cat([q.view(H, D, -1), gate.view(H, D, -1)], dim=1).reshape(2 * H * D, -1)
        out.update({
            h + "self_attn.q_proj.weight": q_and_gate, h + "self_attn.k_proj.weight": k,
            h + "self_attn.v_proj.weight": v, h + "self_attn.o_proj.weight": s[b + "attn.out.weight"],
            h + "self_attn.q_norm.weight": s[b + "attn.q_norm.weight"] - 1,
            h + "self_attn.k_norm.weight": s[b + "attn.k_norm.weight"] - 1,
            h + "input_layernorm.weight": s[b + "norm1.weight"] - 1,
            h + "post_attention_layernorm.weight": s[b + "norm2.weight"] - 1,
            h + "mlp.gate_proj.weight": s[b + "ffn.gate.weight"], h + "mlp.up_proj.weight": s[b + "ffn.up.weight"],
            h + "mlp.down_proj.weight": s[b + "ffn.down.weight"],
        })
    missing, unexpected = hf.load_state_dict(out, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)  # tied head
    return hf


def _chunked(model, idx, chunks=(7, 1, 5, 1, 10)):
    cache = model.init_cache(idx.shape[0], idx.shape[1])
    out, start = [], 0
    for n in chunks:
        out.append(model(idx[:, start : start + n], cache))
        start += n
    return torch.cat(out, dim=1)


def _hf_chunked(hf, idx, chunks=(7, 1, 5, 1, 10)):
    kw = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"  # transformers 5.x renames it
    out, start, past = [], 0, None
    for n in chunks:
        res = hf(idx[:, start : start + n], use_cache=True, **{kw: past})
        out.append(res.logits)
        past, start = getattr(res, kw), start + n
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_elementwise_gate_matches_transformers_qwen3_next(impl):
    cfg, model = _perturbed(*QWEN3_NEXT, f"attn.impl={impl}")
    hf = qwen3_next(cfg, model)
    idx = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(idx, use_cache=False).logits
        torch.testing.assert_close(model(idx), ref, atol=ATOL, rtol=0)
        torch.testing.assert_close(_chunked(model, idx), ref, atol=ATOL, rtol=0)  # attnbench's KV cache
        torch.testing.assert_close(_hf_chunked(hf, idx), ref, atol=ATOL, rtol=0)  # HF's cache, same logits
        # the comparison sees the gate: without it the logits differ
        model.blocks[0].attn.gate = None
        assert (model(idx) - ref).abs().max() > 1e-2


def test_headwise_gate_is_the_formula():
    """y_h ← y_h · σ(x w_h + b_h): one scalar per head and token, written out from the paper."""
    cfg, model = _perturbed("attn.gate=headwise", "attn.impl=manual", "attn.qkv_bias=true")
    attn = model.blocks[0].attn
    gate = attn.gate
    assert gate.proj.weight.shape == (4, 32) and gate.proj.bias.shape == (4,)  # (H, C), (H,)
    attn.out = torch.nn.Identity()  # look at the heads' outputs, the output projection's input
    x = torch.randn(2, 10, 32)
    with torch.no_grad():
        gated = attn(x, _ctx(model, 10)).view(2, 10, 4, 8)  # (B, T, H, D)
        attn.gate = None
        plain = attn(x, _ctx(model, 10)).view(2, 10, 4, 8)
        g = torch.sigmoid(x @ gate.proj.weight.T + gate.proj.bias)  # (B, T, H)
    torch.testing.assert_close(gated, plain * g[..., None], atol=1e-6, rtol=0)


def _ctx(model, T):
    from attnbench.model.attention import AttnContext
    from attnbench.model.kernels import MaskSpec

    pos = torch.arange(T)
    return AttnContext(spec=MaskSpec(), rot=model.pos.rotary(pos), bias=model.pos.bias(pos, T))


def test_gate_parameters_flops_and_kv_bytes():
    base = load_config([*TINY])
    for kind, width in (("headwise", 4), ("elementwise", 32)):
        cfg = load_config([*TINY, f"attn.gate={kind}"])
        extra = sum(p.numel() for p in build_model(cfg).parameters()) - sum(p.numel() for p in build_model(base).parameters())
        assert extra == 2 * 32 * width  # per layer: W_g (C, g); no bias (it has one when q has, attn.qkv_bias)
        assert flops_per_token_fwd(cfg, 64) - flops_per_token_fwd(base, 64) == 2 * 2 * 32 * width
        assert kv_cache_bytes_per_token(cfg) == kv_cache_bytes_per_token(base)  # the gate caches nothing


def test_gate_state_dict_keys_and_kernels_agree():
    ref = build_model(load_config([*TINY, "attn.gate=elementwise", "attn.impl=manual"])).eval()
    assert "blocks.0.attn.gate.proj.weight" in ref.state_dict()
    idx = torch.randint(0, 64, (2, 12))
    for impl in ("sdpa", "wrapper", "sdpa_math"):
        other = build_model(load_config([*TINY, "attn.gate=elementwise", f"attn.impl={impl}"])).eval()
        other.load_state_dict(ref.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(other(idx), ref(idx), atol=1e-5, rtol=0)


@pytest.mark.parametrize("overrides,message", [
    (["attn.gate=channel"], r"^attn.gate=channel: not allowed; choose from \[none, headwise, elementwise\]$"),
    (["attn.gate=headwise", "attn.impl=torch_mha", "pos=learned"], r"^attn.impl=torch_mha: runs its own output projection, so no attn.gate"),
    (["attn=mla", "attn.gate=elementwise"], r"^attn.gate=elementwise: not with attn=mla"),
])
def test_impossible_gates_are_rejected_up_front(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config([*TINY, *overrides])


def test_gating_lr_preset_composes_every_point_of_its_grid():
    from omegaconf import OmegaConf

    from attnbench.config.compose import conf_dir

    raw = OmegaConf.load(conf_dir() / "experiment" / "gating_lr.yaml")
    params = {k: [v.strip() for v in str(val).split(",")] for k, val in raw.hydra.sweeper.params.items()}
    assert params["attn.gate"] == ["none", "headwise", "elementwise"] and params["seed"] == ["0", "1", "2"]
    assert len(params["train.lr"]) >= 4  # the best lr must be able to sit inside the grid
    for gate in params["attn.gate"]:
        for lr in params["train.lr"]:
            cfg = load_config(["experiment=gating_lr", f"attn.gate={gate}", f"train.lr={lr}", "logger=none"])
            assert cfg.attn.gate == gate and cfg.train.lr == float(lr) and cfg.stages == ["train"]
    assert build_model(cfg).blocks[0].attn.gate.kind == "elementwise"
