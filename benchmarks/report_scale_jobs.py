"""`python -m benchmarks.report_scale --jobs N --steps S`: fabricate N jobs and time the report's paths.

See report_scale.py for what each row means. Each report runs in its own process so that its peak
resident memory (wait4's ru_maxrss) is its own.
"""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from attnbench.track.wandb_reader import CHUNK, FULL, find_run_files, frame, iter_payloads
from benchmarks.report_scale import PEAK_MB, TARGETS, _job_dir, _source, perturbed, real_job, remove

ATTNS = ("mha", "gqa", "mqa", "local")


@dataclass
class Timing:
    wall_s: float
    cpu_s: float
    peak_mb: float
    rc: int


def jsonl_templates(src: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The source metrics.jsonl as one %-template per row, with its float train and val losses as %r slots
    (in that order), and those losses (NaN where a row has no such slot)."""
    templates, train, val = [], [], []
    for line in src.read_text().splitlines():
        row = json.loads(line)
        slot = {k: isinstance(row.get(k), float) for k in ("train_loss", "val_loss")}
        marked = {k: (f"@{k}@" if slot.get(k) else x) for k, x in row.items()}
        text = json.dumps(marked).replace("%", "%%")
        for k in slot:
            text = text.replace(f'"@{k}@"', "%r")
        templates.append(text + "\n")
        train.append(row["train_loss"] if slot["train_loss"] else math.nan)
        val.append(row["val_loss"] if slot["val_loss"] else math.nan)
    return templates, np.array(train), np.array(val)


def jsonl_text(templates: list[str], train: np.ndarray, val: np.ndarray) -> str:
    """One job's metrics.jsonl: each row's template filled with its (perturbed) losses."""
    return "".join(tpl % tuple(x for x in pair if not math.isnan(x))
                   for tpl, pair in zip(templates, zip(train.tolist(), val.tolist())))


@dataclass
class WandbTemplate:
    """One variant's W&B run file, framed once; each job gets a copy with its own run id patched in."""

    folder: str  # offline-run-<stamp>-<run id> of the source
    data: bytes  # the framed file
    at: int  # offset of the run record's chunk (a FULL chunk: the run record is small and comes early)
    payload: bytes  # the run record
    run_id: str

    def for_job(self, run_id: str) -> bytes:
        assert len(run_id) == len(self.run_id), "a run id of another length would move every later chunk"
        new = self.payload.replace(self.run_id.encode(), run_id.encode())
        head = CHUNK.pack(zlib.crc32(bytes([FULL]) + new), len(new), FULL)
        return b"".join([self.data[:self.at], head, new, self.data[self.at + CHUNK.size + len(new):]])


def wandb_template(src_dir: Path, attn: str, group: str) -> Optional[WandbTemplate]:
    """The source's latest .wandb file as variant `attn` (config attn.name) in W&B group `group`."""
    from wandb.proto import wandb_internal_pb2 as pb

    files = find_run_files(src_dir)
    if not files:
        return None
    payloads = list(iter_payloads(files[-1].read_bytes()))
    for i, p in enumerate(payloads):
        rec = pb.Record()
        rec.ParseFromString(p)
        if rec.WhichOneof("record_type") != "run":
            continue
        rec.run.run_group = group
        for item in rec.run.config.update:
            if (item.key or ".".join(item.nested_key)) == "attn.name":
                item.value_json = json.dumps(attn)
        payloads[i] = rec.SerializeToString()
        data = frame(payloads)
        at = data.find(payloads[i]) - CHUNK.size
        assert CHUNK.unpack_from(data, at)[2] == FULL
        return WandbTemplate(files[-1].parent.name, data, at, payloads[i], rec.run.run_id)
    return None


def write_wandb_run(job: Path, tpl: WandbTemplate, n: int) -> None:
    run_id = f"{n:0{len(tpl.run_id)}d}"[-len(tpl.run_id):]
    stamp = tpl.folder.split("-")[-2]
    d = job / "wandb" / f"offline-run-{stamp}-{run_id}"
    d.mkdir(parents=True)
    (d / f"run-{run_id}.wandb").write_bytes(tpl.for_job(run_id))


def fabricate_sweep(source: Path, out: Path, jobs: int, variants: int) -> int:
    """`jobs` job dirs under `out`: `variants` variants (attn x train.lr) x jobs/variants seeds."""
    src_dir, base = _source(source)
    templates, train, val = jsonl_templates(src_dir / "metrics.jsonl")
    rng, noise = random.Random(0), np.random.default_rng(0)
    seeds = math.ceil(jobs / variants)
    n = 0
    for vi in range(variants):
        attn = ATTNS[vi % len(ATTNS)]
        wandb = wandb_template(src_dir, attn, group=out.name)
        for seed in range(seeds):
            if n == jobs:
                break
            res, shift = perturbed(base, attn, seed, vi, rng)
            res["config"].setdefault("train", {})["lr"] = 1e-3 * (1 + vi // len(ATTNS))  # 5 lrs x 4 attns
            d = _job_dir(out, n, attn, seed, res)
            (d / ".hydra" / "overrides.yaml").write_text(f"- attn={attn}\n- train.lr={res['config']['train']['lr']}\n"
                                                         f"- seed={seed}\n")
            eps = noise.normal(0, 0.01, len(train))
            (d / "metrics.jsonl").write_text(jsonl_text(templates, train + shift + eps, val + shift + eps))
            if wandb:
                write_wandb_run(d, wandb, n)
            n += 1
    (out / "multirun.yaml").write_text("hydra: {}\n")
    return n


def timed(cmd: list[str], env: dict, cwd: Optional[Path] = None) -> Timing:
    """Run `cmd`; its wall time, CPU time (user + system) and peak RSS, from wait4."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        print(f"  {' '.join(cmd[2:4])}... exited {proc.returncode}: {err.strip()[-500:]}")
    return Timing(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode)


def _report(sweep: Path, code: Optional[Path] = None, dashboard: bool = False) -> Timing:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    if code is not None:
        env["PYTHONPATH"] = str(code) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "attnbench.report", str(sweep), "--baseline", "attn=mha", "train.lr=0.001"]
    # `python -m` imports from the working directory first: run another checkout from inside it
    return timed(cmd + (["--wandb-dashboard"] if dashboard else []), env, cwd=code)


def _row(name: str, t: Timing, target: Optional[float], extra: str = "") -> str:
    ok = "" if target is None else ("met" if t.wall_s <= target and t.peak_mb <= PEAK_MB and not t.rc else "MISSED")
    goal = f"<= {target:g} s" if target is not None else ""
    return f"{name:<44} {t.wall_s:8.1f} {t.cpu_s:8.1f} {t.peak_mb:9.0f}  {goal:<9} {ok} {extra}"


def run_scale(args) -> int:
    base = Path(args.dir or tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="report_scale.", dir=base))
    try:
        source = args.source
        if source is None:
            print(f"running one real job ({args.steps} steps, W&B offline) ...", flush=True)
            source = real_job(work / "real", steps=args.steps, wandb=True)
        sweep = work / "sweep"
        t0 = time.perf_counter()
        n = fabricate_sweep(source, sweep, args.jobs, args.variants)
        size = sum(f.stat().st_size for f in sweep.rglob("*") if f.is_file()) / 2 ** 30
        print(f"fabricated {n} jobs ({args.variants} variants) in {time.perf_counter() - t0:.0f} s, {size:.1f} GiB "
              f"-> {sweep}", flush=True)
        return _measure(sweep, n, args)
    finally:
        if not args.keep:
            remove(work)
        else:
            print(f"kept {work}")


def _measure(sweep: Path, n: int, args) -> int:
    rows, results = [], {}
    print(f"{'report over ' + str(n) + ' jobs':<44} {'wall s':>8} {'CPU s':>8} {'peak MB':>9}  target", flush=True)

    def go(name: str, t: Timing, target: Optional[float], extra: str = "") -> Timing:
        results[name] = t
        rows.append(_row(name, t, target, extra))
        print(rows[-1], flush=True)
        return t

    if args.baseline_src:
        go("baseline checkout (A)", _report(sweep, args.baseline_src), None)
    first = go("JSON path: first report (converts, caches)", _report(sweep), TARGETS["JSON path"])
    col = go("columnar: re-run on the unchanged sweep (B)", _report(sweep), TARGETS["columnar"])
    col2 = go("columnar: again (B)", _report(sweep), TARGETS["columnar"])
    if args.baseline_src:
        a2 = go("baseline checkout (A)", _report(sweep, args.baseline_src), None)
        a = (results.get("baseline checkout (A)", a2).wall_s + a2.wall_s) / 2
        print(f"baseline / columnar wall time: {a / ((col.wall_s + col2.wall_s) / 2):.1f}x")
    if not args.no_dashboard:
        d1 = _report(sweep, dashboard=True)
        go("--wandb-dashboard, older jobs (parses .wandb)", d1, None, f"+{d1.wall_s - col.wall_s:.1f} s over columnar")
        d2 = _report(sweep, dashboard=True)
        go("--wandb-dashboard, cached keys (re-run; new jobs)", d2, None, f"+{d2.wall_s - col.wall_s:.1f} s over columnar "
           f"({'met' if d2.wall_s - col.wall_s <= 60 else 'MISSED'}: <= 60 s more)")
    return 0 if all(not t.rc for t in results.values()) and first.peak_mb <= PEAK_MB else 1
