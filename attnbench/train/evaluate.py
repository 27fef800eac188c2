"""Evaluation on fixed validation batches, at several lengths, and text sampling with the KV cache."""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..device import autocast
from .data import IGNORE, LMData, TextData

SAMPLE_TEMPERATURE = 0.8


@torch.no_grad()
def evaluate(model: nn.Module, batches: list[tuple[Tensor, Tensor]], device: torch.device,
             dtype: torch.dtype, pos_buckets: int = 0) -> dict:
    """Mean loss (nats per supervised token) and next-token accuracy over the batches; with
    `pos_buckets` > 0 also "by_pos": the mean loss in each of that many equal buckets of positions.

    Each batch's loss sum is float32 on the device (MPS has no float64); the batches' sums are
    added in float64 on the CPU (Python floats), so many batches lose no precision. One
    device-to-host copy at the end, not one per batch."""
    was_training = model.training
    model.eval()
    sums, corrects, counts, pos_sums, pos_counts = [], [], [], [], []
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with autocast(device, dtype):
            logits = model(x)  # (B, T, V)
        logits = logits.float()
        per_token = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE, reduction="none")  # (B, T)
        sums.append(per_token.sum())
        mask = y != IGNORE
        corrects.append((logits.argmax(-1) == y)[mask].sum())
        counts.append(mask.sum())
        pos_sums.append(per_token.sum(0)), pos_counts.append(mask.sum(0))  # (T,) each
    model.train(was_training)
    if not sums:
        return {"loss": 0.0, "acc": 0.0}
    loss_sum = math.fsum(torch.stack(sums).cpu().tolist())  # float32 per batch -> float64 on the CPU
    n = max(1, int(torch.stack(counts).sum()))
    out: dict = {"loss": loss_sum / n, "acc": int(torch.stack(corrects).sum()) / n}
    if pos_buckets > 0:
        out["by_pos"] = bucket_losses(torch.stack(pos_sums).double().sum(0), torch.stack(pos_counts).sum(0), pos_buckets)
    return out


def bucket_losses(loss_sum: Tensor, count: Tensor, n_buckets: int) -> dict[str, Optional[float]]:
    """{first position of the bucket: mean loss of its supervised tokens, None if it has none}.

    Bucket i holds positions [i·T/n, (i+1)·T/n) (integer edges; n is capped at T), so the keys read
    as positions and the same n gives the same fractions of every evaluation length."""
    T = len(loss_sum)
    n = min(n_buckets, T)
    edges = [i * T // n for i in range(n + 1)]
    out: dict[str, Optional[float]] = {}
    for a, b in zip(edges, edges[1:]):
        c = int(count[a:b].sum())
        out[str(a)] = float(loss_sum[a:b].sum()) / c if c else None
    return out


def metric_of(data: LMData, ev: dict[str, float]) -> float:
    """The dataset's headline metric: recall accuracy, or bits per character (token)."""
    return ev["acc"] if data.metric_name.endswith("acc") else ev["loss"] / math.log(2)  # recall_acc, acc


def length_reason(model: nn.Module, data: LMData, seq_len: int, context_length: int,
                  trained_len: Optional[int] = None) -> Optional[str]:
    """Why the model cannot be evaluated at `seq_len`, or None.

    A scheme with a position table (`max_len` set: learned positions) has no meaningful row
    past what training reached: rows beyond `trained_len` (train.seq_len) are still their random
    init, since no batch ever put a token there, so a loss measured there says nothing about
    length generalisation. Those lengths are not applicable, as lengths beyond the table are."""
    max_len = getattr(getattr(model, "pos", None), "max_len", None)
    if max_len is not None and seq_len > max_len:
        return f"length {seq_len} > model.context_length={context_length}: learned positions have no embedding there"
    if max_len is not None and trained_len is not None and seq_len > trained_len:
        return (f"length {seq_len} > train.seq_len={trained_len}: learned positions beyond the trained length "
                "never received a gradient")
    return data.not_applicable(seq_len)


def eval_lengths(model: nn.Module, data: LMData, cfg: Any, device: torch.device, dtype: torch.dtype,
                 known: Optional[dict] = None) -> tuple[dict, dict, dict, dict]:
    """val loss and metric at train.seq_len and every train.eval_seq_lens entry.

    Returns ({len: loss | None}, {len: metric | None}, {len: reason}, {len: {bucket start: loss}}) keyed
    by str(len); the last is empty with train.pos_buckets=0.
    `known` is an evaluation already made at train.seq_len (reused, not repeated), unless
    train.eval_window evaluates every length with a sliding window the model was not trained with."""
    tc = cfg.train
    window = tc.get("eval_window")
    if window is None:
        return _by_length(model, data, cfg, device, dtype, known)
    with window_override(model, int(window)):
        return _by_length(model, data, cfg, device, dtype, None)


def _by_length(model: nn.Module, data: LMData, cfg: Any, device: torch.device, dtype: torch.dtype,
               known: Optional[dict]) -> tuple[dict, dict, dict, dict]:
    tc = cfg.train
    lengths = sorted({int(tc.seq_len), *(int(t) for t in tc.eval_seq_lens)})
    losses, metrics, na, by_pos = {}, {}, {}, {}
    buckets = int(tc.get("pos_buckets", 0) or 0)
    for T in lengths:
        reason = length_reason(model, data, T, int(cfg.model.context_length), int(tc.seq_len))
        if reason:
            losses[str(T)], metrics[str(T)], na[str(T)] = None, None, reason
            continue
        if known is not None and T == int(tc.seq_len) and "by_pos" in known:
            ev = known
        else:
            ev = evaluate(model, data.val_batches(int(tc.eval_batches), int(tc.batch_size), T), device, dtype,
                          pos_buckets=buckets)
        losses[str(T)], metrics[str(T)] = ev["loss"], metric_of(data, ev)
        if "by_pos" in ev:
            by_pos[str(T)] = ev["by_pos"]
    return losses, metrics, na, by_pos


@contextmanager
def window_override(model: nn.Module, window: int) -> Iterator[None]:
    """Every attention layer (anything with a `window` and a kernel) attends through a sliding
    window of `window` keys for the duration: window attention at inference, StreamingLLM's setting."""
    layers = [m for m in model.modules() if hasattr(m, "window") and hasattr(m, "kernel")]
    saved = [m.window for m in layers]
    try:
        for m in layers:
            m.window = window
        yield
    finally:
        for m, w in zip(layers, saved):
            m.window = w


@torch.no_grad()
def sample_text(model: nn.Module, data: TextData, n_tokens: int, max_len: int, device: torch.device,
                dtype: torch.dtype, seed: int) -> str:
    """Generate `n_tokens` after a one-token prompt, one token per forward through the KV cache.

    When the cache is full, the most recent half of the text is prefilled into a fresh
    cache, so a model with learned positions can write past its context length."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(int(seed))  # sampling on CPU keeps it device-independent
    out = list(data.prompt())
    max_len = max(2, min(max_len, len(out) + n_tokens))
    cache = model.init_cache(1, max_len, device=device, dtype=dtype)  # k/v come out of autocast in `dtype`
    with autocast(device, dtype):
        logits = model(torch.tensor([out], device=device), cache=cache)  # (1, T, V)
        for _ in range(n_tokens):
            probs = torch.softmax(logits[0, -1].float() / SAMPLE_TEMPERATURE, dim=-1).cpu()
            out.append(int(torch.multinomial(probs, 1, generator=g)))
            if cache.pos >= max_len:
                cache = model.init_cache(1, max_len, device=device, dtype=dtype)
                logits = model(torch.tensor([out[-(max_len // 2):]], device=device), cache=cache)
            else:
                logits = model(torch.tensor([[out[-1]]], device=device), cache=cache)  # (1, 1, V)
    model.train(was_training)
    return data.decode(out)
