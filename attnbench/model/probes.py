"""Attention-sink probes, measured on one validation batch after training (Finding 11):

- `first_token_attention`: mean attention probability on the first token, over layers, heads and
  the queries at positions >= 1 that may see it (`first_token_attn`; the largest head: `first_token_attn_max`) (Xiao et al. 2023's attention sink; Qiu et al. 2025
  report it falls from ~0.47 to ~0.05 with output gating at 1.7B parameters);
- `max_activation`: max |h| of the residual stream after any block (the "massive activations" of
  Sun et al. 2024, which Qiu et al. tie to the sink);
- `mean_gate`: mean output-gate value σ(x W_g) over layers (attn.gate; Qiu et al.: sparse, ~0.1-0.2).
Each is None where the model has no such layer (attn.impl=torch_mha or attn=mla for the first)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _recorded(model: nn.Module, idx: Tensor, flag: str, value: str) -> list[Tensor]:
    """Run `idx` with `flag` set on every module that has it; the `value` each one recorded."""
    layers = [m for m in model.modules() if hasattr(m, flag)]
    try:
        for m in layers:
            setattr(m, flag, True)
            setattr(m, value, None)
        with _eval_mode(model), torch.no_grad():
            model(idx)
        return [getattr(m, value) for m in layers if getattr(m, value) is not None]
    finally:
        for m in layers:
            setattr(m, flag, False)
            setattr(m, value, None)


def first_token_attention(model: nn.Module, idx: Tensor, reduce: str = "mean") -> float | None:
    """Attention on key 0, averaged per head over the queries that see it, then the mean (or, with
    reduce="max", the largest) over layers and heads; idx (B, T). A sink may live in a few heads only."""
    seen = _recorded(model, idx, "record_first_token", "first_token")
    if not seen:
        return None
    per_head = torch.cat(seen)  # (layers · H,)
    return float(per_head.nanmean() if reduce == "mean" else per_head.nan_to_num(0.0).max())


def mean_gate(model: nn.Module, idx: Tensor) -> float | None:
    """Mean σ(x W_g) over layers, tokens and gate channels; None without attn.gate."""
    seen = _recorded(model, idx, "record", "mean_gate")
    return float(torch.stack(seen).mean()) if seen else None


def max_activation(model: nn.Module, idx: Tensor) -> float | None:
    """max |h| over the residual stream after every block (the model's `blocks`); idx (B, T)."""
    blocks = getattr(model, "blocks", None)
    if not blocks:
        return None
    peaks: list[Tensor] = []
    hooks = [b.register_forward_hook(lambda _m, _i, out: peaks.append(out.detach().abs().amax())) for b in blocks]
    try:
        with _eval_mode(model), torch.no_grad():
            model(idx)
    finally:
        for h in hooks:
            h.remove()
    return float(torch.stack(peaks).max())


def sink_probes(model: nn.Module, idx: Tensor) -> dict[str, float | list[float] | None]:
    """The results keys first_token_attn, max_activation and mean_gate for one batch."""
    return {"first_token_attn": first_token_attention(model, idx),
            "first_token_attn_max": first_token_attention(model, idx, reduce="max"),
            "max_activation": max_activation(model, idx), "mean_gate": mean_gate(model, idx)}
