"""The size check: does a job fit its device? Run before the model is built (validate(), and again
in the job with the data's vocabulary), so an oversized config is one line and exit 2, in
milliseconds, instead of a minute of allocation ending in an out-of-memory error.

The estimate is what the job holds at its peak, from the resolved spec (no model built):
    weights       4 B · params (fp32: autocast computes in bf16/fp16 but keeps fp32 weights)
    gradients     4 B · params           when it trains (stages has train, or bench.modes has train_step)
    AdamW state   8 B · params           (exp_avg and exp_avg_sq, fp32), idem
    activations   the largest of the workloads it runs (B, T: the batch and length of each):
      training    (train, bench train_step) what the forward pass saves for backward
                  (activations.py: every block's saved tensors, linear attention's chunk states
                  included) + 3 blocks' worth of backward transients (measured on CPU:
                  benchmarks/size_check.py) + the logits: B·T·V·(dtype bytes + 16), the
                  compute-dtype logits and the float32 ones the loss casts them to, the loss's
                  log-softmax and the two logit gradients
      forward     (bench forward) the logits in the compute dtype + one block's intermediates
      prefill     (bench prefill/decode) the KV cache of T + bench.decode_tokens tokens (or the
                  recurrent state) + the prompt's logits + one block's intermediates: all held at once
The vocabulary V is the data's when the job trains (`data_vocab`: data=synthetic's data.vocab_size,
256 for the byte tokenizer, the corpus's characters for char), else model.vocab_size. The parameter
count is the model's own (model/size.py, exact); the KV bytes per token are
`kv_cache_bytes_per_token`, the same figure results.json reports. benchmarks/size_check.py prints the
estimate against the measured peak of six training shapes (docs/configuration.md has the table).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

ADAMW_STATES = 2  # exp_avg, exp_avg_sq
# Backward transients in blocks' worth of saved activations: the peak of a CPU training step was
# 1.8-2.2 blocks above weights + gradients + AdamW + saved tensors for the shapes of
# benchmarks/size_check.py (0.8 at T=2048, 1.4 for MLA and taylor2); 3 keeps every shape under the estimate.
BACKWARD_BLOCKS = 3


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
    """The estimate described in the module docstring, for a resolved spec."""
    from ..device import DTYPES
    from ..model.size import count_params

    cfg = spec.cfg
    n = count_params(spec)
    elem = DTYPES[cfg.device.dtype].itemsize
    grads = 4 * n if trains(cfg) else 0
    act, keys = max(workloads(spec, elem), key=lambda c: c[0])
    return MemoryEstimate(params=n, weights_bytes=4 * n, gradient_bytes=grads,
                          optimizer_bytes=ADAMW_STATES * grads, activation_bytes=act, activation_keys=keys)


def workloads(spec: Any, elem: int) -> list[tuple[int, str]]:
    """(activation bytes, the config keys that set them) of each workload the job runs."""
    from ..model import kv_cache_bytes_per_token, recurrent_state_bytes
    from .activations import layer_bytes, saved_bytes

    cfg, V = spec.cfg, spec.vocab_size
    out = [(0, "")]

    def training(B: int, T: int) -> int:  # saved + backward transients + the logits and their float32 copies
        return saved_bytes(spec, B, T, elem) + BACKWARD_BLOCKS * layer_bytes(spec, B, T, elem) + B * T * V * (elem + 16)

    if "bench" in cfg.stages and cfg.bench.seq_lens:
        B, T = int(cfg.bench.batch_size), int(max(cfg.bench.seq_lens))
        where = f"bench.batch_size={B} bench.seq_lens (T={T})"
        modes = set(cfg.bench.modes)
        if "forward" in modes:
            out.append((B * T * V * elem + layer_bytes(spec, B, T, elem), where))
        if "train_step" in modes:
            out.append((training(B, T), where + " (train_step)"))
        if {"prefill", "decode"} & modes:
            per_seq = (T + int(cfg.bench.decode_tokens)) * kv_cache_bytes_per_token(spec, elem)
            cache = B * (per_seq + recurrent_state_bytes(spec, elem))
            out.append((cache + B * T * V * elem + layer_bytes(spec, B, T, elem),
                        where + " bench.decode_tokens (KV cache + logits)"))
    if "train" in cfg.stages:
        B, T = int(cfg.train.batch_size), int(cfg.train.seq_len)
        out.append((training(B, T), f"train.batch_size={B} train.seq_len={T}"))
    return out


def data_vocab(cfg: Any) -> int | None:
    """The vocabulary the job's data will give the model (it replaces model.vocab_size when the job
    trains), known before loading it: data=synthetic's data.vocab_size, 256 for bytes, a char corpus's
    distinct characters when the file is here (validation reads it anyway); None: not known here
    (not training, or a corpus still to download), so model.vocab_size stands until the job checks."""
    if "train" not in cfg.stages:
        return None
    d = cfg.data
    if d.name == "synthetic":
        return int(d.vocab_size)
    if d.get("tokenizer") == "byte":
        return 256
    path = _corpus_path(d)
    return _char_vocab(str(path), *_stamp(path)) if path is not None else None


def _corpus_path(d: Any) -> Any | None:
    from pathlib import Path

    if d.get("path"):
        path = Path(str(d.path)).expanduser()
    else:
        from ..train.download import cache_dir

        path = cache_dir(d.get("cache_dir")) / f"{d.name}.txt"
    return path if path.is_file() else None


def _stamp(path: Any) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=16)
def _char_vocab(path: str, size: int, mtime_ns: int) -> int:
    """Distinct characters of a corpus (cached by path, size and mtime: a sweep reads it once)."""
    from pathlib import Path

    from ..train.data import read_corpus

    return len(set(read_corpus(Path(path), "char")))


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
    if est.activation_bytes > est.total_bytes / 2:  # activations grow with depth and width too: name both
        keys = f"{keys} {est.activation_keys}"
    parts = [f"{est.params:,} params: weights {gib(est.weights_bytes)}"]
    if est.gradient_bytes:
        parts += [f"gradients {gib(est.gradient_bytes)}", f"AdamW state {gib(est.optimizer_bytes)}"]
    parts.append(f"activations {gib(est.activation_bytes)}")
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
    vocab = data_vocab(cfg)
    key = json.dumps([OmegaConf.to_container(cfg[k], resolve=True) for k in READS]
                     + [cfg.train.batch_size, cfg.train.seq_len, vocab], sort_keys=True, default=str)
    if key not in _ESTIMATES:
        spec = resolve_spec(cfg, vocab_size=vocab)  # the data's vocabulary, as the job will resolve it
        _ESTIMATES[key] = spec, estimate(spec)
    spec, est = _ESTIMATES[key]
    return check_size(spec, device.type, memory, where, est)


READS = ("attn", "pos", "norm", "ffn", "model", "stages", "bench", "device")  # + train batch and length


__all__ = ["MemoryEstimate", "budget", "check_config_fits", "check_fits", "check_size", "data_vocab", "estimate", "trains",
           "workloads"]
