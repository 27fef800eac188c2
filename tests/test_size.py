"""The size check (config/size.py): a job that cannot fit its device is refused before the model is
built, in well under a second, allocating nothing; the parameter count is the model's own (model/size.py)."""
from __future__ import annotations

import resource
import time

import pytest
from omegaconf import OmegaConf

from attnbench import ConfigError, build_model, load_config
from attnbench.config.size import estimate
from attnbench.config.spec import resolve_spec
from attnbench.model import param_breakdown
from attnbench.model.size import count_params

CONFIGS = [
    [],
    ["attn=gqa", "pos=rope", "norm=rmsnorm", "ffn=swiglu", "model.n_layers=3"],
    ["attn=mqa", "pos=alibi", "model.tie_embeddings=false", "model.bias=false", "attn.qkv_bias=false"],
    ["attn=mla", "attn.q_lora_rank=16", "model.n_layers=3"],
    ["attn.gate=headwise", "attn.sinks=true", "attn.impl=manual", "norm.qk_norm=true"],
    ["attn=diff", "pos=rope"],
    ["attn=linear", "pos=none"],
    ["attn.impl=torch_mha", "bench.modes=[forward]", "ffn=geglu", "attn.qkv_bias=true"],
    ["model=small", "pos=learned", "model.context_length=300"],
]


@pytest.mark.parametrize("overrides", CONFIGS, ids=lambda o: " ".join(o) or "default")
def test_the_count_is_the_built_models(overrides):
    spec = resolve_spec(load_config([*overrides, "stages=[bench]", "logger=none", "device=cpu"]))
    assert count_params(spec) == param_breakdown(build_model(spec))["total"]


def test_the_estimate_by_hand():
    """Tiny model (d=64, L=2, V=256, gelu h=256, learned positions), bench forward only, then training:
    weights 4 B/param; +gradients 4, +AdamW 8 when it trains. One block saves, per token, 2d (norm inputs)
    + d + 2h (FFN) + 6d (attention: input, q/k/v, output, its copy) + d/2 = 1120 elements
    (config/activations.py). Forward: logits B·T·V·4 + one block; training: L blocks + 3d (embedding,
    final norm) saved, 3 blocks of backward transients, logits B·T·V·(4 + 16)."""
    cfg = load_config(["stages=[bench]", "bench.modes=[forward]", "bench.seq_lens=[32,64]", "bench.batch_size=3",
                       "logger=none", "device=cpu"])
    spec = resolve_spec(cfg)
    P = param_breakdown(build_model(spec))["total"]
    e = estimate(spec)
    assert (e.params, e.weights_bytes, e.gradient_bytes, e.optimizer_bytes) == (P, 4 * P, 0, 0)
    block = 2 * 64 + (64 + 2 * 256) + 6 * 64 + 32
    assert block == 1120 and e.activation_bytes == 3 * 64 * (256 + block) * 4
    assert e.total_bytes == 4 * P + e.activation_bytes
    train = estimate(resolve_spec(load_config(["stages=[train]", "train.batch_size=5", "train.seq_len=40",
                                               "logger=none", "device=cpu"])))
    assert (train.gradient_bytes, train.optimizer_bytes) == (4 * P, 8 * P)
    tokens = 5 * 40
    assert train.activation_bytes == tokens * ((2 * block + 3 * 64) * 4 + 3 * block * 4 + 256 * 20)
    assert train.activation_keys == "train.batch_size=5 train.seq_len=40"
    kv = estimate(resolve_spec(load_config(["stages=[bench]", "bench.modes=[decode]", "bench.seq_lens=[64]",
                                            "bench.batch_size=2", "bench.decode_tokens=1000", "pos=rope", "logger=none"])))
    cache = 2 * (64 + 1000) * (2 * 2 * 4 * 16 * 4)  # B · (T + decode_tokens) · 2 (k, v) · L · H · D · 4 B
    rope_block = block + 2 * (64 + 64)  # RoPE's rotated halves and rotated q, k
    assert kv.activation_bytes == cache + 2 * 64 * 256 * 4 + 2 * 64 * rope_block * 4  # cache + logits, together


def test_an_oversized_model_is_refused_fast_without_allocating():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from attnbench.config import conf_dir, validate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = compose("config", overrides=["model.n_layers=100000", "stages=[bench]", "logger=none", "device=cpu"])
    GlobalHydra.instance().clear()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    t = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert time.perf_counter() - t < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 100 * 1024  # no model-sized allocation
    msg = str(err.value)
    assert msg.startswith("model.n_layers=100000 model.d_model=64 model.vocab_size=256 ")  # then the batch keys:
    assert ": the job needs at least " in msg  # the activations (saved per block) dominate the 100000 layers
    assert "4,979,249,280 params" in msg and "of RAM on this machine (device=cpu)" in msg and "\n" not in msg


def test_the_budget_is_device_memory_gb_or_the_machines():
    from attnbench.device import memory_bytes

    import psutil
    import torch

    assert 0 < memory_bytes(torch.device("cpu")) <= psutil.virtual_memory().total
    with pytest.raises(ConfigError, match=r"more than the 1.02 MiB of device.memory_gb=0.001 \(device=cpu\)"):
        load_config(["device=cpu", "device.memory_gb=0.001", "logger=none"])
    with pytest.raises(ConfigError, match="device.memory_gb=0.0: must be > 0"):
        load_config(["device=cpu", "device.memory_gb=0", "logger=none"])


def test_a_cgroup_limit_lowers_the_budget(tmp_path, monkeypatch):
    import torch

    from attnbench import device

    limit = tmp_path / "memory.max"
    limit.write_text("123456789\n")
    monkeypatch.setattr(device, "CGROUP_LIMITS", (limit,))
    assert device.memory_bytes(torch.device("cpu")) == 123456789
    limit.write_text("max\n")  # cgroup v2 without a limit
    assert device.memory_bytes(torch.device("cpu")) > 123456789


def test_the_job_checks_again_before_building(tmp_path, monkeypatch):
    """run_job: the check runs again (with the data's vocabulary, on the job's node) before the model is
    built; a refused job is a failed result with the one line, not an allocation."""
    from attnbench import job

    monkeypatch.setattr(job, "validate", lambda cfg: None)  # only the check before building is left
    cfg = load_config(["stages=[bench]", "logger=none", "device=cpu"])
    OmegaConf.update(cfg, "device.memory_gb", 0.0001)
    res = job.run_job(cfg, tmp_path)
    assert res["status"] == "failed" and "more than the 105 KiB of device.memory_gb=0.0001" in res["error"]
    assert res["model"] == {} and res["bench"] == []


@pytest.mark.slow
def test_the_cli_refuses_an_oversized_model_with_one_line(cli):
    t = time.perf_counter()
    r = cli("model.n_layers=100000", "stages=[bench]", "logger=none", "device=cpu")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("attnbench: error: model.n_layers=100000 model.d_model=64") and "GiB" in r.stderr
    assert time.perf_counter() - t < 60  # was: a minute of allocation, then a RuntimeError (exit 1)
