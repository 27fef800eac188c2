"""AdamW with weight decay on matrices only, and a warm-up + cosine learning-rate schedule."""
from __future__ import annotations

import logging
import math
from typing import Any, Optional, Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)


def lr_at(step: int, tc: Any, anchor: Optional[Sequence[float]] = None) -> float:
    """Learning rate for update number `step` (0-based): linear warm-up to `train.lr`
    over `train.warmup_steps`, then cosine decay to `train.lr · train.min_lr_ratio` at `train.steps`.

    `anchor` = (step S, lr at S) when a resumed run changed train.steps at S (train/resume_rules.py):
    from S the cosine runs from that lr to the minimum at the new train.steps (the rate stays continuous)."""
    lr, warmup, total = float(tc.lr), int(tc.warmup_steps), int(tc.steps)
    if step < warmup:
        return lr * (step + 1) / warmup
    min_lr = lr * float(tc.min_lr_ratio)
    start, top = (warmup, lr) if anchor is None else (int(anchor[0]), float(anchor[1]))
    progress = min(1.0, max(0, step - start) / max(1, total - start))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (top - min_lr)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (linear and embedding weights); never biases, norm gains or other vectors."""
    seen: set[int] = set()
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:  # tied weights appear twice
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, tc: Any, device: torch.device) -> tuple[torch.optim.Optimizer, str]:
    """AdamW, fused where this torch build has a fused kernel for the device, else foreach.
    Returns the optimizer and a label saying which implementation runs."""
    groups = param_groups(model, float(tc.weight_decay))
    kw = dict(lr=float(tc.lr), betas=(float(tc.beta1), float(tc.beta2)))
    try:
        return torch.optim.AdamW(groups, fused=True, **kw), "adamw_fused"
    except (RuntimeError, TypeError, ValueError) as exc:  # no fused kernel for this device / dtype
        log.info("fused AdamW unavailable on %s (%s); using foreach", device.type, exc)
        return torch.optim.AdamW(groups, foreach=True, **kw), "adamw_foreach"
