"""Bad configurations: one line naming the config key and the allowed values.

In-process for every kind of error the issue lists (load_config raises ConfigError),
and through `python -m attnbench` for a few (one stderr line, non-zero exit, no
traceback, no results.json)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from attnbench import ConfigError, load_config

TINY = ["stages=[]", "device=cpu"]

# (overrides, the exact one-line message). Exact, because these lines are the user interface.
ERRORS = [
    pytest.param(["attn=foo"], "attn=foo: unknown option; choose from [diff, gqa, linear, local, mha, mla, mqa]", id="unknown-option"),
    pytest.param(["attn.impl=flash3"], "attn.impl=flash3: unknown option; choose from [flex, manual, sdpa, "
                 "sdpa_efficient, sdpa_flash, sdpa_math, torch_mha, wrapper]", id="unknown-kernel"),
    pytest.param(["attn.windw=3"], "attn.windw: unknown key; choose from [name, n_heads, n_kv_heads, window, impl, "
                 "qkv_bias, dropout, softcap, gate, sinks, kv_lora_rank, q_lora_rank, qk_nope_head_dim, "
                 "rope_head_dim, v_head_dim, absorb, lambda_init, feature_map, chunk_size, short_conv]", id="unknown-key"),
    pytest.param(["+attn.windw=3"], "attn.windw: unknown key; choose from [name, n_heads, n_kv_heads, window, impl, "
                 "qkv_bias, dropout, softcap, gate, sinks, kv_lora_rank, q_lora_rank, qk_nope_head_dim, "
                 "rope_head_dim, v_head_dim, absorb, lambda_init, feature_map, chunk_size, short_conv]", id="unknown-key-appended"),
    pytest.param(["attn.n_heads=four"], "attn.n_heads: Value 'four' of type 'str' could not be converted to Integer",
                 id="wrong-type"),
    pytest.param(["model.tie_embeddings=maybe"], "model.tie_embeddings: Value 'maybe' is not a valid bool (type str)",
                 id="wrong-type-bool"),
    pytest.param(["model.d_model=66"], "model.d_model=66: must be divisible by attn.n_heads=4", id="d-model-heads"),
    pytest.param(["attn=gqa", "attn.n_kv_heads=3"], "attn.n_kv_heads=3: must divide attn.n_heads=4", id="kv-heads"),
    pytest.param(["attn=mqa", "attn.n_kv_heads=2"], "attn.n_kv_heads=2: attn=mqa uses exactly 1 KV head "
                 "(use attn=gqa)", id="mqa-kv-heads"),
    pytest.param(["pos=rope", "model.d_model=24", "attn.n_heads=8"],
                 "pos=rope: head_dim=3 must be even (model.d_model / attn.n_heads)", id="rope-odd-head-dim"),
    pytest.param(["attn=local", "attn.window=0"], "attn.window=0: must be an integer >= 1", id="window-zero"),
    pytest.param(["attn.window=-4"], "attn.window=-4: must be an integer >= 1", id="window-negative"),
    pytest.param(["attn=local", "attn.window=null"], "attn.window=null: attn=local needs an integer window >= 1",
                 id="local-without-window"),
    pytest.param(["pos=alibi", "attn.impl=sdpa_flash"],
                 "attn.impl=sdpa_flash: cannot add an attention bias, so not pos=alibi", id="kernel-bias"),
    pytest.param(["attn=gqa", "attn.impl=torch_mha"],
                 "attn.impl=torch_mha: needs n_kv_heads = n_heads, so not attn=gqa", id="kernel-gqa"),
    pytest.param(["norm.placement=middle"], "norm.placement=middle: not allowed; choose from [pre, post]",
                 id="placement"),
    pytest.param(["attn.dropout=1.5"], "attn.dropout=1.5: must be in [0, 1)", id="dropout"),
    pytest.param(["ffn=swiglu", "ffn.multiple_of=0"], "ffn.multiple_of=0: must be an integer >= 1", id="multiple-of"),
    pytest.param(["pos=rope", "pos.base=1"], "pos.base=1.0: must be > 1 (RoPE/sinusoidal frequency base)", id="base"),
    pytest.param(["device.threads=0"], "device.threads=0: must be an integer >= 1", id="threads"),
    pytest.param(["model.init_std=0"], "model.init_std=0.0: must be > 0 (or null = 1/sqrt(model.d_model))", id="init-std"),
    pytest.param(["device.dtype=float64"], "device.dtype=float64: not allowed; choose from [float32, bfloat16, "
                 "float16]", id="dtype"),
]


@pytest.mark.parametrize("overrides,message", ERRORS)
def test_invalid_config_is_one_line_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config([*TINY, *overrides])
    assert str(err.value) == message
    assert "\n" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_where_there_is_none():
    with pytest.raises(ConfigError, match=r"^device=cuda: CUDA is not available on this machine; choose from \[auto, cpu\]$"):
        load_config(["stages=[]", "device=cuda"])


def test_sequence_longer_than_context_with_learned_positions():
    msg = ("train.seq_len: length 128 > model.context_length=64 with pos=learned; "
           "raise model.context_length or use pos=[alibi, none, rope, sinusoidal]")
    with pytest.raises(ConfigError) as err:
        load_config(["stages=[train]", "pos=learned", "model.context_length=64", "train.seq_len=128"])
    assert str(err.value) == msg
    with pytest.raises(ConfigError, match=r"^bench.seq_lens: length 80 > model.context_length=64 with pos=learned"):
        load_config(["stages=[bench]", "model.context_length=64", "bench.seq_lens=[64]", "bench.decode_tokens=16"])
    # Positions that are not learned have no length limit.
    load_config(["stages=[train]", "pos=rope", "model.context_length=64", "train.seq_len=128"])


# ----------------------------------------------------------------------------- the real CLI
def result_files(root: Path) -> list[Path]:
    return sorted(root.rglob("results.json")) if root.exists() else []


@pytest.mark.slow
@pytest.mark.parametrize("args,names", [
    (["attn=foo"], "attn=foo: unknown option; choose from [diff, gqa, linear, local, mha, mla, mqa]"),
    (["attn=gqa", "attn.n_kv_heads=3"], "attn.n_kv_heads=3"),
    (["pos=rope", "model.d_model=24", "attn.n_heads=8"], "pos=rope"),
    (["-m", "attn=mha,foo"], "attn=foo: unknown option"),  # a sweep is checked before any job starts
])
def test_cli_bad_value_is_one_stderr_line(cli, tmp_path, args, names):
    proc = cli(*args, "logger=none", timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnbench: error: "), proc.stderr
    assert names in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert result_files(Path(os.environ["ATTNBENCH_RUNS"])) == []


@pytest.mark.slow
def test_cli_full_error_gives_the_traceback(cli):
    proc = cli("attn.window=0", env_extra={"HYDRA_FULL_ERROR": "1"}, timeout=120)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "attn.window=0" in proc.stderr


@pytest.mark.slow
def test_cli_runs_from_another_directory_and_writes_results(cli, tmp_path):
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    proc = cli("stages=[]", "logger=none", "attn=gqa", "pos=alibi", cwd=elsewhere, timeout=180)
    assert proc.returncode == 0, proc.stderr
    files = result_files(Path(os.environ["ATTNBENCH_RUNS"]))
    assert len(files) == 1
    res = json.loads(files[0].read_text())
    assert res["status"] == "ok" and res["variant"] == "gqa-alibi-layernorm-gelu-L2-D64"
    assert not (elsewhere / "runs").exists()  # $ATTNBENCH_RUNS, not the working directory


@pytest.mark.slow
def test_cli_hydra_flags_pass_through(cli):
    proc = cli("--cfg", "job", "attn=mqa", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "name: mqa" in proc.stdout and "n_kv_heads: 1" in proc.stdout
    assert result_files(Path(os.environ["ATTNBENCH_RUNS"])) == []
