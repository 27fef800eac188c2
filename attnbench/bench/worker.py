"""Memory worker: `python -m attnbench.bench.worker IN.json OUT.json`.

Started by `memory.measure_in_worker` in a fresh process (see memory.py for why
the method is valid). Rebuilds the model from the resolved config, and for each
(mode, batch_size, seq_len) point runs one warm-up call of the same statement the
timing uses, then measures the peak RSS of one more call above the RSS before it.
OUT.json is rewritten after every point, so a crash keeps what was measured.
"""
from __future__ import annotations

import gc
import json
import logging
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from .. import device as dev
from ..model import build_model
from ..track.results import write_json_atomic
from .memory import rss_peak
from .steps import make_step

log = logging.getLogger("attnbench.bench.worker")


def measure_point(cfg, model, mode: str, B: int, T: int, dtype: torch.dtype) -> dict:
    row = {"mode": mode, "batch_size": B, "seq_len": T}
    try:
        step = make_step(mode, cfg, model, B, T, torch.device("cpu"), dtype)
        step.fn()  # warm-up: optimizer state, oneDNN primitives, thread pools
        gc.collect()
        row["peak_mem_bytes"] = rss_peak(step.fn)
    except Exception as exc:  # one point's failure must not lose the others
        row["oom"] = dev.is_oom(exc)
        row["error"] = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    finally:
        step = None
        gc.collect()
    return row


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = json.loads(Path(argv[0]).read_text())
    torch.set_num_threads(int(spec["threads"]))
    cfg = OmegaConf.create(spec["config"])
    dtype = dev.resolve_dtype(cfg.device)
    model = build_model(cfg)
    rows: list[dict] = []
    for mode, B, T in spec["points"]:
        rows.append(measure_point(cfg, model, mode, int(B), int(T), dtype))
        write_json_atomic(Path(argv[1]), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
