"""Issue 25 item 13: the size check's estimate counts what a job really holds: the data's vocabulary,
float32 logits, prefill's KV cache and logits together, linear attention's chunk states, the tensors a
training step saves for backward (checked against a trace of the real model), and GPUs asked for
through a SLURM `gres`."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from omegaconf import OmegaConf

from attnbench import load_config
from attnbench.config.activations import block_elems
from attnbench.config.size import check_config_fits, data_vocab, estimate
from attnbench.config.spec import resolve_spec
from attnbench.sweep.precheck import gres_gpus, launch_target

CPU = torch.device("cpu")


def test_the_login_node_check_uses_the_datas_vocabulary():
    cfg = load_config(["stages=[train]", "device=cpu", "logger=none", "data.vocab_size=8192"])
    assert cfg.model.vocab_size == 256 and data_vocab(cfg) == 8192
    est = check_config_fits(cfg, CPU)
    assert est == estimate(resolve_spec(cfg, vocab_size=8192)) != estimate(resolve_spec(cfg))
    bench_only = load_config(["stages=[bench]", "device=cpu", "logger=none", "data.vocab_size=8192"])
    assert data_vocab(bench_only) is None  # a job that does not train keeps model.vocab_size
    byte = load_config(["stages=[train]", "device=cpu", "logger=none", "data=text", "data.tokenizer=byte",
                        f"data.path={__file__}"])
    assert data_vocab(byte) == 256


def test_a_char_corpus_gives_its_characters(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("abcab\n" * 2000)
    cfg = load_config(["stages=[train]", "device=cpu", "logger=none", "data=text", f"data.path={corpus}",
                       "train.seq_len=16"])
    assert data_vocab(cfg) == 4  # a b c and the newline


def test_logits_are_counted_in_float32_too():
    """Under bf16 autocast the logits are bf16, but the loss casts them to float32 and keeps its
    log-softmax: the estimate holds at least B·T·V·(2 + 4 + 4)."""
    cfg = load_config(["stages=[train]", "device=cpu", "device.dtype=bfloat16", "logger=none",
                       "data.vocab_size=8192", "train.batch_size=8", "train.seq_len=64"])
    est = check_config_fits(cfg, CPU)
    assert est.activation_bytes >= 8 * 64 * 8192 * (2 + 4 + 4)


def test_prefill_holds_the_kv_cache_and_the_logits_at_once():
    cfg = load_config(["stages=[bench]", "bench.modes=[prefill]", "bench.seq_lens=[256]", "bench.batch_size=4",
                       "bench.decode_tokens=256", "device=cpu", "logger=none", "model.vocab_size=4096"])
    spec = resolve_spec(cfg)
    from attnbench.model import kv_cache_bytes_per_token

    cache = 4 * (256 + 256) * kv_cache_bytes_per_token(spec, 4)
    logits = 4 * 256 * 4096 * 4
    assert estimate(spec).activation_bytes >= cache + logits  # the sum, not the larger of the two


def test_taylor2_chunk_states_are_counted():
    """attn=linear with taylor2 features (F = 1 + D + D² = 1057 at D = 32) keeps a (F × D) state per chunk
    and KV head: at T=256, chunks of 64, that is more than the logits, the old estimate's one tensor."""
    cfg = load_config(["stages=[train]", "attn=linear", "attn.feature_map=taylor2", "pos=none", "device=cpu",
                       "logger=none", "model.d_model=256", "attn.n_heads=8", "train.batch_size=8",
                       "train.seq_len=256"])
    spec = resolve_spec(cfg, vocab_size=data_vocab(cfg))
    states = 8 * 2 * (256 // 64 + 1) * 8 * 1057 * 32 * 4  # B · L · (chunks + 1) · Hkv · F · D · 4 B
    assert estimate(spec).activation_bytes > states > 8 * 256 * spec.vocab_size * 4


@pytest.mark.parametrize("gres,n", [("gpu:1", 1), ("gpu:a100:2", 2), ("gpu", 1), ("shard:4", 0),
                                    ("gpu:v100:1,shard:2", 1), (None, 0)])
def test_gres_gpus(gres, n):
    assert gres_gpus(gres) == n


def _master(**launcher) -> object:
    return OmegaConf.create({"hydra": {"launcher": {"_target_": "x.SlurmLauncher", "mem_gb": 8, **launcher}},
                             "device": {"name": "auto"}})


def test_a_gpu_asked_for_through_gres_is_a_cuda_job():
    assert launch_target(_master(gres="gpu:1")).device_type == "cuda"
    assert launch_target(_master(additional_parameters={"gres": "gpu:a100:1"})).device_type == "cuda"
    cpu = launch_target(_master(gres="shard:1"))
    assert cpu.device_type == "cpu" and cpu.memory_bytes == 8 * 2**30  # a CPU job: the launcher's mem_gb


TRACED = [[], ["attn=gqa", "attn.n_kv_heads=2"], ["attn=mla"], ["attn=mla", "attn.q_lora_rank=64"],
          ["attn=linear", "attn.feature_map=taylor2", "pos=none"], ["attn=linear", "pos=rope", "attn.n_kv_heads=2",
                                                                     "attn.feature_map=taylor2"],
          ["attn=linear", "pos=none"], ["attn=diff"], ["pos=rope"], ["attn.impl=manual"],
          ["ffn=swiglu", "norm=rmsnorm"], ["attn.gate=headwise", "norm.qk_norm=true", "pos=rope"],
          ["attn.short_conv=3"], ["attn=linear", "pos=none", "attn.short_conv=3"]]


def _saved_per_token(spec, B: int, T: int) -> float:
    """Bytes autograd saves per token for one block: the model traced with fake tensors (no storage),
    each saved storage once, with two blocks minus with one."""
    import torch.nn.functional as F
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.multiprocessing.reductions import StorageWeakRef

    from attnbench import build_model

    def saved(n_layers: int) -> int:
        seen: dict = {}

        def pack(x):
            seen[StorageWeakRef(x.untyped_storage()).cdata] = x.untyped_storage().nbytes()
            return x

        with FakeTensorMode(allow_non_fake_inputs=True):
            model = build_model(dataclasses.replace(spec, n_layers=n_layers))
            idx = torch.zeros(B, T, dtype=torch.long)
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
                F.cross_entropy(model(idx).flatten(0, 1).float(), idx.flatten())
        return sum(seen.values())

    return (saved(2) - saved(1)) / (B * T)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", TRACED, ids=lambda o: " ".join(o) or "mha")
def test_the_block_count_matches_what_autograd_saves(overrides):
    cfg = load_config([*overrides, "stages=[train]", "device=cpu", "logger=none", "model.d_model=256",
                       "attn.n_heads=8", "model.context_length=512"])
    spec = resolve_spec(cfg, vocab_size=data_vocab(cfg))
    traced = _saved_per_token(spec, 8, 256) / 4
    ratio = block_elems(spec, 256) / traced
    assert 0.9 <= ratio <= 1.35, (traced, block_elems(spec, 256))
    assert math.isfinite(ratio)
