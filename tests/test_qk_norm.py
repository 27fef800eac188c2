"""norm.qk_norm: the norm of norm.name over head_dim on q and k, after the projection and before
RoPE, one gain vector shared by all heads (Qwen3). Against transformers' Qwen3ForCausalLM with the
same weights; the max-attention-logit probe that Finding 10 (Wortsman et al. 2023) reports."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attnbench import ConfigError, build_model, load_config
from attnbench.model.attention import max_attention_logit
from hf_llama import LLAMA_OVERRIDES, cached_logits, hf_cached_logits, port, randomise_norms

pytestmark = pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated")
TINY = [*LLAMA_OVERRIDES, "model.d_model=64", "attn.n_heads=4", "model.n_layers=2", "model.vocab_size=64",
        "model.context_length=64", "norm.qk_norm=true"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("layout", [[], ["attn=gqa", "attn.n_kv_heads=2"]])
def test_qk_norm_logits_match_transformers_qwen3(layout):
    pytest.importorskip("transformers")
    cfg = load_config([*TINY, *layout, "model.tie_embeddings=false"])
    model = build_model(cfg).eval()
    randomise_norms(model)  # q_norm/k_norm gains away from 1, so a dropped or swapped norm shows
    hf = port(model, cfg, "qwen3")
    idx = torch.randint(0, 64, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(idx).logits
        torch.testing.assert_close(model(idx), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cached_logits(model, idx, 16), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(hf_cached_logits(hf, idx, 16), ref, atol=1e-4, rtol=1e-4)
    # ... and the norm matters: without it the same weights give other logits
    plain = build_model(load_config([*TINY[:-1], *layout, "model.tie_embeddings=false"])).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "q_norm" not in k and "k_norm" not in k})
    with torch.no_grad():
        assert not torch.allclose(plain(idx), ref, atol=1e-2)


def test_state_dict_keys_port():
    model = build_model(load_config(TINY))
    keys = set(model.state_dict())
    for i in range(2):
        assert {f"blocks.{i}.attn.q_norm.weight", f"blocks.{i}.attn.k_norm.weight"} <= keys
        assert model.state_dict()[f"blocks.{i}.attn.q_norm.weight"].shape == (16,)  # head_dim, shared by heads
    assert not any("q_norm" in k for k in build_model(load_config(TINY[:-1])).state_dict())


def test_qk_norm_follows_norm_name():
    model = build_model(load_config([*TINY, "norm=layernorm"]))
    attn = model.blocks[0].attn
    assert isinstance(attn.q_norm, nn.LayerNorm) and isinstance(attn.k_norm, nn.LayerNorm)
    assert attn.q_norm.normalized_shape == (16,) and "blocks.0.attn.k_norm.bias" in model.state_dict()
    assert isinstance(build_model(load_config(TINY)).blocks[0].attn.q_norm, nn.RMSNorm)


@pytest.mark.parametrize("extra", [["norm=layernorm", "pos=alibi"], ["pos=rope"], ["attn=mqa", "pos=learned"]])
def test_causal_and_cached_decoding_equal_the_full_pass(extra):
    model = build_model(load_config([*TINY, *extra])).eval()
    idx = torch.randint(0, 64, (2, 24))
    with torch.no_grad():
        full = model(idx)
        changed = idx.clone()
        changed[:, 12:] = (changed[:, 12:] + 1) % 64
        torch.testing.assert_close(model(changed)[:, :12], full[:, :12], atol=0, rtol=0)
    torch.testing.assert_close(cached_logits(model, idx, 9), full, atol=1e-5, rtol=1e-5)


def test_qk_norm_matches_every_kernel_that_accepts_it():
    cfg = load_config([*TINY, "pos=alibi"])
    ref = build_model(cfg).eval()
    idx = torch.randint(0, 64, (2, 12))
    for impl in ("sdpa", "sdpa_math", "wrapper"):
        model = build_model(load_config([*TINY, "pos=alibi", f"attn.impl={impl}"])).eval()
        model.load_state_dict(ref.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(model(idx), ref(idx), atol=1e-5, rtol=1e-5, msg=impl)


def test_torch_mha_is_rejected_up_front():
    with pytest.raises(ConfigError, match=r"^attn.impl=torch_mha: cannot normalise q/k inside its projections, "
                                          r"so not norm.qk_norm=true$"):
        load_config(["stages=[]", "device=cpu", "norm.qk_norm=true", "attn.impl=torch_mha"])


# ----------------------------------------------------------------------------- max attention logit
def test_max_attention_logit_is_max_abs_scaled_qk_over_visible_keys():
    model = build_model(load_config([*TINY, "pos=none", "model.n_layers=1"])).eval()
    idx = torch.randint(0, 64, (2, 10))
    attn = model.blocks[0].attn
    with torch.no_grad():
        h = model.blocks[0].norm1(model.wte(idx))  # (B, T, C)
        q, k, _ = attn.qkv(h).split(64, dim=-1)
        q = attn.q_norm(q.view(2, 10, 4, 16)).transpose(1, 2)  # (B, H, T, D)
        k = attn.k_norm(k.view(2, 10, 4, 16)).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)).abs() / 4.0  # (B, H, T, T)
        want = scores.masked_fill(~torch.ones(10, 10, dtype=torch.bool).tril(), 0).amax()
    assert max_attention_logit(model, idx) == pytest.approx(float(want), rel=1e-6)
    assert not attn.record_max_logit and attn.max_logit is None  # the probe leaves no state behind
    assert model.training is False


def test_qk_norm_bounds_the_logit_when_q_and_k_weights_grow():
    """Wortsman et al. 2023: without QK-norm the attention logits grow with the q/k weights (quadratically
    here); with it they do not move (the norm undoes any scale of the projection)."""
    idx = torch.randint(0, 64, (2, 16))
    for qk_norm in ("true", "false"):
        model = build_model(load_config([*TINY[:-1], f"norm.qk_norm={qk_norm}", "pos=rope"]))
        before = max_attention_logit(model, idx)
        with torch.no_grad():
            for block in model.blocks:
                block.attn.qkv.weight[: 2 * 64] *= 10  # q and k rows (MHA: q | k | v)
        after = max_attention_logit(model, idx)
        if qk_norm == "true":
            assert after == pytest.approx(before, rel=1e-3)
        else:
            assert after == pytest.approx(100 * before, rel=1e-3)


def test_max_attention_logit_restores_training_mode_and_needs_q_and_k():
    model = build_model(load_config(TINY)).train()
    max_attention_logit(model, torch.randint(0, 64, (1, 8)))
    assert model.training
    mha = build_model(load_config(["stages=[]", "device=cpu", "attn.impl=torch_mha"]))
    assert max_attention_logit(mha, torch.randint(0, 64, (1, 8))) is None  # projects inside the kernel


def test_training_results_record_the_max_attention_logit(tmp_path):
    from attnbench.train.loop import run_train

    fast = ["stages=[train]", "logger=none", "device=cpu", "train.batch_size=4", "train.seq_len=16", "train.steps=2",
            "train.eval_every=0", "train.eval_batches=1", "train.warmup_steps=1", "data.n_pairs=2", "data.n_queries=2"]
    for qk in ("true", "false"):
        cfg = load_config([*fast, f"norm.qk_norm={qk}"])
        model = build_model(cfg)
        res = run_train(cfg, model, torch.device("cpu"), torch.float32, tmp_path / qk, None)
        assert res["status"] == "ok" and res["max_attn_logit"] > 0


def test_qk_norm_lr_preset_composes_every_point_of_its_grid():
    from omegaconf import OmegaConf

    from attnbench.config.compose import conf_dir

    raw = OmegaConf.load(conf_dir() / "experiment" / "qk_norm_lr.yaml")
    params = {k: [v.strip() for v in str(val).split(",")] for k, val in raw.hydra.sweeper.params.items()}
    lrs = [float(x) for x in params["train.lr"]]
    assert max(lrs) / min(lrs) >= 10 and params["norm.qk_norm"] == ["false", "true"] and params["seed"] == ["0", "1", "2"]
    for lr in params["train.lr"]:
        for qk in params["norm.qk_norm"]:
            cfg = load_config(["experiment=qk_norm_lr", f"train.lr={lr}", f"norm.qk_norm={qk}", "logger=none"])
            assert cfg.train.lr == float(lr) and cfg.norm.qk_norm == (qk == "true") and cfg.stages == ["train"]
    model = build_model(cfg)
    assert isinstance(model.blocks[0].attn.q_norm, nn.LayerNorm)  # the paper's qk-layernorm
