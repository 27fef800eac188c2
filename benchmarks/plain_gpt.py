"""attnbench's block stack vs a hand-written plain-PyTorch GPT of the same configuration.

Target (issue 3): attnbench `impl=sdpa` train-step time / plain GPT train-step time <= 1.05
on CPU, for the tiny config and for 4 layers, d=256, T=256. Both models hold identical
parameters (the plain GPT loads attnbench's state_dict and must give the same logits),
and both are timed with the same train-step statement (forward, cross-entropy, backward,
AdamW step), interleaved A B / B A round by round.

    python -m benchmarks.plain_gpt                       # both presets
    python -m benchmarks.plain_gpt --preset small --rounds 8 --repeats 3
    python -m benchmarks.plain_gpt --preset custom --layers 2 --d-model 128 --heads 4 --seq-len 128 --batch 8
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from attnbench import build_model, load_config
from .common import add_common_args, compare_train_steps, machine, print_table, setup

PRESETS = {  # name: (n_layers, d_model, n_heads, seq_len, batch)
    "tiny": (2, 64, 4, 64, 16),  # conf/model/tiny.yaml at the default training shape
    "small": (4, 256, 4, 256, 8),  # the 4-layer, d=256, T=256 config
}


class PlainAttention(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)  # fused QKV
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class PlainBlock(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = PlainAttention(d, n_heads)
        self.ffn = nn.Module()
        self.ffn.up, self.ffn.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn.down(F.gelu(self.ffn.up(self.norm2(x))))  # exact GELU, attnbench's default ffn.approximate=none


class PlainGPT(nn.Module):
    """nanoGPT-style: token + learned position embeddings, pre-LN blocks, tied LM head."""

    def __init__(self, vocab: int, ctx: int, d: int, n_layers: int, n_heads: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(PlainBlock(d, n_heads) for _ in range(n_layers))
        self.norm_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm_f(x))  # (B, T, V)


def twins(L: int, d: int, H: int, T: int):
    cfg = load_config(["stages=[bench]", "attn=mha", "attn.impl=sdpa", "pos=learned", "norm=layernorm", "ffn=gelu",
                       f"model.n_layers={L}", f"model.d_model={d}", f"attn.n_heads={H}",
                       f"model.context_length={max(T, 64)}", f"bench.seq_lens=[{T}]", "bench.modes=[train_step]"])
    ours = build_model(cfg)
    plain = PlainGPT(cfg.model.vocab_size, cfg.model.context_length, d, L, H)
    plain.load_state_dict({k.replace("pos.wpe", "wpe"): v for k, v in ours.state_dict().items()})
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(ours) == n(plain), (n(ours), n(plain))
    idx = torch.randint(0, cfg.model.vocab_size, (2, T))
    torch.testing.assert_close(ours(idx), plain(idx))  # same parameters, same function
    return cfg, ours, plain


def run_preset(name: str, L: int, d: int, H: int, T: int, B: int, args) -> dict:
    cfg, ours, plain = twins(L, d, H, T)
    rows, ratio = compare_train_steps(cfg, {"attnbench": ours, "plain": plain}, B, T, args)
    for r in rows:
        r.update(preset=name, L=L, d=d, T=T, B=B)
    print_table(rows, ["preset", "L", "d", "T", "B", "model", "median_ms", "p10_ms", "p90_ms", "n"],
                f"train step, {name}: ratio attnbench/plain = {ratio:.3f} (target <= 1.05)")
    return {"preset": name, "ratio": ratio}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=["both", *PRESETS, "custom"], default="both")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    add_common_args(ap, rounds=6, repeats=3)
    args = ap.parse_args()
    setup(args)
    print(f"machine: {machine()}")
    presets = dict(PRESETS) if args.preset == "both" else {args.preset: PRESETS.get(args.preset)}
    if args.preset == "custom":
        presets = {"custom": (args.layers, args.d_model, args.heads, args.seq_len, args.batch)}
    results = [run_preset(name, *shape, args) for name, shape in presets.items()]
    print("\nsummary: " + ", ".join(f"{r['preset']} {r['ratio']:.3f}" for r in results))


if __name__ == "__main__":
    main()
