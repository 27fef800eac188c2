"""The comparison report at scale, over a sweep fabricated from one real job.

    python -m benchmarks.report_scale --jobs 10000 --steps 3000    # the targets of issue 28 (docs/report.md)
    python -m benchmarks.report_scale --jobs 500 --steps 3000 --baseline-src /path/to/main/checkout
    python -m benchmarks.report_scale --source <job dir> --seeds 100    # 4 variants x 100 seeds, legends

With `--jobs`, one real job (bench at T=64/128, `--steps` training steps, its W&B run offline)
is run first unless `--source` names one, then copied into `--variants` variants x
jobs/variants seeds as a Hydra sweep (<n>/.hydra/overrides.yaml): each copy has the real
job's results.json with its variant, seed, losses, throughput and latencies perturbed, the
real metrics.jsonl rows with seeded noise on the losses (as a job from before metrics.arrow
leaves them), and the real .wandb file under a run id of its own. The report then runs as
`python -m attnbench.report SWEEP --baseline attn=mha train.lr=0.001` in a subprocess per row, each timed
(wall, CPU of the process) with its peak resident memory (wait4's ru_maxrss):

    JSON path      the first report: every job's metrics.jsonl parsed and cached as metrics.arrow
    columnar       the same report again on the unchanged sweep: metrics.arrow read, columns only
    dashboard      the same with --wandb-dashboard (its time beyond the columnar row is the target)
    baseline       (with --baseline-src) another checkout's report on the same sweep, e.g. main's,
                   run before the JSON path and again after the columnar rows (A B B A)

CPU time is printed next to wall time: on a shared machine the wall time also measures the other
load. Fabricating 10,000 jobs x 3,000 steps writes about 21 GB (metrics.jsonl 4.5 GB, .wandb files
15 GB, metrics.arrow 1.7 GB once converted): check `df -h` first; the sweep is deleted at the end
unless --keep.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from attnbench.report.runs import find_results

VARIANTS = ("mha", "gqa", "mqa", "local")
TARGETS = {"JSON path": 60.0, "columnar": 10.0}  # seconds (issue 28); the dashboard: 60 s beyond columnar
PEAK_MB = 2048


def real_job(where: Path, steps: int = 20, wandb: bool = False) -> Path:
    """One tiny real job (bench at T=64 and 128, `steps` training steps) into `where`."""
    cmd = [sys.executable, "-m", "attnbench", "attn=mha", "bench=quick", "bench.modes=[forward,train_step]",
           f"train.steps={steps}", f"train.eval_every={max(10, steps // 30)}", "train.batch_size=4",
           "train.eval_batches=1", f"logger={'wandb' if wandb else 'none'}", "device=cpu", "device.threads=1",
           f"hydra.run.dir={where}"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return where


def _source(source: Path) -> tuple[Path, dict]:
    res_path = next(p for p in find_results([source]) if json.loads(p.read_text()).get("status") == "ok")
    return res_path.parent, json.loads(res_path.read_text())


def perturbed(base: dict, attn: str, seed: int, vi: int, rng: random.Random) -> tuple[dict, float]:
    """The source's results.json as variant `attn`, seed `seed`; returns it and its loss shift."""
    res = copy.deepcopy(base)
    res["config"]["attn"]["name"] = attn
    res["config"]["seed"] = seed
    res["variant"] = "-".join([attn, *str(base["variant"]).split("-")[1:]])
    shift, speed = 0.03 * vi + rng.gauss(0, 0.02), 1 + 0.1 * vi + rng.gauss(0, 0.03)
    tr = res.get("train") or {}
    for k in ("val_loss", "train_loss"):
        if isinstance(tr.get(k), (int, float)):
            tr[k] += shift
    if isinstance(tr.get("tokens_per_s"), (int, float)):
        tr["tokens_per_s"] *= speed
    for row in res.get("bench") or []:
        for k in ("median_ms", "p10_ms", "p90_ms"):
            if isinstance(row.get(k), (int, float)):
                row[k] /= speed
    return res, shift


def _job_dir(out: Path, n: int, attn: str, seed: int, res: dict) -> Path:
    d = out / str(n)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(f"- attn={attn}\n- seed={seed}\n")
    (d / "results.json").write_text(json.dumps(res))
    return d


def fabricate(source: Path, out: Path, n_seeds: int = 100) -> int:
    """4 variants x n_seeds job dirs under `out`, built from the first ok results.json under `source`."""
    src_dir, base = _source(source)
    curve = [json.loads(line) for line in (src_dir / "metrics.jsonl").read_text().splitlines() if line]
    rng = random.Random(0)
    n = 0
    for vi, attn in enumerate(VARIANTS):
        for seed in range(n_seeds):
            res, shift = perturbed(base, attn, seed, vi, rng)
            d = _job_dir(out, n, attn, seed, res)
            rows = [{**r, **{k: r[k] + shift for k in ("train_loss", "val_loss") if isinstance(r.get(k), float)}}
                    for r in curve]
            (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
            n += 1
    (out / "multirun.yaml").write_text("hydra: {}\n")
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, help="a job or sweep directory with an ok results.json")
    ap.add_argument("--seeds", type=int, default=100, help="without --jobs: seeds per variant (4 variants)")
    ap.add_argument("--jobs", type=int, help="fabricate this many jobs and time the report paths side by side")
    ap.add_argument("--steps", type=int, default=3000, help="with --jobs: logged steps of the real job run first")
    ap.add_argument("--variants", type=int, default=20, help="with --jobs: variants (jobs / variants seeds each)")
    ap.add_argument("--dir", type=Path, help="fabricate under this directory (default: a temp dir in /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the fabricated sweep")
    ap.add_argument("--baseline-src", type=Path, help="with --jobs: also time this checkout's report (e.g. main's)")
    ap.add_argument("--no-dashboard", action="store_true", help="with --jobs: skip the --wandb-dashboard row")
    args = ap.parse_args()
    if args.jobs:
        from benchmarks.report_scale_jobs import run_scale

        return run_scale(args)
    return _legends(args.source, args.seeds)


def _legends(source: Optional[Path], seeds: int) -> int:
    """The in-process report over 4 variants x `seeds`: its time and each plot's legend entries, which must
    stay at most the number of variants (+1 for the Pareto-front or training-length line)."""
    from attnbench.report import build_report

    with tempfile.TemporaryDirectory() as tmp:
        src = source or real_job(Path(tmp) / "real")
        out = Path(tmp) / "sweep"
        n = fabricate(src, out, seeds)
        t0, c0 = time.perf_counter(), time.process_time()
        rep = build_report([out], baseline=["attn=mha"])
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{n} jobs, {len(rep.comparison.variants)} variants: report in {elapsed:.1f} s wall, {cpu:.1f} s CPU")
        for name, count in rep.legends.items():
            print(f"  {name}: {count} legend entries")
        too_many = {k: c for k, c in rep.legends.items() if c > len(VARIANTS) + 1}
        if too_many:
            print(f"legends with more entries than variants: {too_many}")
            return 1
    return 0


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
