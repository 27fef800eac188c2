"""Tiny Shakespeare, the CPU recipe: attnbench's trainer vs a plain hand-written PyTorch GPT.

Recipe (nanoGPT's shakespeare_char on CPU): 4 layers, 4 heads, d=128, context 64,
batch 12, 2000 steps, lr 1e-3 (warm-up 100, cosine to 1e-4, beta2 0.99, wd 0.1,
clip 1.0), no dropout, learned positions, LayerNorm, GELU.

1. Quality: one full run of each; attnbench must reach val loss <= 1.89.
2. Throughput: short runs alternated A B B A ... (so drift on a shared machine hits
   both alike); tokens/s of the training steps only (batch + fwd/bwd/step + loss sync),
   medians compared. Both sides evaluate on the same fixed validation windows.

    python -m benchmarks.train_shakespeare --data ../shared/data/tinyshakespeare.txt
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.config import load_config
from attnbench.job import run_job
from attnbench.train.data import prepare_data
from attnbench.train.evaluate import evaluate
from attnbench.train.schedule import lr_at

RECIPE = ["train=shakespeare_char", "model.n_layers=4", "attn.n_heads=4", "model.d_model=128",
          "model.context_length=64", "model.dropout=0.0", "model.init_std=0.02", "pos=learned", "norm=layernorm", "ffn=gelu",
          "attn=mha", "device=cpu", "logger=none", "stages=[train]"]


# ----------------------------------------------------------------------------- the plain baseline
class PlainBlock(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.down(F.gelu(self.up(self.ln2(x)), approximate="tanh"))


class PlainGPT(nn.Module):
    def __init__(self, vocab: int, d: int, n_layers: int, n_heads: int, ctx: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(PlainBlock(d, n_heads) for _ in range(n_layers))
        self.ln_f, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("proj.weight", "down.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


def plain_train(cfg, data, steps: int) -> dict:
    """A hand-written loop with the same hyper-parameters; times the steps only."""
    m, tc = cfg.model, cfg.train
    torch.manual_seed(int(cfg.seed))
    model = PlainGPT(data.vocab_size, m.d_model, m.n_layers, cfg.attn.n_heads, m.context_length)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay}, {"params": other, "weight_decay": 0}],
                            lr=tc.lr, betas=(tc.beta1, tc.beta2))
    train_s = 0.0
    for step in range(steps):
        t0 = time.perf_counter()
        x, y = data.train_batch(step, tc.batch_size, tc.seq_len)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tc)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        train_s += time.perf_counter() - t0
    val = evaluate(model, data.val_batches(tc.eval_batches, tc.batch_size, tc.seq_len), torch.device("cpu"),
                   torch.float32)
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return {"tokens_per_s": steps * tc.batch_size * tc.seq_len / train_s, "val_loss": val["loss"], "params": n_params}


def attnbench_train(overrides: list[str], steps: int) -> dict:
    cfg = load_config(RECIPE + overrides + [f"train.steps={steps}"])
    with tempfile.TemporaryDirectory() as d:
        res = run_job(cfg, Path(d))
    assert res["status"] == "ok", res["error"]
    tr = res["train"]
    return {"tokens_per_s": tr["tokens_per_s"], "val_loss": tr["val_loss"], "params": res["model"]["params"],
            "sample": tr.get("sample"), "wall_s": tr["wall_s"]}


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="local tinyshakespeare.txt (default: download into the attnbench cache)")
    ap.add_argument("--steps", type=int, default=2000, help="steps of the quality runs (0: throughput only)")
    ap.add_argument("--speed-steps", type=int, default=200, help="steps of each throughput run")
    ap.add_argument("--rounds", type=int, default=3, help="throughput runs per side (alternated)")
    ap.add_argument("--out", help="also write the numbers as JSON here")
    args = ap.parse_args()
    over = ["data=shakespeare"] + ([f"data.path={Path(args.data).resolve()}"] if args.data else [])
    cfg = load_config(RECIPE + over)
    data = prepare_data(cfg)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; recipe: {' '.join(RECIPE + over)}")

    speed = {"attnbench": [], "plain": []}
    for r in range(args.rounds):
        order = ("attnbench", "plain") if r % 2 == 0 else ("plain", "attnbench")
        for side in order:
            res = attnbench_train(over + ["train.eval_batches=1", "train.sample_tokens=0"], args.speed_steps) \
                if side == "attnbench" else plain_train(load_config(RECIPE + over), data, args.speed_steps)
            speed[side].append(res["tokens_per_s"])
            print(f"  speed round {r + 1} {side:9s}: {res['tokens_per_s']:9.0f} tokens/s", flush=True)

    if args.steps <= 0:
        _report_speed(args, speed)
        return
    t0 = time.perf_counter()
    ours = attnbench_train(over, args.steps)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = plain_train(load_config(RECIPE + over), data, args.steps)
    plain_s = time.perf_counter() - t0
    _report(args, speed, ours, plain, ours_s, plain_s)


def _medians(speed: dict) -> dict:
    return {k: statistics.median(v) for k, v in speed.items()}


def _report_speed(args, speed) -> float:
    med = _medians(speed)
    ratio = med["attnbench"] / med["plain"]
    print(f"throughput attnbench / plain: {ratio:.3f} ({'PASS' if ratio >= 1.0 else 'FAIL'}; medians of "
          f"{args.rounds} alternated runs of {args.speed_steps} steps each: {med['attnbench']:.0f} vs "
          f"{med['plain']:.0f} tokens/s)")
    return ratio


def _report(args, speed, ours, plain, ours_s, plain_s) -> None:
    med = _medians(speed)
    rows = [("attnbench", ours, med["attnbench"], ours_s), ("plain PyTorch", plain, med["plain"], plain_s)]
    print(f"\n{'':14s} {'params':>8s} {'val_loss':>9s} {'tokens/s (median)':>18s} {'run_s':>7s}")
    for name, r, tps, s in rows:
        print(f"{name:14s} {r['params']:8d} {r['val_loss']:9.4f} {tps:18.0f} {s:7.1f}")
    print(f"\nval loss target <= 1.89: {'PASS' if ours['val_loss'] <= 1.89 else 'FAIL'} ({ours['val_loss']:.4f} "
          f"after {args.steps} steps)")
    ratio = _report_speed(args, speed)
    print(f"\nsample:\n{ours['sample']}")
    if args.out:
        Path(args.out).write_text(json.dumps({"speed_tokens_per_s": speed, "attnbench": ours, "plain": plain,
                                              "throughput_ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
