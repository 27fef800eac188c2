"""attnbench's train step against a plain GPT written the nanoGPT way, on nanoGPT's CPU recipe.

Issue 10.7: with `model.bias=false` (and the default exact GELU, `ffn.approximate=none`),
attnbench's train step must cost at most 1.00x that of a plain GPT written as nanoGPT's
model.py writes it: no biases (bias=False), exact GELU, SDPA with is_causal=True, learned
positions, pre-LN, tied head, dropout modules at p=0. The shape is nanoGPT's CPU recipe
for shakespeare_char (README: 4 layers, 4 heads, d=128, block_size 64, batch 12, dropout 0;
vocabulary 65). Both models hold the same parameters (the plain one loads attnbench's
state_dict under nanoGPT's names and must give the same logits) and are timed with the same
train-step statement (forward, cross-entropy, backward, AdamW step), interleaved A B, B A.

    python -m benchmarks.nanogpt_parity
    python -m benchmarks.nanogpt_parity --rounds 20 --repeats 5 --threads 2
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from attnbench import build_model, load_config

from .common import add_common_args, compare_train_steps, machine, print_table, setup

RECIPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, vocab_size=65)


class NanoAttention(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(d, 3 * d, bias=False)
        self.c_proj = nn.Linear(d, d, bias=False)
        self.resid_dropout = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class NanoMLP(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.c_fc = nn.Linear(d, 4 * d, bias=False)
        self.gelu = nn.GELU()  # exact
        self.c_proj = nn.Linear(4 * d, d, bias=False)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class NanoBlock(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, bias=False)
        self.attn = NanoAttention(d, n_head)
        self.ln_2 = nn.LayerNorm(d, bias=False)
        self.mlp = NanoMLP(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    """nanoGPT's GPT with bias=False: wte + wpe, dropout, pre-LN blocks, ln_f, tied lm_head."""

    def __init__(self, vocab: int, block_size: int, d: int, n_layer: int, n_head: int):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab, d), wpe=nn.Embedding(block_size, d), drop=nn.Dropout(0.0),
            h=nn.ModuleList(NanoBlock(d, n_head) for _ in range(n_layer)), ln_f=nn.LayerNorm(d, bias=False)))
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.size(1)
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))  # (B, T, V)


NAMES = {"wte.weight": "transformer.wte.weight", "pos.wpe.weight": "transformer.wpe.weight",
         "norm_f.weight": "transformer.ln_f.weight", "lm_head.weight": "lm_head.weight"}
BLOCK_NAMES = {"attn.qkv": "attn.c_attn", "attn.out": "attn.c_proj", "ffn.up": "mlp.c_fc", "ffn.down": "mlp.c_proj",
               "norm1": "ln_1", "norm2": "ln_2"}


def nano_name(key: str) -> str:
    if key in NAMES:
        return NAMES[key]
    _, i, rest = key.split(".", 2)  # blocks.{i}.<module>.weight
    module, param = rest.rsplit(".", 1)
    return f"transformer.h.{i}.{BLOCK_NAMES[module]}.{param}"


def twins(r: dict):
    cfg = load_config(["stages=[bench]", "attn=mha", "attn.impl=sdpa", "pos=learned", "norm=layernorm", "ffn=gelu",
                       "ffn.approximate=none", "model.bias=false", "model.init_std=0.02",
                       f"model.n_layers={r['n_layer']}", f"model.d_model={r['n_embd']}", f"attn.n_heads={r['n_head']}",
                       f"model.vocab_size={r['vocab_size']}", f"model.context_length={r['block_size']}",
                       f"bench.seq_lens=[{r['block_size']}]", "bench.modes=[train_step]"])
    ours = build_model(cfg)
    nano = NanoGPT(r["vocab_size"], r["block_size"], r["n_embd"], r["n_layer"], r["n_head"])
    nano.load_state_dict({nano_name(k): v for k, v in ours.state_dict().items()})
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(ours) == n(nano), (n(ours), n(nano))
    idx = torch.randint(0, r["vocab_size"], (2, r["block_size"]))
    torch.testing.assert_close(ours(idx), nano(idx))  # same parameters, same function
    return cfg, ours, nano


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, rounds=20, repeats=5)
    args = ap.parse_args()
    setup(args)
    print(f"machine: {machine()}")
    r = RECIPE
    cfg, ours, nano = twins(r)
    B, T = r["batch_size"], r["block_size"]
    rows, ratio = compare_train_steps(cfg, {"attnbench": ours, "nanoGPT-style": nano}, B, T, args)
    for row in rows:
        row.update(L=r["n_layer"], H=r["n_head"], d=r["n_embd"], T=T, B=B, V=r["vocab_size"])
    print_table(rows, ["model", "L", "H", "d", "T", "B", "V", "median_ms", "p10_ms", "p90_ms", "n"],
                f"train step, nanoGPT CPU recipe, model.bias=false: ratio attnbench/nanoGPT-style = {ratio:.3f} "
                "(target <= 1.00)")


if __name__ == "__main__":
    main()
