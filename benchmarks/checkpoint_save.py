"""How long a training checkpoint takes to save, per model preset (docs/sweeps.md, "Signal timing").

    python -m benchmarks.checkpoint_save [--models tiny small gpt2_small] [--dir /path/on/your/filesystem]

The pre-timeout signal must leave time for the step in progress and this save (then the continuation
decision and W&B's close). The model and AdamW state (after one update, so the optimizer moments
exist) are saved with attnbench's own `save_checkpoint` (temp file, fsync, rename, directory fsync),
three times per model in `--dir` (default: a temporary directory; pass the cluster's shared
filesystem to measure what a job there pays). Prints the checkpoint's size and the median seconds.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from attnbench import build_model, load_config
from attnbench.train.checkpoint import save_checkpoint


def one_model(preset: str, directory: Path, repeats: int) -> tuple[int, int, float]:
    """(parameters, checkpoint bytes, median save seconds) for model=<preset>."""
    cfg = load_config([f"model={preset}", "device=cpu"])
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, int(cfg.model.vocab_size), (1, 8))
    model(x).float().mean().backward()
    opt.step()  # the moments exist: the checkpoint is full size
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    path = directory / f"{preset}.pt"
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        save_checkpoint(path, model, opt, scaler, {"step": 1}, "benchmark")
        times.append(time.perf_counter() - t0)
    size = path.stat().st_size
    path.unlink()
    return sum(p.numel() for p in model.parameters()), size, statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["tiny", "small", "gpt2_small"])
    p.add_argument("--dir", type=Path, default=None)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(f"{'model':<12} {'params':>12} {'checkpoint MB':>14} {'save s (median of ' + str(args.repeats) + ')':>24}")
        for preset in args.models:
            params, size, secs = one_model(preset, Path(tmp), args.repeats)
            print(f"{preset:<12} {params:>12,} {size / 1e6:>14.1f} {secs:>24.2f}")


if __name__ == "__main__":
    main()
