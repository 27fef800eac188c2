"""The CUDA paths, checked on one GPU in a few minutes (budget: 5 minutes on one GPU).

    python -m benchmarks.gpu_check                    # every check on cuda
    python -m benchmarks.gpu_check --only kernels,pinned
    python -m benchmarks.gpu_check --device cpu       # a dry run of the script's own logic on CPU, not a GPU check

Checks (one row per case, PASS / FAIL / SKIP; exit 1 on any FAIL):

  kernels   every attn.impl against `manual` (same weights) in float32 and bfloat16, for MHA with
            learned positions, GQA + window + RoPE, and ALiBi: full-forward logits, and a KV-cache
            prefill + single-token decode against the full forward. Tolerance on logits: 1e-4 in
            float32, 0.05 under bf16 autocast (tests/test_kernels.py's model-level bf16 bound).
            A config that validation rejects is SKIP (with its reason).
  pinned    sdpa_math / sdpa_flash / sdpa_efficient x dtype x (MHA, GQA, window, ALiBi): each is
            either rejected up front (a ConfigError from load_config: PASS) or serves forward,
            train_step, prefill and decode, pinned, with the backend probe seeing that backend (PASS).
            Accepted, then failing at run time or served by another backend: FAIL.
  memory    CUDA peak memory of one forward as T doubles: manual materialises (T, T) scores
            (ratio per doubling -> 4, PASS if >= 3 at the largest T); flash (bf16) and
            efficient (fp32) are linear (PASS if every ratio <= 2.6).
  mfu       the bench stage on model=small (forward, train_step) in float32 and bfloat16: every
            row ok and 0 < MFU < 1 against the probed peak (attnbench/bench/peak.py).
  flex      attn.impl=flex (compiled on CUDA) forward + backward against manual: loss, and every
            gradient within 1e-3 (fp32) / 5e-2 (bf16) of manual's, relative to its largest entry.
  sweep     `python -m attnbench -m attn=mha,gqa device=cuda ...` in a subprocess: exit 0, two
            results.json with status ok on cuda, and the sweep's summary.csv.

On a machine without CUDA (and without --device cpu) it exits 2 with one line.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ("kernels", "pinned", "memory", "mfu", "flex", "sweep")
DTYPES = ("float32", "bfloat16")
LOGIT_TOL = {"float32": 1e-4, "bfloat16": 0.05}
GRAD_TOL = {"float32": 1e-3, "bfloat16": 5e-2}
LOSS_TOL = {"float32": 1e-4, "bfloat16": 2e-2}
PINNED = {"sdpa_math": "math", "sdpa_flash": "flash", "sdpa_efficient": "efficient"}
# A tiny model; T = 128 is one FlexAttention block, and longer than every window below.
TINY = ["model.d_model=64", "model.n_layers=2", "attn.n_heads=4", "model.vocab_size=256", "model.context_length=512",
        "logger=none", "stages=[bench]", "bench.batch_size=2", "bench.seq_lens=[128]", "bench.decode_tokens=2"]
VARIANTS = {
    "mha": ["pos=learned"],
    "gqa+window+rope": ["attn=gqa", "attn.n_kv_heads=2", "attn.window=48", "pos=rope"],
    "alibi": ["pos=alibi"],
}
PINNED_VARIANTS = {
    "mha": ["pos=rope"],
    "gqa": ["attn=gqa", "attn.n_kv_heads=2", "pos=rope"],
    "window": ["attn=local", "attn.window=32", "pos=rope"],
    "alibi": ["pos=alibi"],
}
MEMORY_T = (1024, 2048, 4096, 8192)
QUADRATIC_MIN, LINEAR_MAX = 3.0, 2.6


@dataclass
class Result:
    check: str
    case: str
    status: str  # PASS | FAIL | SKIP
    detail: str = ""


# ----------------------------------------------------------------------------- plumbing
def cfg_for(device: str, dtype: str, *overrides: str) -> Any:
    from attnbench import load_config

    return load_config([*TINY, f"device={device}", f"device.dtype={dtype}", *overrides])


def build(cfg: Any, device: torch.device, state: Optional[dict] = None) -> torch.nn.Module:
    from attnbench import build_model

    model = build_model(cfg)
    if state is not None:  # every kernel has the same parameter shapes: the same weights, exactly
        model.load_state_dict(state)
    return model.to(device).eval()


def tokens(cfg: Any, B: int, T: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, cfg.model.vocab_size, (B, T), generator=g).to(device)  # (B, T)


def autocast(device: torch.device, dtype: str):
    from attnbench import device as dev

    return dev.autocast(device, dev.DTYPES[dtype])


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- kernels
def logits_full_and_cached(model: torch.nn.Module, idx: torch.Tensor, device: torch.device, dtype: str,
                           cached: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Full-forward logits, and (cached=True) the same positions via prefill T-2 + two decode steps,
    the pattern the bench times (a prefill from 0, then one token at a time)."""
    from attnbench import device as dev

    B, T = idx.shape
    with torch.inference_mode(), autocast(device, dtype):
        full = model(idx).float()  # (B, T, V)
        if not cached:
            return full, None
        cache = model.init_cache(B, T, device, dev.DTYPES[dtype])
        parts = [model(idx[:, : T - 2], cache), model(idx[:, T - 2 : T - 1], cache), model(idx[:, T - 1 :], cache)]
    return full, torch.cat([p.float() for p in parts], dim=1)


def check_kernels(device: torch.device, kernels: list[str]) -> Iterator[Result]:
    from attnbench import ConfigError
    from attnbench.registry import KERNELS

    for variant, extra in VARIANTS.items():
        extra = [*extra, "bench.modes=[forward]"]  # the cache is tested where the kernel has one (not torch_mha)
        for dtype in DTYPES:
            ref_cfg = cfg_for(device.type, dtype, *extra, "attn.impl=manual")
            ref_model = build(ref_cfg, device)
            state = {k: v.detach().clone() for k, v in ref_model.state_dict().items()}
            idx = tokens(ref_cfg, 2, 128, device)
            ref, _ = logits_full_and_cached(ref_model, idx, device, dtype, cached=False)
            tol = LOGIT_TOL[dtype]
            for impl in kernels:
                case = f"{impl} {variant} {dtype}"
                try:
                    cfg = cfg_for(device.type, dtype, *extra, f"attn.impl={impl}")
                except ConfigError as exc:
                    yield Result("kernels", case, "SKIP", f"rejected by config: {exc}")
                    continue
                try:
                    # flex compiles one graph per shape on CUDA (prefill + 2 decode steps = 3 more): its cache
                    # is compared in float32 only, to keep the whole script within its 5 minutes.
                    has_cache = KERNELS.get(impl).supports_cache and not (impl == "flex" and dtype != "float32")
                    full, cached = logits_full_and_cached(build(cfg, device, state), idx, device, dtype, has_cache)
                    d_full = max_diff(full, ref)
                    d_cache = max_diff(cached, ref) if cached is not None else 0.0
                    ok = d_full <= tol and d_cache <= tol
                    cache_txt = (f"cached {d_cache:.1e}" if cached is not None else
                                 "no KV cache" if not KERNELS.get(impl).supports_cache else "cache: float32 only")
                    yield Result("kernels", case, "PASS" if ok else "FAIL",
                                 f"max|logits - manual| full {d_full:.1e}, {cache_txt} (tol {tol:g})")
                except Exception as exc:
                    yield Result("kernels", case, "FAIL", one_line(exc))
                free(device)


# ----------------------------------------------------------------------------- pinned
def check_pinned(device: torch.device) -> Iterator[Result]:
    from attnbench import ConfigError
    from attnbench import device as dev
    from attnbench.bench.backend import BackendProbe
    from attnbench.bench.steps import make_step

    modes = ["forward", "train_step", "prefill", "decode"]
    for impl, label in PINNED.items():
        for dtype in DTYPES:
            for variant, extra in PINNED_VARIANTS.items():
                case = f"{impl} {variant} {dtype}"
                try:
                    cfg = cfg_for(device.type, dtype, *extra, f"attn.impl={impl}", f"bench.modes=[{','.join(modes)}]")
                except ConfigError as exc:
                    yield Result("pinned", case, "PASS", f"rejected up front: {exc}")
                    continue
                model, seen = build(cfg, device), {}
                try:
                    for mode in modes:
                        step = make_step(mode, cfg, model, 2, 64, device, dev.DTYPES[dtype])
                        with BackendProbe() as probe:
                            step.fn()
                        seen[mode] = probe.backend
                except Exception as exc:
                    yield Result("pinned", case, "FAIL", f"accepted, then failed in {mode}: {one_line(exc)}")
                    continue
                finally:
                    free(device)
                wrong = {m: b for m, b in seen.items() if b != label}
                yield Result("pinned", case, "FAIL" if wrong else "PASS",
                             f"served by another backend: {wrong}" if wrong else f"serves all 4 modes with {label}")


# ----------------------------------------------------------------------------- memory
def doubling_ratios(peaks: list[int]) -> list[float]:
    return [b / a for a, b in zip(peaks, peaks[1:])]


def memory_verdict(impl: str, ratios: list[float]) -> bool:
    """manual: quadratic (the last doubling's ratio >= 3); every other kernel: linear (each ratio <= 2.6)."""
    if impl == "manual":
        return ratios[-1] >= QUADRATIC_MIN
    return max(ratios) <= LINEAR_MAX


def check_memory(device: torch.device) -> Iterator[Result]:
    if device.type != "cuda":
        yield Result("memory", "all", "SKIP", "needs the CUDA peak-memory counter")
        return
    from attnbench import device as dev
    from attnbench.bench.memory import cuda_peak
    from attnbench.bench.steps import make_step

    model_kw = ["model.d_model=512", "model.n_layers=1", "attn.n_heads=8", "pos=rope", "bench.modes=[forward]"]
    for impl, dtype in (("manual", "bfloat16"), ("sdpa_flash", "bfloat16"), ("manual", "float32"),
                        ("sdpa_efficient", "float32")):
        case = f"{impl} {dtype}"
        try:
            cfg = cfg_for("cuda", dtype, *model_kw, f"attn.impl={impl}")
            model, peaks = build(cfg, device), []
            for T in MEMORY_T:
                step = make_step("forward", cfg, model, 1, T, device, dev.DTYPES[dtype])
                step.fn()  # warm-up: allocator and kernel selection outside the measurement
                peaks.append(cuda_peak(step.fn, device))
                del step
                free(device)
            ratios = doubling_ratios(peaks)
            mb = ", ".join(f"T={t}: {p / 2**20:.0f} MB" for t, p in zip(MEMORY_T, peaks))
            yield Result("memory", case, "PASS" if memory_verdict(impl, ratios) else "FAIL",
                         f"{mb}; ratio per doubling {', '.join(f'{r:.2f}' for r in ratios)} "
                         f"({'quadratic: last >= 3' if impl == 'manual' else 'linear: all <= 2.6'})")
        except Exception as exc:
            yield Result("memory", case, "FAIL", one_line(exc))
        free(device)


# ----------------------------------------------------------------------------- mfu
def check_mfu(device: torch.device) -> Iterator[Result]:
    from attnbench import build_model, load_config
    from attnbench import device as dev
    from attnbench.bench.suite import run_bench

    for dtype in DTYPES:
        try:
            cfg = load_config(["model=small", "logger=none", "stages=[bench]", f"device={device.type}",
                               f"device.dtype={dtype}", "bench.modes=[forward,train_step]", "bench.seq_lens=[512]",
                               "bench.batch_size=8", "bench.memory=none", "bench.warmup=2", "bench.repeats=5"])
            rows, env = run_bench(cfg, build_model(cfg), device, dev.DTYPES[dtype])
            for r in rows:
                mfu = r.get("mfu")
                ok = r["status"] == "ok" and mfu is not None and 0 < mfu < 1
                yield Result("mfu", f"model=small {r['mode']} {dtype}", "PASS" if ok else "FAIL",
                             f"status {r['status']}, MFU {mfu if mfu is None else f'{mfu:.3f}'} against "
                             f"{env['peak_flops'] / 1e12:.3g} TFLOP/s ({env['peak_flops_source']})"
                             + (f"; {r.get('reason')}" if r.get("reason") else ""))
        except Exception as exc:
            yield Result("mfu", f"model=small {dtype}", "FAIL", one_line(exc))
        free(device)


# ----------------------------------------------------------------------------- flex
def loss_and_grads(model: torch.nn.Module, idx: torch.Tensor, device: torch.device, dtype: str
                   ) -> tuple[float, dict[str, torch.Tensor]]:
    model.train()
    model.zero_grad(set_to_none=True)
    with autocast(device, dtype):
        logits = model(idx[:, :-1])  # (B, T-1, V)
    loss = F.cross_entropy(logits.float().flatten(0, 1), idx[:, 1:].flatten())
    loss.backward()
    return loss.item(), {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}


def grad_error(grads: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[float, str]:
    """The worst parameter's max |g - g_ref| / max |g_ref|, and its name."""
    worst, name = 0.0, ""
    for n, g in ref.items():
        err = (grads[n] - g).abs().max().item() / max(g.abs().max().item(), 1e-12)
        if err > worst:
            worst, name = err, n
    return worst, name


def check_flex(device: torch.device) -> Iterator[Result]:
    from attnbench import ConfigError

    if device.type != "cuda":
        yield Result("flex", "all", "SKIP", "FlexAttention has no backward on cpu")
        return
    # Each case compiles forward + backward (tens of seconds): GQA + window + RoPE in both dtypes, ALiBi in bf16.
    for variant, dtype in (("gqa+window+rope", "float32"), ("gqa+window+rope", "bfloat16"), ("alibi", "bfloat16")):
        case = f"flex {variant} {dtype}"
        try:
            extra = VARIANTS[variant]
            ref_cfg = cfg_for("cuda", dtype, *extra, "attn.impl=manual")
            ref_model = build(ref_cfg, device)
            state = {k: v.detach().clone() for k, v in ref_model.state_dict().items()}
            idx = tokens(ref_cfg, 2, 129, device)  # 128 positions after the shift
            ref_loss, ref_grads = loss_and_grads(ref_model, idx, device, dtype)
            try:
                cfg = cfg_for("cuda", dtype, *extra, "attn.impl=flex")
            except ConfigError as exc:
                yield Result("flex", case, "FAIL", f"rejected by config: {exc}")
                continue
            model = build(cfg, device, state)
            t0 = time.perf_counter()
            loss, grads = loss_and_grads(model, idx, device, dtype)  # the first call compiles
            torch.cuda.synchronize()
            first_s = time.perf_counter() - t0
            err, worst = grad_error(grads, ref_grads)
            ok = abs(loss - ref_loss) <= LOSS_TOL[dtype] and err <= GRAD_TOL[dtype]
            yield Result("flex", case, "PASS" if ok else "FAIL",
                         f"loss {loss:.5f} vs manual {ref_loss:.5f}; worst grad rel err {err:.1e} ({worst}); "
                         f"first call (compile) {first_s:.1f} s")
        except Exception as exc:
            yield Result("flex", case, "FAIL", one_line(exc))
        free(device)


# ----------------------------------------------------------------------------- sweep
def sweep_command(device: str) -> list[str]:
    return [sys.executable, "-m", "attnbench", "-m", "attn=mha,gqa", f"device={device}", "stages=[bench]",
            "bench=quick", "bench.modes=[forward,decode]", "logger=none"]


def check_sweep(device: torch.device, timeout_s: float = 240) -> Iterator[Result]:
    with tempfile.TemporaryDirectory(prefix="gpu_check_sweep_") as tmp:
        env = {**os.environ, "ATTNBENCH_RUNS": tmp}
        t0 = time.perf_counter()
        try:
            res = subprocess.run(sweep_command(device.type), cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=timeout_s)
        except subprocess.TimeoutExpired:
            yield Result("sweep", "2 jobs", "FAIL", f"timed out after {timeout_s:g} s")
            return
        results = [json.loads(p.read_text()) for p in sorted(Path(tmp).rglob("results.json"))]
        summaries = list(Path(tmp).rglob("summary.csv"))
        on_device = [r for r in results if r.get("status") == "ok" and r.get("env", {}).get("device") == device.type]
        ok = res.returncode == 0 and len(results) == 2 and len(on_device) == 2 and bool(summaries)
        tail = (res.stderr.strip().splitlines() or [""])[-1][:160]
        yield Result("sweep", "2 jobs", "PASS" if ok else "FAIL",
                     f"exit {res.returncode}, {len(on_device)}/{len(results)} results ok on {device.type}, "
                     f"summary.csv {'written' if summaries else 'missing'}, {time.perf_counter() - t0:.0f} s"
                     + ("" if ok else f"; stderr: {tail}"))


# ----------------------------------------------------------------------------- driver
def format_table(results: list[Result]) -> str:
    cols = ("check", "case", "status", "detail")
    rows = [cols] + [(r.check, r.case, r.status, r.detail) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    lines.insert(1, "-" * min(max(len(line) for line in lines), 120))
    return "\n".join(line.rstrip() for line in lines)


def exit_code(results: list[Result]) -> int:
    return 1 if any(r.status == "FAIL" for r in results) else 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    ap.add_argument("--kernels", default=None, help="comma-separated attn.impl names for the kernels check (default: all)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cpu: a dry run of the script's logic (memory and flex checks SKIP); not a GPU check")
    args = ap.parse_args(argv)
    args.only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in args.only if c not in CHECKS]
    if unknown:
        ap.error(f"--only: unknown check(s) {unknown}; choose from {list(CHECKS)}")
    return args


def run_checks(args: argparse.Namespace, emit: Callable[[str], None] = print) -> list[Result]:
    import attnbench.model  # noqa: F401  (fills the kernel registry)
    from attnbench.registry import KERNELS

    device = torch.device(args.device)
    kernels = args.kernels.split(",") if args.kernels else [k for k in KERNELS.names() if k != "manual"]
    runners: dict[str, Callable[[], Iterator[Result]]] = {
        "kernels": lambda: check_kernels(device, kernels), "pinned": lambda: check_pinned(device),
        "memory": lambda: check_memory(device), "mfu": lambda: check_mfu(device),
        "flex": lambda: check_flex(device), "sweep": lambda: check_sweep(device),
    }
    results: list[Result] = []
    for name in args.only:
        t0 = time.perf_counter()
        try:
            for r in runners[name]():
                results.append(r)
                emit(f"{r.status:4}  {r.check:7}  {r.case}: {r.detail}")
        except Exception as exc:  # one broken check must not hide the others
            results.append(Result(name, "setup", "FAIL", one_line(exc)))
            emit(f"FAIL  {name:7}  setup: {results[-1].detail}")
        emit(f"--    {name} took {time.perf_counter() - t0:.1f} s")
    return results


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: CUDA is not available on this machine (torch {torch.__version__}, "
              f"CUDA build {torch.version.cuda or 'none'}); run it on a GPU node, or --device cpu for a dry run",
              file=sys.stderr)
        return 2
    # flex compiles one graph per shape; dynamo's default limit of 8 would turn later cases eager silently.
    from torch import _dynamo

    _dynamo.config.recompile_limit = max(_dynamo.config.recompile_limit, 64)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (dry run)"
    print(f"gpu_check on {name}; torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    t0 = time.perf_counter()
    results = run_checks(args, emit=lambda s: print(s, flush=True))
    fails = sum(r.status == "FAIL" for r in results)
    print("\n" + format_table(results))
    print(f"\ngpu_check: {len(results)} cases, {fails} FAIL, "
          f"{sum(r.status == 'SKIP' for r in results)} SKIP, {time.perf_counter() - t0:.0f} s "
          f"-> {'FAIL' if fails else 'PASS'}")
    return exit_code(results)


if __name__ == "__main__":
    sys.exit(main())
