"""The size check's estimate (attnbench/config/size.py) against the measured peak of a training job.

For each shape, a fresh process (glibc's mmap threshold pinned to 64 KiB, as the bench memory worker
does, so that freed tensors leave the resident set) loads the data, resets the kernel's RSS
high-water mark, then builds the model and AdamW and runs the trainer's own step
(`Trainer.train_step`: autocast forward, float32 cross-entropy, backward, clip, AdamW step) twice,
so the optimizer state exists. The measured peak is VmHWM minus the RSS before the model was built:
everything the job holds for its model, not the interpreter or the data. The estimate is
`estimate(spec).total_bytes` for the spec the job resolves (with the data's vocabulary).

    python -m benchmarks.size_check            # the 6 shapes of issue 25, one thread each
"""
from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from pathlib import Path

BASE = ["stages=[train]", "device=cpu", "device.threads=1", "logger=none", "train.batch_size=8",
        "train.seq_len=256", "model.d_model=256", "model.n_layers=4", "attn.n_heads=8",
        "model.context_length=2048", "data.vocab_size=256"]
SHAPES = {
    "MHA": [],
    "GQA": ["attn=gqa", "attn.n_kv_heads=2"],
    "MLA": ["attn=mla"],
    "linear taylor2": ["attn=linear", "attn.feature_map=taylor2", "pos=none"],
    "vocab 8192": ["data.vocab_size=8192"],
    "T=2048": ["train.seq_len=2048", "train.batch_size=2"],
}


def measure(overrides: list[str]) -> dict:
    """In this (fresh) process: the estimate and the measured peak of two training steps."""
    import torch

    from attnbench import build_model, load_config
    from attnbench.bench.memory import hwm_bytes, reset_hwm, rss_bytes
    from attnbench.config.size import data_vocab, estimate
    from attnbench.config.spec import resolve_spec
    from attnbench.train.data import prepare_data
    from attnbench.train.loop import Trainer
    from attnbench.train.schedule import build_optimizer

    torch.set_num_threads(1)
    cfg = load_config(overrides)
    data = prepare_data(cfg)
    spec = resolve_spec(cfg, vocab_size=data_vocab(cfg))  # the vocabulary the login-node check sees
    assert spec.vocab_size == data.vocab_size, (spec.vocab_size, data.vocab_size)
    est = estimate(spec)
    cpu, dtype = torch.device("cpu"), torch.float32
    torch.nn.functional.cross_entropy(torch.randn(4, 8, requires_grad=True), torch.zeros(4, dtype=torch.long)).backward()
    gc.collect()
    reset_hwm()
    base = rss_bytes()
    model = build_model(spec).train()
    opt, _ = build_optimizer(model, cfg.train, cpu)
    trainer = Trainer(cfg=cfg, model=model, forward=model, data=data, device=cpu, dtype=dtype, opt=opt,
                      run_dir=Path("."), sinks=None, scaler=torch.amp.GradScaler("cpu", enabled=False),
                      val_batches=[])
    for step in (1, 2):
        trainer.train_step(step)
    return {"estimate": est.total_bytes, "measured": hwm_bytes() - base, "params": est.params,
            "activation": est.activation_bytes, "vocab": spec.vocab_size}


def run_shape(overrides: list[str]) -> dict:
    from attnbench.bench.memory import worker_env

    proc = subprocess.run([sys.executable, "-m", "benchmarks.size_check", "--one", json.dumps(overrides)],
                          env=worker_env(), capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{overrides}: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one shape (JSON overrides) here
    ap.add_argument("--shapes", nargs="*", default=list(SHAPES), help=f"of {', '.join(SHAPES)}")
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure(json.loads(args.one))))
        return 0
    from attnbench.config.size import gib
    from attnbench.report.console import table

    rows, bad = [], 0
    for name in args.shapes:
        got = run_shape(BASE + SHAPES[name])
        ratio = got["estimate"] / got["measured"]
        bad += not 1.0 <= ratio <= 1.5
        rows.append({"shape": name, "overrides": " ".join(SHAPES[name]) or "-", "params": got["params"],
                     "vocab": got["vocab"], "estimate": gib(got["estimate"]), "measured peak": gib(got["measured"]),
                     "estimate/measured": f"{ratio:.2f}"})
    print(f"base: {' '.join(BASE)}")
    print(table(rows, list(rows[0])))
    print("every estimate within 1.0-1.5x of its measured peak" if not bad else f"{bad} shape(s) outside 1.0-1.5x")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
