"""Every option of every config group composes, validates, builds a tiny model and runs
forward and backward. Parametrized from the files in conf/, so a new option is tested
the moment its YAML file exists."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from attnbench import ConfigError, build_model, load_config
from attnbench.config import conf_dir
from attnbench.device import resolve_device
from attnbench.registry import FFNS, NORMS, POSITIONAL

GROUPS = ("attn", "pos", "norm", "ffn", "model", "device", "bench", "train", "data", "logger", "experiment")
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((conf_dir() / g).glob("*.yaml"))]
# Shrinks any preset to a few thousand parameters; 4 heads of 8 dims works with every option.
SHRINK = ["model.d_model=32", "attn.n_heads=4", "model.n_layers=2", "model.vocab_size=64", "model.context_length=64"]
BIG_PRESETS = {"deep_narrow", "shallow_wide", "gpt2_small"}


def available(device: str) -> bool:
    return {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}.get(device, True)


def overrides_for(group: str, option: str, tmp_path: Path) -> list[str]:
    """The overrides that select `option` and give its group something to validate."""
    ov = [f"{group}={option}"]
    if group == "bench":
        ov.append("stages=[bench]")  # validates bench.* (nothing is measured here)
    elif group in ("train", "data"):
        ov.append("stages=[train]")  # validates train.* and data.* (nothing is downloaded here)
        if group == "data":
            text = tmp_path / "corpus.txt"
            text.write_text("to be or not to be\n" * 50)
            ov.append(f"data.path={text}")
    else:
        ov.append("stages=[]")
    if group == "model" and option in BIG_PRESETS:
        ov += SHRINK
    elif group != "model":
        ov += ["model=tiny"]
    return ov


def test_every_group_has_options():
    groups = {g for g, _ in OPTIONS}
    assert groups >= {"attn", "pos", "norm", "ffn", "model", "device", "bench", "train", "data", "logger"}


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_validates_builds_and_trains_a_step(group, option, tmp_path):
    ov = overrides_for(group, option, tmp_path)
    if group == "device" and not available(option):
        with pytest.raises(ConfigError, match=rf"^device={option}: .* not available"):
            load_config(ov)
        return
    cfg = load_config(ov)
    if group != "experiment":
        assert cfg[group].name == option  # the file's name is the option's name (results labels use it)
    model = build_model(cfg).to(resolve_device(cfg.device))
    idx = torch.randint(0, cfg.model.vocab_size, (2, 12), device=next(model.parameters()).device)
    logits = model(idx)  # (B, T, V)
    assert logits.shape == (2, 12, cfg.model.vocab_size)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), idx[:, 1:].flatten())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert torch.isfinite(loss)


@pytest.mark.parametrize("preset,n_layers,d_model,n_heads,context,vocab", [
    ("tiny", 2, 64, 4, 512, 256),
    ("small", 4, 256, 4, 512, 256),
    ("deep_narrow", 24, 256, 4, 1024, 256),
    ("shallow_wide", 6, 1024, 16, 1024, 256),
    ("gpt2_small", 12, 768, 12, 1024, 50257),
])
def test_presets_have_their_documented_dims(preset, n_layers, d_model, n_heads, context, vocab):
    cfg = load_config([f"model={preset}", "stages=[]"])
    m = cfg.model
    assert (m.n_layers, m.d_model, cfg.attn.n_heads, m.context_length, m.vocab_size) == (
        n_layers, d_model, n_heads, context, vocab)


def test_user_overrides_beat_the_preset():
    cfg = load_config(["model=gpt2_small", "attn.n_heads=6", "model.n_layers=3", "stages=[]"])
    assert (cfg.attn.n_heads, cfg.model.n_layers, cfg.model.d_model) == (6, 3, 768)


def test_defaults_are_the_documented_ones():
    cfg = load_config(["stages=[]"])
    assert (cfg.attn.name, cfg.pos.name, cfg.norm.name, cfg.ffn.name, cfg.model.name, cfg.device.name) == (
        "mha", "learned", "layernorm", "gelu", "tiny", "auto")
    assert cfg.norm.placement == "pre" and cfg.pos.base == 10000.0 and cfg.model.tie_embeddings
    assert load_config().stages == ["bench", "train"]


@pytest.mark.parametrize("group,registry", [("pos", POSITIONAL), ("norm", NORMS), ("ffn", FFNS)])
def test_every_registered_component_has_a_config_file_and_vice_versa(group, registry):
    files = sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
    assert files == registry.names()


def test_the_config_is_plain_data():
    """Resolvable and serialisable: results.json and W&B store it as is."""
    cfg = load_config(["attn=gqa", "pos=rope", "stages=[]"])
    data = OmegaConf.to_container(cfg, resolve=True)
    assert data["attn"]["n_kv_heads"] == 2 and data["pos"]["name"] == "rope"


def test_cpu_model_name_from_cpuinfo(tmp_path):
    from attnbench.device import cpu_model

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7763 64-Core Processor\n")
    assert cpu_model(info) == "AMD EPYC 7763 64-Core Processor"
    assert cpu_model(tmp_path / "missing")  # falls back to platform's answer, never empty


@pytest.mark.parametrize("compile_", [False, True])
def test_device_setup_with_threads(compile_):
    """device.threads with or without device.compile: setup() used to raise UnboundLocalError
    (a function-level `import torch._dynamo` made `torch` local to it)."""
    import torch

    from attnbench.device import setup

    before = torch.get_num_threads()
    try:
        cfg = load_config(["device=cpu", "device.threads=1", f"device.compile={str(compile_).lower()}", "stages=[bench]"])
        assert setup(cfg.device).type == "cpu"
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
