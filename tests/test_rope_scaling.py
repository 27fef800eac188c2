"""RoPE context extension (`pos.scaling`): linear (PI, Chen et al. 2023), ntk (static NTK-aware),
yarn (Peng et al. 2023) and llama3 (Llama 3.1). linear/yarn/llama3 against transformers'
LlamaForCausalLM with the matching rope_parameters and the same weights; ntk against its formula."""
from __future__ import annotations

import math

import pytest
import torch

from attnbench import ConfigError, build_model, load_config
from attnbench.model.position import RopeScaling, rope_base_freqs, rope_frequencies
from hf_llama import LLAMA_OVERRIDES, cached_logits, hf_cached_logits, port, randomise_norms

pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated")

TINY = [*LLAMA_OVERRIDES, "model.d_model=64", "attn.n_heads=4", "model.n_layers=2", "model.vocab_size=64",
        "model.context_length=32"]
ORIGINAL = 32  # pos.original_context; the test sequences run to 3x this
SCALINGS = {  # attnbench overrides -> HF rope_parameters
    "linear": (["pos.scaling=linear", "pos.factor=4"], {"rope_type": "linear", "factor": 4.0}),
    "yarn": (["pos.scaling=yarn", "pos.factor=4", f"pos.original_context={ORIGINAL}"],
             {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": ORIGINAL}),
    "yarn_betas": (["pos.scaling=yarn", "pos.factor=8", f"pos.original_context={ORIGINAL}", "pos.beta_fast=8",
                    "pos.beta_slow=2", "pos.base=500"],
                   {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": ORIGINAL,
                    "beta_fast": 8.0, "beta_slow": 2.0}),
    "llama3": (["pos.scaling=llama3", "pos.factor=8", f"pos.original_context={ORIGINAL}"],
               {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": ORIGINAL,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0}),
    "llama3_bands": (["pos.scaling=llama3", "pos.factor=2", f"pos.original_context={ORIGINAL}",
                      "pos.low_freq_factor=2", "pos.high_freq_factor=8", "pos.base=500"],
                     {"rope_type": "llama3", "factor": 2.0, "original_max_position_embeddings": ORIGINAL,
                      "low_freq_factor": 2.0, "high_freq_factor": 8.0}),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def model_and_hf(overrides: list[str], rope_parameters: dict, untied: bool = False):
    cfg = load_config([*TINY, *overrides, *(["model.tie_embeddings=false"] if untied else [])])
    model = build_model(cfg).eval()
    randomise_norms(model)
    return model, port(model, cfg, "llama", rope_parameters), cfg


@pytest.mark.parametrize("name", sorted(SCALINGS))
def test_scaled_rope_logits_match_transformers_llama(name):
    overrides, rope = SCALINGS[name]
    model, hf, cfg = model_and_hf(overrides, rope, untied=name == "linear")
    hf_inv = hf.model.rotary_emb.inv_freq
    torch.testing.assert_close(model.pos.inv_freq, hf_inv, atol=0, rtol=0)  # bit for bit
    assert model.pos.mscale == pytest.approx(hf.model.rotary_emb.attention_scaling)
    idx = torch.randint(0, 64, (2, 3 * ORIGINAL), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(idx).logits
        torch.testing.assert_close(model(idx), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cached_logits(model, idx, 40), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(hf_cached_logits(hf, idx, 40), ref, atol=1e-4, rtol=1e-4)


def test_scaling_changes_the_logits_past_position_zero():
    """Guards the equivalence test against a no-op: every scaling moves the logits."""
    idx = torch.randint(0, 64, (1, 3 * ORIGINAL))
    plain = build_model(load_config(TINY)).eval()
    for name, (overrides, _) in SCALINGS.items():
        model = build_model(load_config([*TINY, *overrides])).eval()
        model.load_state_dict(plain.state_dict())
        with torch.no_grad():
            assert not torch.allclose(model(idx)[:, 1:], plain(idx)[:, 1:], atol=1e-3), name


def test_yarn_attention_temperature_is_0_1_ln_s_plus_1():
    _, mscale = rope_frequencies(16, 10000.0, RopeScaling("yarn", factor=16.0, original_context=64))
    assert mscale == pytest.approx(0.1 * math.log(16) + 1)
    assert rope_frequencies(16, 10000.0, RopeScaling("yarn", factor=1.0, original_context=64))[1] == 1.0


@pytest.mark.parametrize("D,base,factor", [(16, 10000.0, 4.0), (8, 500.0, 8.0), (64, 10000.0, 2.0)])
def test_ntk_is_base_times_factor_to_the_d_over_d_minus_2(D, base, factor):
    inv_freq, mscale = rope_frequencies(D, base, RopeScaling("ntk", factor=factor))
    new_base = base * factor ** (D / (D - 2))
    want = torch.tensor([new_base ** (-2 * i / D) for i in range(D // 2)], dtype=torch.float64)
    torch.testing.assert_close(inv_freq.double(), want, atol=0, rtol=1e-6)
    assert mscale == 1.0
    plain = rope_base_freqs(D, base)
    # the highest frequency is untouched, the lowest is interpolated by exactly `factor`
    assert inv_freq[0] == plain[0]
    torch.testing.assert_close(inv_freq[-1], plain[-1] / factor, rtol=1e-5, atol=0)


def test_ntk_model_uses_the_formula():
    model = build_model(load_config([*TINY, "pos.scaling=ntk", "pos.factor=4"]))
    D = 16
    want = 1.0 / (10000.0 * 4 ** (D / (D - 2))) ** (torch.arange(0, D, 2).double() / D)
    torch.testing.assert_close(model.pos.inv_freq.double(), want, atol=0, rtol=1e-6)


def test_linear_is_position_interpolation():
    """PI: the rotation at position p with factor s is the plain rotation at p / s."""
    D, s = 16, 4.0
    scaled, _ = rope_frequencies(D, 10000.0, RopeScaling("linear", factor=s))
    p = torch.arange(0, 64).float()
    torch.testing.assert_close(p[:, None] * scaled, (p / s)[:, None] * rope_base_freqs(D), atol=1e-6, rtol=1e-6)


def test_original_context_defaults_to_model_context_length():
    a = build_model(load_config([*TINY, "pos.scaling=yarn", "pos.factor=4"]))
    b = build_model(load_config([*TINY, "pos.scaling=yarn", "pos.factor=4", "pos.original_context=32"]))
    c = build_model(load_config([*TINY, "pos.scaling=yarn", "pos.factor=4", "pos.original_context=256"]))
    assert torch.equal(a.pos.inv_freq, b.pos.inv_freq) and not torch.equal(a.pos.inv_freq, c.pos.inv_freq)


def test_scaling_only_in_eval_mode_when_not_in_training():
    """pos.scaling_in_training=false: plain RoPE while training (model.train()), the scaled
    frequencies in eval: a model trained at the original length, extended at inference."""
    plain = build_model(load_config(TINY))
    late = build_model(load_config([*TINY, "pos.scaling=yarn", "pos.factor=4", "pos.scaling_in_training=false"]))
    always = build_model(load_config([*TINY, "pos.scaling=yarn", "pos.factor=4"]))
    late.load_state_dict(plain.state_dict())
    always.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 64, (2, 48))
    with torch.no_grad():
        torch.testing.assert_close(late.train()(idx), plain.train()(idx), atol=0, rtol=0)
        torch.testing.assert_close(late.eval()(idx), always.eval()(idx), atol=0, rtol=0)
        torch.testing.assert_close(always.train()(idx), always.eval()(idx), atol=0, rtol=0)


@pytest.mark.parametrize("name", ["ntk", "linear", "yarn", "llama3"])
def test_causal_and_cached_decoding_equal_the_full_pass(name):
    overrides = {"ntk": ["pos.scaling=ntk", "pos.factor=4"]}.get(name) or SCALINGS[name][0]
    model = build_model(load_config([*TINY, *overrides])).eval()
    idx = torch.randint(0, 64, (2, 50))
    with torch.no_grad():
        full = model(idx)
        changed = idx.clone()
        changed[:, 30:] = (changed[:, 30:] + 1) % 64
        torch.testing.assert_close(model(changed)[:, :30], full[:, :30], atol=0, rtol=0)  # no peeking ahead
    torch.testing.assert_close(cached_logits(model, idx, 20), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("overrides,message", [
    (["pos=alibi", "pos.scaling=linear", "pos.factor=2"], r"^pos.scaling=linear: only with pos=rope \(pos=alibi"),
    (["pos.scaling=dynamic"], r"^pos.scaling=dynamic: not allowed; choose from \[none, linear, ntk, yarn, llama3\]$"),
    (["pos.scaling=linear", "pos.factor=0.5"], r"^pos.factor=0.5: must be >= 1"),
    (["pos.scaling=yarn", "pos.original_context=0"], r"^pos.original_context=0: must be an integer >= 1$"),
    (["pos.scaling=llama3", "pos.low_freq_factor=4"], r"^pos.low_freq_factor=4.0: must be > 0 and < pos.high_freq_factor=4.0$"),
    (["pos.scaling=yarn", "pos.beta_slow=64"], r"^pos.beta_slow=64.0: must be > 0 and < pos.beta_fast=32.0$"),
    (["pos.scaling=ntk", "model.d_model=8"], r"^pos.scaling=ntk: head_dim=2 must be > 2"),
])
def test_bad_scaling_configs_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config([*TINY, *overrides])


# ----------------------------------------------------------------------------- fine-tuning: train.init_from
FAST = ["stages=[train]", "logger=none", "device=cpu", "pos=rope", "train.batch_size=4", "train.seq_len=16",
        "train.eval_every=0", "train.eval_batches=1", "train.warmup_steps=1", "train.sample_tokens=0",
        "data.n_pairs=2", "data.n_queries=2", "model.n_layers=1"]


def _train(overrides: list[str], run_dir):
    from attnbench.train.loop import run_train

    cfg = load_config([*FAST, *overrides])
    model = build_model(cfg)
    return run_train(cfg, model, torch.device("cpu"), torch.float32, run_dir, None), model


def test_init_from_starts_a_scaled_run_from_the_checkpoint_weights(tmp_path):
    """The rope_finetune recipe: plain RoPE trained at 16 tokens, then PI at 64 from those weights."""
    from attnbench.train.checkpoint import init_weights_from

    res, trained = _train(["train.steps=3"], tmp_path / "a")
    assert res["status"] == "ok" and res["init_from"] is None
    fresh = build_model(load_config([*FAST, "pos.scaling=linear", "pos.factor=4", "train.seq_len=64",
                                     "seed=1"]))
    assert init_weights_from(fresh, str(tmp_path / "a")) == tmp_path / "a" / "checkpoint.pt"  # a run dir works
    for k, v in trained.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v, atol=0, rtol=0)
    assert torch.equal(fresh.pos.inv_freq, trained.pos.inv_freq / 4)  # the scaling is this run's, not saved
    res2, _ = _train(["train.steps=0", f"train.init_from={res['checkpoint']}", "pos.scaling=linear",
                      "pos.factor=4", "train.seq_len=64"], tmp_path / "b")
    assert res2["status"] == "ok" and res2["init_from"] == res["checkpoint"] and res2["steps"] == 0
    # 0 steps: the evaluation is of the checkpoint's weights exactly (extension without fine-tuning)
    from attnbench.train.data import prepare_data
    from attnbench.train.evaluate import evaluate

    cfg = load_config([*FAST, "pos.scaling=linear", "pos.factor=4", "train.seq_len=64"])
    batches = prepare_data(cfg).val_batches(1, 4, 64)
    assert evaluate(fresh, batches, torch.device("cpu"), torch.float32)["loss"] == pytest.approx(res2["val_loss"], rel=1e-6)


def test_init_from_errors_are_one_line(tmp_path):
    from attnbench.train.checkpoint import CheckpointError, init_weights_from

    with pytest.raises(ConfigError, match=r"^train.init_from=/nonexistent/x.pt: no such checkpoint file or run directory$"):
        load_config([*FAST, "train.init_from=/nonexistent/x.pt"])
    res, _ = _train(["train.steps=1"], tmp_path / "a")
    wider = build_model(load_config([*FAST, "model.d_model=32"]))
    with pytest.raises(CheckpointError, match=r"^train.init_from=.*: does not fit this model: RuntimeError"):
        init_weights_from(wider, res["checkpoint"])
    with pytest.raises(CheckpointError, match="no checkpoint file there"):
        init_weights_from(wider, str(tmp_path))


# ----------------------------------------------------------------------------- Finding 9 presets
def preset_params(experiment: str) -> dict[str, list[str]]:
    from omegaconf import OmegaConf

    from attnbench.config.compose import conf_dir

    raw = OmegaConf.load(conf_dir() / "experiment" / f"{experiment}.yaml")
    return {k: [v.strip() for v in str(val).split(",")] for k, val in raw.hydra.sweeper.params.items()}


def test_rope_extension_preset_composes_every_variant():
    params = preset_params("rope_extension")
    assert params["seed"] == ["0", "1", "2"]
    want = {"rope": ("rope", "none"), "pi": ("rope", "linear"), "ntk": ("rope", "ntk"), "yarn": ("rope", "yarn"),
            "alibi": ("alibi", "none")}
    assert params["+experiment/rope_extension"] == list(want)
    for variant, (pos, scaling) in want.items():
        cfg = load_config(["experiment=rope_extension", f"+experiment/rope_extension={variant}", "logger=none"])
        assert (cfg.pos.name, cfg.pos.scaling) == (pos, scaling)
        assert cfg.stages == ["train"] and cfg.train.seq_len == 64 == cfg.pos.original_context
        assert list(cfg.train.eval_seq_lens) == [64, 128, 256, 512] and cfg.pos.factor == 8
        assert cfg.pos.scaling_in_training is False  # extension without fine-tuning
        build_model(cfg)


def test_rope_finetune_preset_composes_every_variant(tmp_path):
    params = preset_params("rope_finetune")
    assert params["+experiment/rope_extension"] == ["rope", "pi", "ntk", "yarn"]
    res, _ = _train(["train.steps=1"], tmp_path / "pre")
    for variant in ("rope", "pi", "ntk", "yarn", "alibi"):
        cfg = load_config(["experiment=rope_finetune", f"+experiment/rope_extension={variant}", "logger=none",
                           f"train.init_from={res['checkpoint']}"])
        assert cfg.train.seq_len == 512 and cfg.train.steps <= 400 and cfg.pos.scaling_in_training is True
        assert cfg.train.init_from == res["checkpoint"] and cfg.train.lr < 1e-3


def test_rope_finetune_runs_from_a_rope_extension_checkpoint(tmp_path):
    """The two presets chained, cut down to a couple of steps on the synthetic task."""
    small = ["data=synthetic", "data.n_pairs=2", "data.n_queries=2", "model.n_layers=1", "train.batch_size=2",
             "train.eval_batches=1", "train.eval_every=0", "train.eval_seq_lens=[16,32]", "device=cpu", "logger=none"]
    from attnbench.train.loop import run_train

    cfg = load_config(["experiment=rope_extension", "+experiment/rope_extension=pi", *small, "train.steps=2",
                       "train.seq_len=16", "pos.original_context=16", "pos.factor=2", "train.warmup_steps=1"])
    pre = run_train(cfg, build_model(cfg), torch.device("cpu"), torch.float32, tmp_path / "pre", None)
    assert pre["status"] == "ok" and set(pre["val_loss_by_len"]) == {"16", "32"}
    cfg = load_config(["experiment=rope_finetune", "+experiment/rope_extension=pi", *small, "train.steps=2",
                       "train.seq_len=32", "pos.original_context=16", "pos.factor=2", "train.warmup_steps=1",
                       f"train.init_from={pre['checkpoint']}"])
    ft = run_train(cfg, build_model(cfg), torch.device("cpu"), torch.float32, tmp_path / "ft", None)
    assert ft["status"] == "ok" and ft["init_from"] == pre["checkpoint"] and ft["steps"] == 2
