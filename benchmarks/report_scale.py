"""The comparison report over 400 jobs (4 variants x 100 seeds), fabricated from one real job.

    python -m benchmarks.report_scale --source <a job or sweep dir with an ok results.json>
    python -m benchmarks.report_scale            # runs one tiny real job first (about a minute)

Each fabricated job is the real job's results.json and metrics.jsonl with its variant
(attn.name), seed, losses, throughput and latencies changed by a seeded perturbation, laid
out as a Hydra sweep (<n>/.hydra/overrides.yaml). Prints the wall time of the report
(discovery, grouping, statistics, CSVs, plots, report.md) and each plot's legend entries,
which must stay at most the number of variants (+1 for the Pareto-front or training-length
line). CPU time is printed next to wall time: on a shared machine the wall time mostly
measures the other load.
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from attnbench.report import build_report
from attnbench.report.runs import find_results

VARIANTS = ("mha", "gqa", "mqa", "local")


def real_job(where: Path) -> Path:
    """One tiny real job (bench at T=64 and 128, 20 training steps) into `where`."""
    cmd = [sys.executable, "-m", "attnbench", "attn=mha", "bench=quick", "bench.modes=[forward,train_step]",
           "train.steps=20", "train.eval_every=10", "train.batch_size=4", "train.eval_batches=1", "logger=none",
           "device=cpu", f"hydra.run.dir={where}"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return where


def fabricate(source: Path, out: Path, n_seeds: int = 100) -> int:
    """4 variants x n_seeds job dirs under `out`, built from the first ok results.json under `source`."""
    res_path = next(p for p in find_results([source]) if json.loads(p.read_text()).get("status") == "ok")
    base = json.loads(res_path.read_text())
    curve = [json.loads(line) for line in (res_path.parent / "metrics.jsonl").read_text().splitlines() if line]
    rng = random.Random(0)
    n = 0
    for vi, attn in enumerate(VARIANTS):
        for seed in range(n_seeds):
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
            d = out / str(n)
            (d / ".hydra").mkdir(parents=True)
            (d / ".hydra" / "overrides.yaml").write_text(f"- attn={attn}\n- seed={seed}\n")
            (d / "results.json").write_text(json.dumps(res))
            rows = [{**r, **{k: r[k] + shift for k in ("train_loss", "val_loss") if isinstance(r.get(k), float)}}
                    for r in curve]
            (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
            n += 1
    (out / "multirun.yaml").write_text("hydra: {}\n")
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, help="a job or sweep directory with an ok results.json")
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--keep", type=Path, help="write the fabricated sweep here (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = args.source or real_job(Path(tmp) / "real")
        out = args.keep or Path(tmp) / "sweep"
        n = fabricate(source, out, args.seeds)
        t0, c0 = time.perf_counter(), time.process_time()
        rep = build_report([out], baseline=["attn=mha"])
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{n} jobs, {len(rep.comparison.variants)} variants: report in {elapsed:.1f} s wall, {cpu:.1f} s CPU "
              f"-> {out / 'report'}")
        for name, count in rep.legends.items():
            print(f"  {name}: {count} legend entries")
        too_many = {k: c for k, c in rep.legends.items() if c > len(VARIANTS) + 1}
        if too_many:
            print(f"legends with more entries than variants: {too_many}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
