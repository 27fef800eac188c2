"""evaluate() on a device without float64 (MPS): float32 per batch on the device, float64 only on the CPU."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from attnbench.model import build_model
from attnbench.train.data import IGNORE, prepare_data
from attnbench.train.evaluate import evaluate


class NoFloat64(TorchFunctionMode):
    """Every torch call that asks for or returns a float64 tensor fails, as on MPS ("Cannot convert a MPS
    Tensor to float64 dtype as the MPS framework doesn't support float64")."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if kwargs.get("dtype") == torch.float64 or any(a is torch.float64 for a in args):
            raise TypeError(f"{getattr(func, '__name__', func)}: this device does not support float64")
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.dtype == torch.float64:
            raise TypeError(f"{getattr(func, '__name__', func)}: this device does not support float64")
        return out


def test_the_mode_refuses_float64():
    with NoFloat64(), pytest.raises(TypeError, match="float64"):
        torch.zeros((), dtype=torch.float64)
    with NoFloat64(), pytest.raises(TypeError, match="float64"):
        torch.ones(2).double()


def test_evaluate_without_float64_matches_a_float64_reference(make_cfg):
    cfg = make_cfg("stages=[train]", "logger=none", "device=cpu", "train.batch_size=4", "train.seq_len=16",
                   "data.n_pairs=2", "data.n_queries=2")
    data = prepare_data(cfg)
    model = build_model(cfg, vocab_size=data.vocab_size)
    batches = data.val_batches(5, 4, 16)
    with NoFloat64():
        got = evaluate(model, batches, torch.device("cpu"), torch.float32)
    # the reference: every token's loss in float64, outside the mode
    with torch.no_grad():
        losses, correct, count = [], 0, 0
        for x, y in batches:
            logits = model.eval()(x).double()
            losses.append(F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum"))
            mask = y != IGNORE
            correct += int((logits.argmax(-1) == y)[mask].sum())
            count += int(mask.sum())
    assert math.isclose(got["loss"], float(sum(losses)) / count, rel_tol=1e-5)
    assert got["acc"] == correct / count and 0 < count
