"""The bench stage: every (mode, seq_len) point of the grid → one row of results.json.

    rows, env_extra = run_bench(cfg, model, device, dtype)

Each row has the keys of `results.BENCH_KEYS` (plus `reason`, `sdpa_backend`,
`compile_s`, ... where they apply). A point that runs out of memory becomes an
`oom` row and the grid goes on; a kernel with no backward on this device gives a
`skipped` train_step row. Timing is in this process (timing.py), peak memory per
memory.py, FLOPs per flops.py, MFU against the probed peak (peak.py).
"""
from __future__ import annotations

import contextlib
import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from .. import device as dev
from ..config.spec import Spec, as_spec
from ..registry import KERNELS
from .backend import BackendProbe, sdpa_fallback_for
from .memory import cuda_peak, measure_in_worker, reading, resolve_method
from .peak import peak_flops
from .steps import Step, make_step
from .timing import Timing, time_call

log = logging.getLogger(__name__)


@dataclass
class BenchContext:
    spec: Spec
    runner: nn.Module  # the model, or its torch.compile wrapper
    device: torch.device
    dtype: torch.dtype
    peak_flops: float
    memory_method: str
    compiled: bool
    worker_mem: dict = field(default_factory=dict)
    sdpa_note: Optional[str] = None  # a known SDPA math fallback (backend.sdpa_fallback)


def empty_row(mode: str, B: int, T: int, status: str, reason: Optional[str] = None) -> dict:
    row = {"mode": mode, "batch_size": B, "seq_len": T, "status": status, "median_ms": None, "p10_ms": None,
           "p90_ms": None, "repeats": 0, "tokens_per_s": None, "peak_mem_bytes": None, "mfu": None}
    if reason:
        row["reason"] = reason
    return row


def skip_reason(cfg: Any, mode: str, device: torch.device) -> Optional[str]:
    kernel = KERNELS.get(cfg.attn.impl)
    if mode == "train_step" and device.type not in kernel.backward_devices:
        return f"attn.impl={cfg.attn.impl} has no backward on {device.type}"
    return None


def timed_row(ctx: BenchContext, mode: str, B: int, T: int, step: Step, timing: Timing) -> dict:
    call_s = timing.median_ms / 1e3
    per = step.per_call  # decode: a sample covers `per` generated tokens
    row = empty_row(mode, B, T, "ok")
    row.update(median_ms=timing.median_ms / per, p10_ms=timing.p10_ms / per, p90_ms=timing.p90_ms / per,
               repeats=timing.repeats, tokens_per_s=step.tokens / call_s,
               mfu=step.flops / call_s / ctx.peak_flops, flops=step.flops)
    if mode == "decode":
        row["decode_tokens"] = per
    if ctx.compiled:
        row["compile_s"] = max(timing.first_ms - timing.median_ms, 0.0) / 1e3
    return row


def bench_point(ctx: BenchContext, mode: str, B: int, T: int) -> dict:
    spec = ctx.spec
    cfg = spec.cfg
    reason = skip_reason(cfg, mode, ctx.device)
    if reason:
        return empty_row(mode, B, T, "skipped", reason)
    step = probe = None
    try:
        step = make_step(mode, spec, ctx.runner, B, T, ctx.device, ctx.dtype)
        probe = backend_probe(cfg, ctx.compiled)

        def first() -> None:
            with probe or contextlib.nullcontext():
                step.fn()

        timing = time_call(step.fn, ctx.device, int(cfg.bench.warmup), int(cfg.bench.repeats), first=first)
        row = timed_row(ctx, mode, B, T, step, timing)
        row["sdpa_backend"] = probe.backend if probe else (None if KERNELS.get(cfg.attn.impl).compiles_itself
                                                            else "unknown (compiled)")
        if ctx.sdpa_note:
            row["sdpa_note"] = ctx.sdpa_note
        if ctx.memory_method == "cuda":
            row.update(reading(cuda_peak(step.fn, ctx.device), "cuda"))
        merge_worker_memory(row, ctx.worker_mem.get((mode, B, T)))
        return row
    except Exception as exc:  # one point must not lose the grid
        oom = dev.is_oom(exc)
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        (log.warning if oom else log.exception)("bench %s B=%d T=%d: %s", mode, B, T, msg)
        return empty_row(mode, B, T, "oom" if oom else "failed", msg)
    finally:
        step = probe = None
        gc.collect()
        dev.empty_cache(ctx.device)


def backend_probe(cfg: Any, compiled: bool) -> Optional[BackendProbe]:
    """A probe for the first call, except where its dispatch mode would break torch.compile:
    compiled models, and flex (which compiles its attention even in eager mode)."""
    return None if compiled or KERNELS.get(cfg.attn.impl).compiles_itself else BackendProbe()


def merge_worker_memory(row: dict, mem: Optional[dict]) -> None:
    if not mem:
        return
    if "peak_mem_bytes" in mem:
        row.update(reading(mem["peak_mem_bytes"], "subprocess"))
    else:  # the worker failed where timing succeeded (e.g. the extra RSS did not fit)
        row["mem_error"] = mem.get("error")


def run_bench(cfg: Any, model: nn.Module, device: torch.device, dtype: torch.dtype) -> tuple[list[dict], dict]:
    """Every (mode, seq_len) point of `bench`; `cfg` is the job's resolved spec (or a config, resolved here)."""
    t0 = time.perf_counter()
    spec = as_spec(cfg)
    cfg = spec.cfg  # the read-only copy: its model.vocab_size is the resolved one (the memory worker rebuilds from it)
    b = cfg.bench
    method = resolve_method(b.memory, device)
    peak, source = peak_flops(b, device, dtype)
    model.to(device)
    points = [(m, int(b.batch_size), int(t)) for m in b.modes for t in b.seq_lens]
    ctx = BenchContext(spec, model, device, dtype, peak, method, bool(cfg.device.compile))
    ctx.sdpa_note = sdpa_fallback_for(spec, device, dtype)
    if ctx.sdpa_note:
        log.warning("%s", ctx.sdpa_note)
    if method == "subprocess":  # before timing: the worker must not compete with it for cores
        todo = [p for p in points if not skip_reason(cfg, p[0], device)]
        ctx.worker_mem = measure_in_worker(cfg, todo, torch.get_num_threads()) if todo else {}
    if ctx.compiled:
        ctx.runner = torch.compile(model)
    was_training = model.training
    snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()} if "train_step" in b.modes else None
    try:
        rows = []
        for p in points:
            rows.append(bench_point(ctx, *p))
            log.info("bench %s", {k: rows[-1][k] for k in ("mode", "seq_len", "status", "median_ms")})
    finally:
        if snapshot is not None:  # the train_step rows moved the weights; training starts from the built model
            model.load_state_dict(snapshot)
            model.zero_grad(set_to_none=True)
        model.train(was_training)
    backends = sorted({r["sdpa_backend"] for r in rows if r.get("sdpa_backend")})
    env = {"peak_flops": peak, "peak_flops_source": source, "memory_method": method,
           "sdpa_backend": "+".join(backends) if backends else None, "compile": ctx.compiled,
           "timer": "timeit fixed count (warm-up excluded)", "bench_s": time.perf_counter() - t0}
    if ctx.sdpa_note:
        env["sdpa_note"] = ctx.sdpa_note
    return rows, env
