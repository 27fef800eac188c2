"""What running a sweep through SLURM costs: the same small sweep, basic launcher vs local SLURM.

Wall time of `python -m attnbench -m <grid>` from start to the printed summary, with the basic
launcher (jobs one after another in this process) and with hydra/launcher=slurm_gpu on the
one-node cluster of benchmarks/slurm/local_cluster.sh (one job array; each job its own process,
as many at once as the node has CPUs), in alternating rounds (A B, B A, ...). Needs the cluster:

    sudo bash benchmarks/slurm/local_cluster.sh start && export SLURM_CONF=/tmp/attnbench-slurm/slurm.conf
    python -m benchmarks.slurm_overhead
    python -m benchmarks.slurm_overhead --rounds 4 --steps 300 --poll-s 10
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import machine, print_table

GRID = ["attn=mha,gqa", "seed=0,1"]
JOB = ["stages=[train]", "device=cpu", "logger=none", "train.batch_size=8", "train.eval_every=0",
       "train.eval_batches=2"]


def run_sweep(extra: list[str], steps: int, out: Path) -> float:
    """Seconds from launch to exit; the sweep must end with every job ok."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "attnbench", "-m", *GRID, *JOB, f"train.steps={steps}", *extra,
           f"hydra.sweep.dir={out}"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"sweep failed ({' '.join(extra) or 'basic'}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (A B, then B A, ...)")
    ap.add_argument("--steps", type=int, default=300, help="training steps per job")
    ap.add_argument("--poll-s", type=float, default=10.0, help="hydra.launcher.poll_s (slurm_gpu's default: 10)")
    args = ap.parse_args()
    if subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        raise SystemExit("no SLURM answers (sinfo): start benchmarks/slurm/local_cluster.sh and export SLURM_CONF")
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()[0]
    launchers = {
        "basic": [],
        "slurm_gpu (local SLURM)": ["hydra/launcher=slurm_gpu", "hydra.launcher.cpus_per_task=1",
                                    "hydra.launcher.mem_gb=1", f"hydra.launcher.poll_s={args.poll_s}"],
    }
    times: dict[str, list[float]] = {k: [] for k in launchers}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in list(launchers) if r % 2 == 0 else list(launchers)[::-1]:
                times[name].append(run_sweep(launchers[name], args.steps, Path(tmp) / "sweep"))
                print(f"round {r}: {name}: {times[name][-1]:.1f} s", flush=True)
    base = statistics.median(times["basic"])
    rows = [{"launcher": k, "wall s (median)": f"{statistics.median(v):.1f}",
             "runs": " ".join(f"{x:.1f}" for x in v), "vs basic": f"{statistics.median(v) / base:.2f}x"}
            for k, v in times.items()]
    print(f"machine: {machine()}; SLURM node: {cpus} CPUs; sweep: {' '.join(GRID)} (4 jobs), "
          f"{args.steps} steps each, poll_s={args.poll_s}")
    print_table(rows, ["launcher", "wall s (median)", "runs", "vs basic"], "same sweep, two launchers")


if __name__ == "__main__":
    main()
