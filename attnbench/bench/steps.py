"""The statement each bench mode times, built once per grid point.

forward     inference forward of (B, T) tokens under torch.inference_mode
train_step  forward + cross-entropy + backward + AdamW step + zero_grad(set_to_none)
prefill     a fresh KV cache (model.init_cache) filled with T prompt tokens
decode      `decode_tokens` greedy steps of one token each after a T-token prefill
            (the prefill is set-up, not timed; the sample is divided per token)

The same builder serves the in-process timing and the memory worker, so both
measure the same statement.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import device as dev
from ..config.spec import Spec, as_spec
from .flops import flops_per_token_decode, flops_per_token_fwd, flops_per_token_train
from .modes import BENCH_MODES


@dataclass
class Step:
    fn: Callable[[], Any]  # the timed statement
    tokens: int  # tokens processed (or generated) per call
    flops: float  # analytic FLOPs per call
    per_call: int = 1  # the sample is divided by this (decode: per generated token)


def _tokens(spec: Spec, B: int, T: int, device: torch.device, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, spec.vocab_size, (B, T), generator=g).to(device)  # (B, T)


def make_step(mode: str, cfg: Any, model: nn.Module, B: int, T: int, device: torch.device,
              dtype: torch.dtype) -> Step:
    if mode not in BUILDERS:  # validate() rejects it first; this guards direct callers
        raise ValueError(f"bench mode {mode!r}: choose from {list(BENCH_MODES)}")
    return BUILDERS[mode](as_spec(cfg), model, B, T, device, dtype)  # a spec, or a config resolved here


def _forward(spec, model, B, T, device, dtype) -> Step:
    model.eval()
    idx = _tokens(spec, B, T, device, 1)

    def fn():
        with torch.inference_mode(), dev.autocast(device, dtype):
            return model(idx)

    return Step(fn, B * T, B * T * flops_per_token_fwd(spec, T))


def _train_step(spec, model, B, T, device, dtype) -> Step:
    model.train()
    idx, tgt = _tokens(spec, B, T, device, 2), _tokens(spec, B, T, device, 3)
    # lr only changes the values the step writes, not its cost; the suite restores the weights.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)

    def fn():
        with dev.autocast(device, dtype):
            logits = model(idx)  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), tgt.flatten())
        loss.backward()
        opt.step()
        # Last, not first: the gradients are then born and freed inside the call, so the peak
        # memory (measured above what is resident before the call) counts them and the
        # optimizer-step temporaries. Freed first, the previous call's gradients sat in the
        # baseline and the peak left them out (34.5 MB instead of >= 43.0 MB of gradients at
        # d=512, L=2, V=8192).
        opt.zero_grad(set_to_none=True)

    return Step(fn, B * T, B * T * flops_per_token_train(spec, T))


def _cache_len(spec: Spec, T: int) -> int:
    return T + int(spec.cfg.bench.decode_tokens)  # room for the decode that follows a prefill


def _prefill(spec, model, B, T, device, dtype) -> Step:
    model.eval()
    idx = _tokens(spec, B, T, device, 4)

    def fn():
        with torch.inference_mode(), dev.autocast(device, dtype):
            cache = model.init_cache(B, _cache_len(spec, T), device, dtype)
            return model(idx, cache)

    return Step(fn, B * T, B * T * flops_per_token_fwd(spec, T))


def _decode(spec, model, B, T, device, dtype) -> Step:
    model.eval()
    n_new = int(spec.cfg.bench.decode_tokens)
    idx = _tokens(spec, B, T, device, 5)
    with torch.inference_mode(), dev.autocast(device, dtype):
        cache = model.init_cache(B, _cache_len(spec, T), device, dtype)
        first = model(idx, cache)[:, -1:].argmax(-1)  # (B, 1)
        prompt = cache.snapshot()  # a KV cache: its position; attn=linear's recurrent state: a copy of it

    def fn():
        tok = first
        with torch.inference_mode(), dev.autocast(device, dtype):
            cache.restore(prompt)  # rewind: every call decodes the same n_new positions after the prompt
            for _ in range(n_new):
                tok = model(tok, cache)[:, -1:].argmax(-1)  # (B, 1)
        return tok

    return Step(fn, B * n_new, B * n_new * flops_per_token_decode(spec, T, n_new), per_call=n_new)


# One builder per entry of modes.BENCH_MODES (tests/test_bench.py checks that the two agree).
BUILDERS: dict[str, Callable[..., Step]] = {"forward": _forward, "train_step": _train_step, "prefill": _prefill,
                                            "decode": _decode}
