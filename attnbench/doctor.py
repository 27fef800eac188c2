"""`python -m attnbench.doctor` / `attnbench doctor`: one screen about this node, before a sweep.

    attnbench doctor [--no-compile] [--compile-timeout S] [overrides...]   e.g. device=cuda device.dtype=bfloat16

Sections: versions (torch, CUDA, cuDNN, driver), device, dtypes, SDPA backends (a tiny call per
backend, pinned with `sdpa_kernel`), FlexAttention (eager, and compiled forward + backward in a
child process bounded by --compile-timeout), peak FLOP/s (attnbench/bench/peak.py, cached),
W&B (mode, whether credentials exist; never their value) and Hydra launchers.

The overrides are composed and validated as the CLI does, so `device=cuda` on a node without CUDA
exits 2 with the CLI's one-line error before anything is printed; a device that resolves but
cannot run a matmul in `device.dtype` exits 1 with one line. This is a CLI entry point: it prints.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import warnings
from typing import Any, Callable, Optional

import torch

from . import device as dev
from .errors import ConfigError

DTYPE_NAMES = ("float32", "bfloat16", "float16")
SDPA_BACKENDS = ("MATH", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")
LAUNCHERS = (("joblib", "hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
             ("submitit", "hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"))
CREDENTIAL_ENV = ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE")
SECTIONS = ("versions", "device", "dtypes", "sdpa backends", "flex attention", "peak flop/s", "wandb",
            "hydra launchers")
DEFAULT_COMPILE_TIMEOUT_S = 180.0  # inductor's first flex compile (fwd + bwd) is tens of seconds on a GPU node


class DeviceCannotRun(Exception):
    """The chosen device resolved but cannot run even a tiny matmul in the chosen dtype."""


# ----------------------------------------------------------------------------- probes
def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:160]}"


def _probe(fn: Callable[[], Any]) -> str:
    """'ok', or 'no (<first line of the error>)'. SDPA explains a rejected backend in a warning
    (e.g. "Flash attention requires ..."), its exception only says "No viable backend": keep the warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn()
            return "ok"
        except Exception as exc:  # a probe must report, never crash the screen
            why = next((" ".join(str(w.message).split()) for w in caught), None)
            return f"no ({why[:160] if why else _first_line(exc)})"


def dtype_probe(device: torch.device, dtype: torch.dtype) -> str:
    """A tiny matmul in `dtype` and one under autocast to it (how attnbench runs bf16/fp16)."""

    def run() -> None:
        a = torch.randn(8, 8, device=device)
        (a.to(dtype) @ a.to(dtype)).sum().item()
        with dev.autocast(device, dtype):
            (a @ a).sum().item()

    return _probe(run)


def sdpa_probe(device: torch.device, dtype: torch.dtype, backend: str, variant: str = "causal") -> str:
    """One tiny SDPA call pinned to `backend`. variant: causal | mask (a boolean mask) | gqa (enable_gqa)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def run() -> None:
        q = torch.randn(1, 4, 16, 16, device=device, dtype=dtype)  # (B, H, T, D)
        kv = q[:, :2] if variant == "gqa" else q  # (B, Hkv, T, D)
        kw: dict = {"enable_gqa": True} if variant == "gqa" else {}
        if variant == "mask":
            kw["attn_mask"] = torch.ones(16, 16, dtype=torch.bool, device=device).tril()
        else:
            kw["is_causal"] = True
        with sdpa_kernel(getattr(SDPBackend, backend)):
            F.scaled_dot_product_attention(q, kv, kv, **kw)
        dev.synchronize(device)

    return _probe(run)


def flex_eager_probe(device: torch.device) -> str:
    """Eager FlexAttention (unfused: the correctness path attnbench uses on CPU without compile)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def run() -> None:
        q = torch.randn(1, 2, 128, 16, device=device)  # (B, H, T, D); 128 = one flex block
        block = create_block_mask(lambda b, h, qi, ki: ki <= qi, None, None, 128, 128, device=str(device))
        flex_attention(q, q, q, block_mask=block).sum().item()

    return _probe(run)


# Runs in a child process: a first compile can take minutes, and only a process can be stopped.
_COMPILE_CHILD = r"""
import sys, time, warnings
warnings.simplefilter("ignore")
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
device, dtype = torch.device(sys.argv[1]), getattr(torch, sys.argv[2])
backward = device.type != "cpu"  # flex has no backward on CPU (torch raises NotImplementedError)
q, k, v = (torch.randn(1, 2, 256, 16, device=device, dtype=dtype, requires_grad=backward) for _ in range(3))
block = create_block_mask(lambda b, h, qi, ki: ki <= qi, None, None, 256, 256, device=str(device))
fn = torch.compile(flex_attention, dynamic=False)
t0 = time.perf_counter()
out = fn(q, k, v, block_mask=block)
if backward:
    out.float().sum().backward()
if device.type == "cuda":
    torch.cuda.synchronize()
elapsed = time.perf_counter() - t0
ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
what = "forward + backward" if backward else "forward only (no flex backward on cpu)"
print(f"ok ({what}, first call {elapsed:.1f} s, max |diff| vs sdpa {(out.float() - ref).abs().max().item():.1e})")
"""


def flex_compile_probe(device: torch.device, dtype: torch.dtype, timeout_s: float) -> str:
    """Compiled flex forward + backward (forward only on CPU) in a child process, stopped (with its
    compile workers) after timeout_s."""
    cmd = [sys.executable, "-c", _COMPILE_CHILD, device.type, str(dtype).removeprefix("torch.")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # own process group: inductor forks compile workers
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return f"timed out after {timeout_s:g} s (raise --compile-timeout, or --no-compile to skip)"
    if proc.returncode == 0 and out.strip():
        return out.strip().splitlines()[-1]
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return f"no ({' '.join(lines[-1].split())[:200] if lines else f'exit {proc.returncode}'})"


def check_device(device: torch.device, dtype: torch.dtype, result: Optional[str] = None) -> None:
    """Raise DeviceCannotRun (one line) unless a tiny matmul runs on `device` in `dtype`."""
    result = result or dtype_probe(device, dtype)
    if result != "ok":
        name = str(dtype).removeprefix("torch.")
        raise DeviceCannotRun(f"device={device.type} cannot run device.dtype={name}: {result[4:-1]}")


# ----------------------------------------------------------------------------- facts
def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def driver_version() -> str:
    """The NVIDIA driver, from nvidia-smi (torch does not expose it)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return "n/a (no nvidia-smi)"
    try:
        res = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=15)
        return res.stdout.strip().splitlines()[0] if res.returncode == 0 and res.stdout.strip() else "n/a"
    except (OSError, subprocess.TimeoutExpired):
        return "n/a (nvidia-smi did not answer)"


def versions() -> list[tuple[str, str]]:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return [
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("CUDA (torch build)", torch.version.cuda or "none (CPU build)"),
        ("cuDNN", str(cudnn) if cudnn else "n/a"),
        ("NVIDIA driver", driver_version()),
        ("attnbench", _version("attnbench") or "not installed (source checkout)"),
        ("hydra-core", _version("hydra-core") or "missing"),
        ("wandb", _version("wandb") or "missing"),
    ]


def device_facts(device: torch.device) -> list[tuple[str, str]]:
    rows = [("device", device.type), ("name", dev.device_name(device)), ("torch threads", str(torch.get_num_threads()))]
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        rows += [("visible GPUs", str(torch.cuda.device_count())),
                 ("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)")),
                 ("compute capability", f"{props.major}.{props.minor}"),
                 ("memory", f"{props.total_memory / 2**30:.1f} GiB"),
                 ("bf16 supported (torch)", str(torch.cuda.is_bf16_supported()))]
    if os.environ.get("SLURM_JOB_ID"):
        rows.append(("SLURM job", os.environ["SLURM_JOB_ID"]))
    return rows


def wandb_facts(cfg: Any) -> list[tuple[str, str]]:
    """Mode and whether credentials exist. Only the names of set variables are shown, never values."""
    from .track.wandb_sink import has_credentials, resolve_mode

    mode = resolve_mode(cfg)
    found = has_credentials()
    named = [name for name in CREDENTIAL_ENV if os.environ.get(name)]
    where = f"yes ({', '.join(named)} set)" if named else ("yes (wandb login / .netrc)" if found else "no")
    rows = [("mode", mode), ("credentials", where)]
    if mode == "online" and not found:
        rows.append(("note", "online without credentials: attnbench logs offline (sync later with `wandb sync`)"))
    return rows


def launcher_facts() -> list[tuple[str, str]]:
    rows = []
    for name, module, dist in LAUNCHERS:
        try:
            present = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            present = False
        rows.append((f"hydra/launcher={name}", f"installed ({dist} {_version(dist)})" if present else "not installed"))
    rows.append(("sbatch on PATH", shutil.which("sbatch") or "no"))
    return rows


# ----------------------------------------------------------------------------- screen
def _section(title: str, rows: list[tuple[str, str]]) -> str:
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join([f"== {title} =="] + [f"  {k.ljust(width)}  {v}" for k, v in rows])


def _table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([f"== {title} ==", fmt(header), *map(fmt, rows)])


def _short(result: str) -> str:
    return "ok" if result == "ok" else "no"


def sdpa_table(device: torch.device, dtype: torch.dtype) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows, notes): each backend pinned, causal in each dtype; mask and GQA in the chosen dtype."""
    chosen = str(dtype).removeprefix("torch.")
    header = ["backend", *DTYPE_NAMES, f"bool mask ({chosen})", f"enable_gqa ({chosen})"]
    rows, notes = [], []
    for backend in SDPA_BACKENDS:
        row = [backend.lower()]
        for name in DTYPE_NAMES:
            row.append(_short(sdpa_probe(device, dev.DTYPES[name], backend)))
        for variant in ("mask", "gqa"):
            row.append(_short(sdpa_probe(device, dtype, backend, variant)))
        rows.append(row)
        causal = sdpa_probe(device, dtype, backend)
        if causal != "ok":
            notes.append(f"{backend.lower()} ({chosen}, causal): {causal[4:-1]}")
    return header, rows, notes


def report(cfg: Any, device: torch.device, dtype: torch.dtype, compile_timeout_s: Optional[float],
           emit: Callable[[str], None] = print) -> None:
    """Print every section; raises DeviceCannotRun if the chosen device/dtype fails its matmul."""
    from .bench.peak import PROBE_N, peak_flops

    emit(_section("versions", versions()))
    emit(_section("device", device_facts(device)))
    checks = {name: dtype_probe(device, dev.DTYPES[name]) for name in DTYPE_NAMES}
    chosen = str(dtype).removeprefix("torch.")
    emit(_section("dtypes", [(f"{n}{' (chosen)' if n == chosen else ''}", r) for n, r in checks.items()]))
    check_device(device, dtype, checks[chosen])
    header, rows, notes = sdpa_table(device, dtype)
    table = _table("sdpa backends", header, rows)
    emit(table + ("\n" + "\n".join(f"  {n}" for n in notes) if notes else ""))
    if compile_timeout_s is None:
        compiled = "skipped (--no-compile)"
    else:
        compiled = flex_compile_probe(device, dtype, compile_timeout_s)
    emit(_section("flex attention", [("eager forward (float32)", flex_eager_probe(device)),
                                     (f"compiled ({chosen})", compiled)]))
    t0 = time.perf_counter()
    value, source = peak_flops(cfg.bench, device, dtype)
    n = PROBE_N.get(device.type, 2048)
    how = {"probe": f"measured now, {n}x{n} matmul, {time.perf_counter() - t0:.1f} s",
           "cache": "cached probe", "config": "bench.peak_flops"}[source]
    emit(_section("peak flop/s", [(f"matmul {chosen}", f"{value / 1e12:.3f} TFLOP/s ({how})")]))
    emit(_section("wandb", wandb_facts(cfg)))
    emit(_section("hydra launchers", launcher_facts()))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="attnbench doctor", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="config overrides as for the CLI, e.g. device=cuda device.dtype=bfloat16")
    p.add_argument("--no-compile", action="store_true", help="skip the compiled FlexAttention probe")
    p.add_argument("--compile-timeout", type=float, default=DEFAULT_COMPILE_TIMEOUT_S, metavar="S",
                   help=f"seconds before the compiled flex probe is stopped (default {DEFAULT_COMPILE_TIMEOUT_S:g})")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from .config import load_config

    try:
        cfg = load_config(args.overrides)
        device = dev.setup(cfg.device)
    except ConfigError as exc:
        print(f"attnbench doctor: error: {exc}", file=sys.stderr)
        return 2
    dtype = dev.resolve_dtype(cfg.device)
    try:
        check_device(device, dtype)  # before the screen: a device that cannot run gives one line only
        report(cfg, device, dtype, None if args.no_compile else args.compile_timeout,
               emit=lambda s: print(s, flush=True))
    except DeviceCannotRun as exc:
        print(f"attnbench doctor: error: {exc}", file=sys.stderr)
        return 1
    print(f"doctor: device={device.type} dtype={str(dtype).removeprefix('torch.')} can run", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
