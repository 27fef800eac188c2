"""The size check: does a job fit its device? Run before the model is built (validate(), and again
in the job with the data's vocabulary), so an oversized config is one line and exit 2, in
milliseconds, instead of a minute of allocation ending in an out-of-memory error.

The estimate is a lower bound of what the job will hold at once:
    weights       4 B · params (fp32: autocast computes in bf16/fp16 but keeps fp32 weights)
    gradients     4 B · params           when it trains (stages has train, or bench.modes has train_step)
    AdamW state   8 B · params           (exp_avg and exp_avg_sq, fp32), idem
    activation    the largest one tensor it makes: the logits of the largest batch it runs
                  (bench: bench.batch_size × max(bench.seq_lens); train: train.batch_size × train.seq_len)
                  × vocab × the dtype's bytes, or the KV cache of prefill/decode, whichever is larger
The parameter count is the model's own (model/size.py, exact); the KV bytes per token are
`kv_cache_bytes_per_token`, the same figure results.json reports.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

ADAMW_STATES = 2  # exp_avg, exp_avg_sq


@dataclass(frozen=True)
class MemoryEstimate:
    params: int
    weights_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    activation_keys: str  # the config keys that set the activation term

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.gradient_bytes + self.optimizer_bytes + self.activation_bytes


def trains(cfg: Any) -> bool:
    """Gradients and optimizer state exist: training, or the bench's timed train step."""
    return "train" in cfg.stages or ("bench" in cfg.stages and "train_step" in cfg.bench.modes)


def estimate(spec: Any) -> MemoryEstimate:
    """The lower bound described in the module docstring, for a resolved spec."""
    from ..device import DTYPES
    from ..model import kv_cache_bytes_per_token, recurrent_state_bytes
    from ..model.size import count_params

    cfg = spec.cfg
    n = count_params(spec)
    elem = DTYPES[cfg.device.dtype].itemsize
    grads = 4 * n if trains(cfg) else 0
    candidates = [(0, "")]
    if "bench" in cfg.stages and cfg.bench.seq_lens:
        B, T = int(cfg.bench.batch_size), int(max(cfg.bench.seq_lens))
        candidates.append((B * T * spec.vocab_size * elem, f"bench.batch_size={B} bench.seq_lens (T={T})"))
        if {"prefill", "decode"} & set(cfg.bench.modes):
            per_seq = (T + int(cfg.bench.decode_tokens)) * kv_cache_bytes_per_token(spec, elem)
            kv = B * (per_seq + recurrent_state_bytes(spec, elem))
            candidates.append((kv, f"bench.batch_size={B} bench.seq_lens (T={T}) bench.decode_tokens (KV cache)"))
    if "train" in cfg.stages:
        B, T = int(cfg.train.batch_size), int(cfg.train.seq_len)
        candidates.append((B * T * spec.vocab_size * elem, f"train.batch_size={B} train.seq_len={T}"))
    act, keys = max(candidates, key=lambda c: c[0])
    return MemoryEstimate(params=n, weights_bytes=4 * n, gradient_bytes=grads,
                          optimizer_bytes=ADAMW_STATES * grads, activation_bytes=act, activation_keys=keys)


def gib(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def check_size(spec: Any, device_type: str, memory: int | None, where: str,
               est: MemoryEstimate | None = None) -> MemoryEstimate | None:
    """Raise ConfigError (one line: the keys, the estimate and the memory) when the job cannot fit in
    `memory` bytes; `where` names that memory ("of RAM on this machine"). memory=None: not checked."""
    if memory is None:
        return None
    est = est or estimate(spec)
    if est.total_bytes <= memory:
        return est
    m = spec.cfg.model
    keys = f"model.n_layers={m.n_layers} model.d_model={m.d_model} model.vocab_size={spec.vocab_size}"
    if est.activation_bytes > est.total_bytes / 2:
        keys = est.activation_keys
    parts = [f"{est.params:,} params: weights {gib(est.weights_bytes)}"]
    if est.gradient_bytes:
        parts += [f"gradients {gib(est.gradient_bytes)}", f"AdamW state {gib(est.optimizer_bytes)}"]
    parts.append(f"largest activation {gib(est.activation_bytes)}")
    raise ConfigError(f"{keys}: the job needs at least {gib(est.total_bytes)} ({', '.join(parts)}), more than the "
                      f"{gib(memory)} {where} (device={device_type}); make the model or batch smaller, "
                      "or set device.memory_gb")


def budget(cfg: Any, device: Any, target: Any | None = None) -> tuple[int | None, str]:
    """(bytes, what they are) a job may use: device.memory_gb when set; else, for a job submitted to
    another machine (device.Target), what that machine is known to have (None: left to the job);
    else this device's memory (device.memory_bytes)."""
    from ..device import memory_bytes

    gb = cfg.device.get("memory_gb")
    if gb is not None:
        return int(float(gb) * 2**30), f"of device.memory_gb={gb}"
    if target is not None:
        return target.memory_bytes, "requested per job"
    return memory_bytes(device), "of GPU memory" if device.type == "cuda" else "of RAM on this machine"


def check_fits(spec: Any, device: Any, target: Any | None = None) -> MemoryEstimate | None:
    """The size check of a resolved spec against its budget (the job, with the data's vocabulary,
    before it builds the model)."""
    memory, where = budget(spec.cfg, device, target)
    return check_size(spec, device.type, memory, where)


_ESTIMATES: dict[str, tuple[Any, MemoryEstimate]] = {}  # what the estimate reads -> (spec, estimate)


def check_config_fits(cfg: Any, device: Any, target: Any | None = None) -> MemoryEstimate | None:
    """The size check of a composed config (validate()). Resolving a spec costs ~15 ms, so specs are
    cached by what the estimate reads: a sweep's jobs that differ in seed or learning rate share one."""
    import json

    from omegaconf import OmegaConf

    from .spec import resolve_spec

    memory, where = budget(cfg, device, target)
    if memory is None:
        return None
    key = json.dumps([OmegaConf.to_container(cfg[k], resolve=True) for k in READS]
                     + [cfg.train.batch_size, cfg.train.seq_len], sort_keys=True, default=str)
    if key not in _ESTIMATES:
        spec = resolve_spec(cfg)
        _ESTIMATES[key] = spec, estimate(spec)
    spec, est = _ESTIMATES[key]
    return check_size(spec, device.type, memory, where, est)


READS = ("attn", "pos", "norm", "ffn", "model", "stages", "bench", "device")  # + train batch and length


__all__ = ["MemoryEstimate", "budget", "check_config_fits", "check_fits", "check_size", "estimate", "trains"]
