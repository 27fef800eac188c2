"""How long the check before a multirun takes (sweep/precheck.py: every job composed and validated,
the size check included), against the grid size. The 400-job grid:

    python benchmarks/sweep_precheck.py            # grids of 24, 100 and 400 jobs, 3 rounds each

prints one Markdown row per grid: jobs, group combinations composed, median wall and CPU seconds. The target
(issue 21) is a 400-job grid checked in a few seconds.
"""
from __future__ import annotations

import argparse
import statistics
import time

from attnbench.sweep.precheck import check_sweep_overrides

GRIDS = [  # (jobs, distinct config-group choices, each composed once by Hydra, overrides)
    (24, 4, ["attn=mha,gqa,mqa,mla", "pos=rope", "seed=0,1,2,3,4,5"]),
    (100, 10, ["attn=mha,gqa", "pos=rope,alibi,learned,none,sinusoidal", "seed=0,1,2,3,4", "train.lr=1e-3,3e-3"]),
    (400, 20, ["attn=mha,gqa", "pos=rope,alibi,learned,none,sinusoidal", "ffn=gelu,swiglu", "seed=0,1,2,3,4",
               "train.lr=1e-3,3e-3,1e-2,3e-2"]),
    (400, 4, ["attn=mha,gqa,mqa,local", "pos=rope", "seed=0,1,2,3,4,5,6,7,8,9",  # groups that vary less
              "train.lr=1e-4,2e-4,5e-4,1e-3,2e-3,3e-3,5e-3,1e-2,2e-2,3e-2"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    fixed = ["logger=none", "device=cpu"]
    check_sweep_overrides(GRIDS[0][2] + fixed)  # imports and Hydra's first initialisation, untimed
    print("| jobs | group combinations | wall s (median) | CPU s (median) | CPU ms/job | overrides |")
    print("|---|---|---|---|---|---|")
    for n, combos, grid in GRIDS:
        wall, cpu = [], []
        for _ in range(args.rounds):
            t, c = time.perf_counter(), time.process_time()
            assert check_sweep_overrides(grid + fixed) == n
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        w, c = statistics.median(wall), statistics.median(cpu)
        print(f"| {n} | {combos} | {w:.2f} | {c:.2f} | {1e3 * c / n:.1f} | `{' '.join(grid)}` |")


if __name__ == "__main__":
    main()
