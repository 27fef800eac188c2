"""The bench stage: rows, statuses, memory method, OOM handling, results.json."""
from __future__ import annotations

import json
import math

import pytest
import torch

from attnbench import ConfigError, build_model
from attnbench.bench import suite
from attnbench.bench.memory import measure_in_worker
from attnbench.bench.peak import peak_flops
from attnbench.bench.suite import run_bench
from attnbench.bench.timing import time_call
from attnbench.job import run_job
from attnbench.track.results import BENCH_KEYS, check_results

CPU = torch.device("cpu")
FAST = ("stages=[bench]", "logger=none", "bench=quick", "bench.memory=none", "bench.peak_flops=1e11",
        "bench.repeats=2", "bench.warmup=1", "bench.decode_tokens=3", "bench.seq_lens=[16,32]")


def bench(make_cfg, *overrides):
    cfg = make_cfg(*FAST, *overrides)
    return cfg, *run_bench(cfg, build_model(cfg), CPU, torch.float32)


def test_every_mode_emits_a_complete_row(make_cfg):
    cfg, rows, env = bench(make_cfg, "attn=gqa", "pos=rope")
    assert [(r["mode"], r["seq_len"]) for r in rows] == [
        (m, t) for m in ("forward", "train_step", "prefill", "decode") for t in (16, 32)]
    for r in rows:
        assert set(BENCH_KEYS) <= set(r) and r["status"] == "ok", r
        assert r["batch_size"] == cfg.bench.batch_size and r["repeats"] == 2
        for key in ("median_ms", "p10_ms", "p90_ms", "tokens_per_s", "mfu", "flops"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["sdpa_backend"] == "flash"  # plain causal SDPA on CPU: the flash kernel
    decode = [r for r in rows if r["mode"] == "decode"]
    assert all(r["decode_tokens"] == 3 for r in decode)
    # decode throughput is per generated token: B tokens per step
    assert decode[0]["tokens_per_s"] == pytest.approx(cfg.bench.batch_size / (decode[0]["median_ms"] / 1e3))
    assert env["peak_flops"] == 1e11 and env["peak_flops_source"] == "config" and env["memory_method"] == "none"


def test_backend_reported_per_kernel(make_cfg):
    _, rows, env = bench(make_cfg, "attn.impl=manual", "bench.modes=[forward]")
    assert {r["sdpa_backend"] for r in rows} == {None} and env["sdpa_backend"] is None
    _, rows, _ = bench(make_cfg, "pos=alibi", "bench.modes=[forward]")  # a float bias: CPU flash cannot take it
    assert {r["sdpa_backend"] for r in rows} == {"math"}
    _, rows, _ = bench(make_cfg, "attn.impl=sdpa_math", "bench.modes=[forward]")
    assert {r["sdpa_backend"] for r in rows} == {"math"}
    _, rows, _ = bench(make_cfg, "attn.impl=torch_mha", "bench.modes=[forward]")  # SDPA nested in nn.MHA's code
    assert {r["sdpa_backend"] for r in rows} == {"flash"}


def test_train_step_leaves_the_weights_as_built(make_cfg):
    cfg = make_cfg(*FAST, "bench.modes=[train_step]")
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run_bench(cfg, model, CPU, torch.float32)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())


def test_flex_on_cpu_skips_train_step_instead_of_failing(make_cfg):
    _, rows, _ = bench(make_cfg, "attn.impl=flex", "bench.modes=[forward,train_step]", "bench.seq_lens=[16]")
    by_mode = {r["mode"]: r for r in rows}
    assert by_mode["forward"]["status"] == "ok"
    assert by_mode["train_step"]["status"] == "skipped" and "no backward on cpu" in by_mode["train_step"]["reason"]
    with pytest.raises(ConfigError, match="attn.impl=flex"):  # training itself is still rejected up front
        make_cfg("stages=[bench,train]", "attn.impl=flex")


@pytest.mark.parametrize("exc", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                 MemoryError()])
def test_injected_oom_gives_an_oom_row_and_the_grid_goes_on(make_cfg, monkeypatch, exc):
    real = suite.make_step

    def flaky(mode, cfg, model, B, T, device, dtype):
        step = real(mode, cfg, model, B, T, device, dtype)
        if T == 32 and mode == "forward":
            def boom():
                raise exc
            step.fn = boom
        return step

    monkeypatch.setattr(suite, "make_step", flaky)
    _, rows, _ = bench(make_cfg, "bench.modes=[forward,prefill]")
    assert [r["status"] for r in rows] == ["ok", "oom", "ok", "ok"]
    oom = rows[1]
    assert oom["median_ms"] is None and oom["reason"] and set(BENCH_KEYS) <= set(oom)


def test_a_point_that_cannot_fit_is_an_oom_row(make_cfg):
    # manual attention at T=100k materialises (1, 4, 1, T, T) fp32 scores = 160 GB: the
    # allocator refuses at once (no page is touched), the next point still runs. The size check counts
    # those scores and refuses the config on this machine, so device.memory_gb claims room for them.
    _, rows, _ = bench(make_cfg, "attn.impl=manual", "pos=none", "model.n_layers=1", "bench.batch_size=1",
                       "bench.modes=[forward]", "bench.seq_lens=[16,100000,32]", "device.memory_gb=1000")
    assert [r["status"] for r in rows] == ["ok", "oom", "ok"]
    assert "allocate" in rows[1]["reason"]


def test_a_failure_that_is_not_oom_is_a_failed_row(make_cfg, monkeypatch):
    monkeypatch.setattr(suite, "make_step", lambda *a: (_ for _ in ()).throw(ValueError("broken kernel")))
    _, rows, _ = bench(make_cfg, "bench.modes=[forward]", "bench.seq_lens=[16]")
    assert rows[0]["status"] == "failed" and "broken kernel" in rows[0]["reason"]


def test_time_call_excludes_warmup_and_counts_repeats():
    calls = []
    t = time_call(lambda: calls.append(1), CPU, warmup=3, repeats=7)
    assert len(calls) == 3 + 7 and t.repeats == 7 and len(t.samples_ms) == 7
    assert 0 < t.p10_ms <= t.median_ms <= t.p90_ms


def test_peak_flops_probe_is_cached_and_overridable(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path))
    cfg = make_cfg("stages=[bench]")
    value, source = peak_flops(cfg.bench, CPU, torch.float32)
    assert source == "probe" and 1e8 < value < 1e15
    assert peak_flops(cfg.bench, CPU, torch.float32) == (value, "cache")
    assert len(json.loads((tmp_path / "peak_flops.json").read_text())) == 1
    assert peak_flops(make_cfg("stages=[bench]", "bench.peak_flops=5e12").bench, CPU, torch.float32) == (5e12, "config")


@pytest.mark.parametrize("override, key", [("bench.memory=rss", "bench.memory"), ("bench.repeats=0", "bench.repeats"),
                                           ("bench.seq_lens=[]", "bench.seq_lens"), ("bench.warmup=-1", "bench.warmup")])
def test_bad_bench_settings_name_the_key(make_cfg, override, key):
    with pytest.raises(ConfigError, match=key):
        make_cfg("stages=[bench]", override)


def test_results_json_from_run_job_validates(make_cfg, tmp_path):
    cfg = make_cfg("stages=[bench]", "logger=none", "bench=quick", "bench.memory=none", "bench.repeats=2",
                   "attn=gqa", "pos=alibi")
    res = run_job(cfg, tmp_path)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "ok" and check_results(on_disk) == []
    assert len(on_disk["bench"]) == len(cfg.bench.modes) * len(cfg.bench.seq_lens)
    assert on_disk["env"]["peak_flops"] > 0 and on_disk["env"]["peak_flops_source"] == "probe"
    assert all(r["status"] == "ok" for r in on_disk["bench"])


@pytest.mark.slow
def test_cpu_peak_memory_manual_quadratic_sdpa_linear(make_cfg):
    """The subprocess RSS method sees what the kernels allocate: at 8 heads × head_dim 64 the
    manual kernel's (T, T) scores make its peak grow ~4× per doubling of T (hundreds of MB at
    T=2048), SDPA's flash kernel keeps it linear (2× per doubling, tens of MB for the whole layer)."""
    peaks = {}
    for impl in ("manual", "sdpa"):
        cfg = make_cfg("stages=[bench]", f"attn.impl={impl}", "pos=none", "model.d_model=512", "attn.n_heads=8",
                       "model.n_layers=1", "ffn.mult=1", "model.context_length=2048", "bench.modes=[forward]")
        got = measure_in_worker(cfg, [("forward", 1, t) for t in (512, 1024, 2048)], threads=1)
        peaks[impl] = [got[("forward", 1, t)]["peak_mem_bytes"] for t in (512, 1024, 2048)]
    man, sd = peaks["manual"], peaks["sdpa"]
    scores = 8 * 2048 * 2048 * 4  # one fp32 (H, T, T) score matrix: 128 MiB
    assert scores <= man[2] - sd[2] <= 3 * scores, peaks  # the scores (and their masked copy) are what manual adds
    assert man[2] / man[1] > 3.0 and man[1] / man[0] > 2.5, peaks  # quadratic
    assert 1.6 < sd[2] / sd[1] < 2.5 and 1.5 < sd[1] / sd[0] < 2.5, peaks  # linear
    assert sd[2] < 40 * 2**20, peaks


@pytest.mark.slow
def test_bench_rows_carry_worker_memory(make_cfg):
    # batch 8: its forward peaks at ~1.3 MB above the RSS before it. At batch 2 the forward's ~60 KB is
    # within the noise of RSS (heap reuse, the kernel's batched RSS counters): 0 in one of three runs here.
    cfg = make_cfg(*FAST, "bench.memory=subprocess", "bench.modes=[forward,train_step]", "bench.seq_lens=[64]",
                   "bench.batch_size=8")
    rows, env = run_bench(cfg, build_model(cfg), CPU, torch.float32)
    assert env["memory_method"] == "subprocess"
    assert all(isinstance(r["peak_mem_bytes"], int) and r["peak_mem_bytes"] > 0 for r in rows), rows


@pytest.mark.slow
def test_cli_prints_the_table_and_writes_results(cli, tmp_path):
    proc = cli("stages=[bench]", "attn=gqa", "pos=alibi", "logger=none", "bench=quick", "bench.repeats=2",
               "bench.memory=none", env_extra={"ATTNBENCH_RUNS": str(tmp_path / "runs")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train_step" in proc.stdout and "median_ms" in proc.stdout and "gqa-alibi" in proc.stdout
    (path,) = (tmp_path / "runs").rglob("results.json")
    assert check_results(json.loads(path.read_text())) == []


@pytest.mark.slow
def test_sigterm_during_the_bench_records_interrupted(tmp_path):
    """A job stopped by SIGTERM (SLURM's kill) outside training still writes its result and exits non-zero."""
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "attnbench", *FAST, "bench.modes=[forward]", "bench.seq_lens=[512]",
         "bench.repeats=100000", "device=cpu", f"hydra.run.dir={run_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    results, deadline = run_dir / "results.json", time.time() + 120
    while time.time() < deadline and not results.is_file():  # written once the model is built, before the bench
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    res = json.loads(results.read_text())
    assert proc.returncode == 1 and res["status"] == "interrupted", err
    assert "SIGTERM" in res["error"] and "Traceback" not in err


@pytest.mark.slow
def test_compiled_jobs_in_one_process_each_compile(make_cfg, tmp_path):
    """device.compile=true: every job of a multirun (one process) compiles afresh; none inherits the
    previous job's graphs or its recompile count (which would drop it to eager mode unnoticed).

    Counted with dynamo's own graph counter, not timed: inductor's graph cache makes the second job's
    compile of the same graph take ~0.03-0.2 s (seen in CI: 7.6 s, then 0.18 s), close to eager."""
    from torch._dynamo.utils import counters

    new_graphs = []
    for i in range(2):
        cfg = make_cfg(*FAST, "device=cpu", "device.compile=true", "bench.modes=[forward]",
                       "bench.seq_lens=[32,48]", "bench.repeats=2")
        before = counters["stats"]["unique_graphs"]
        res = run_job(cfg, tmp_path / str(i))
        assert res["status"] == "ok", res["error"]
        assert res["bench"][0]["compile_s"] is not None
        new_graphs.append(counters["stats"]["unique_graphs"] - before)
    assert all(n >= 1 for n in new_graphs), new_graphs  # a job that fell back to eager compiles none


def test_one_vocabulary_of_bench_modes():
    """modes.BENCH_MODES is the one list: every mode has a timed statement, and it is the config default."""
    from attnbench.bench.modes import BENCH_MODES
    from attnbench.bench.steps import BUILDERS, make_step
    from attnbench.config.schema import BenchConfig

    assert tuple(BUILDERS) == BENCH_MODES
    assert tuple(BenchConfig().modes) == BENCH_MODES
    with pytest.raises(ValueError, match="bench mode 'backward'"):
        make_step("backward", None, None, 1, 1, CPU, torch.float32)


def test_bad_bench_mode_and_memory_method_list_the_vocabulary(make_cfg):
    with pytest.raises(ConfigError, match=r"bench.modes=backward: not allowed; choose from \[forward, train_step, prefill, decode\]"):
        make_cfg("stages=[bench]", "bench.modes=[backward]")
    with pytest.raises(ConfigError, match=r"bench.memory=rss: not allowed; choose from \[auto, subprocess, none\]"):
        make_cfg("stages=[bench]", "bench.memory=rss")


# ----------------------------------------------------------------------------- SDPA math fallback (issue 10.4)
BF16, FP32 = torch.bfloat16, torch.float32


@pytest.mark.parametrize("impl, device, gqa, masked, dtype, falls_back", [
    ("sdpa", "cuda", True, True, BF16, True),  # GQA + window/ALiBi: flash takes no mask, efficient no GQA
    ("sdpa", "cuda", True, False, FP32, True),  # GQA in fp32: flash needs fp16/bf16
    ("sdpa", "cuda", True, False, BF16, False),  # GQA, causal, bf16: flash serves it
    ("sdpa", "cuda", False, True, BF16, False),  # MHA + mask: the efficient kernel
    ("sdpa", "cuda", False, False, FP32, False),
    ("sdpa", "cpu", True, True, BF16, False),  # CPU: a float mask is math for MHA too
    ("sdpa_math", "cuda", True, True, BF16, False),  # pinned: like-for-like by construction
    ("sdpa_flash", "cuda", True, False, BF16, False),
    ("manual", "cuda", True, True, BF16, False),
])
def test_sdpa_fallback_decision(impl, device, gqa, masked, dtype, falls_back):
    from attnbench.bench.backend import sdpa_fallback

    note = sdpa_fallback(impl, device, gqa, masked, dtype)
    assert (note is not None) == falls_back, note
    if falls_back:
        assert note.startswith("attn.impl=sdpa on cuda: GQA/MQA falls back to the math backend")


def test_sdpa_fallback_reads_the_config(make_cfg):
    from attnbench.bench.backend import sdpa_fallback_for

    cuda = torch.device("cuda")  # the decision only: nothing is allocated
    for overrides, falls_back in ((("attn=gqa", "attn.window=8"), True), (("attn=mqa", "pos=alibi"), True),
                                  (("attn=gqa",), False), (("attn=mha", "pos=alibi"), False)):
        cfg = make_cfg("stages=[bench]", *overrides)
        assert (sdpa_fallback_for(cfg, cuda, BF16) is not None) == falls_back, overrides
    assert sdpa_fallback_for(make_cfg("stages=[bench]", "attn=gqa"), cuda, FP32) is not None


def test_sdpa_fallback_is_logged_and_recorded_in_rows_and_env(make_cfg, monkeypatch, caplog):
    from attnbench.bench import backend

    # Decide as on CUDA, run on CPU: the recording path is the same.
    monkeypatch.setattr(suite, "sdpa_fallback_for",
                        lambda cfg, device, dtype: backend.sdpa_fallback_for(cfg, torch.device("cuda"), dtype))
    with caplog.at_level("WARNING", logger="attnbench.bench.suite"):
        _, rows, env = bench(make_cfg, "attn=gqa", "pos=alibi", "bench.modes=[forward]", "bench.seq_lens=[16]")
    assert rows[0]["sdpa_note"] == env["sdpa_note"] and "math backend" in env["sdpa_note"]
    assert any("falls back to the math backend" in r.getMessage() for r in caplog.records)
    _, rows, env = bench(make_cfg, "attn=mha", "pos=alibi", "bench.modes=[forward]", "bench.seq_lens=[16]")
    assert "sdpa_note" not in rows[0] and "sdpa_note" not in env


# ----------------------------------------------------------------------------- MFU by hand (issue 10.6)
@pytest.mark.parametrize("mode, factor", [("forward", 1), ("train_step", 3)])
def test_mfu_of_a_row_by_hand(make_cfg, mode, factor):
    """tiny (d=64, H=4, L=2, V=256, GELU ×4, MHA), T=16: FLOPs per token written out, then
    MFU = B·T·flops / (median_ms / 1000) / peak with the configured peak of 1e11 FLOP/s."""
    cfg, rows, _ = bench(make_cfg, f"bench.modes=[{mode}]", "bench.seq_lens=[16]")
    (row,) = rows
    d, T, V, B = 64, 16, 256, cfg.bench.batch_size
    per_layer = 2 * d * 3 * d + 2 * d * d + 2 * 2 * d * (T + 1) / 2 + 2 * 2 * d * 4 * d  # qkv, out, QK/AV causal, FFN
    flops = factor * B * T * (2 * per_layer + 2 * d * V)
    assert row["flops"] == pytest.approx(flops, rel=1e-12)
    assert row["mfu"] == pytest.approx(flops / (row["median_ms"] / 1e3) / 1e11, rel=1e-9)
