"""Cross-axis validation: called once per job, before anything is allocated. Every
failure is a `ConfigError` with one line that names the config key and the allowed values."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from ..bench.modes import BENCH_MODES
from ..errors import ConfigError
from .compose import AXES, group_options
from .schema import Config


def _choose(key: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value}: not allowed; choose from [{', '.join(map(str, allowed))}]")


def _positive(key: str, value: int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value}: must be an integer >= 1")


def validate(cfg: DictConfig, target: Any | None = None) -> None:
    """Local and cross-axis checks, then the size check; raises ConfigError with a one-line message.
    `target` (device.Target): the machine the job will run on when that is not this one (a SLURM
    sweep checked on its login node, sweep/precheck.py); None = this machine."""
    from .. import (
        model,  # noqa: F401  (importing the model package fills the registries)
        registry,
    )
    from ..model import gating, sinks
    from ..model.layout import resolve_layout
    from ..model.mechanism import config_problem as mechanism_problem
    from ..model.mechanism import mechanism_of
    from ..model.mla import config_problem as mla_config_problem
    from ..model.short_conv import config_problem as short_conv_problem

    m, a = cfg.model, cfg.attn
    _check_known_keys(cfg)
    registered: dict[str, registry.Registry[Any]] = {"pos": registry.POSITIONAL, "norm": registry.NORMS, "ffn": registry.FFNS}
    for group in AXES:
        name = cfg[group].name
        # A component registered from outside the package (docs/extending.md) is a valid choice
        # through `<group>.name=<its name>` even without a conf/<group>/<name>.yaml.
        opts = sorted(set(group_options(group)) | (set(registered[group].names()) if group in registered else set()))
        if group != "model" and name not in opts:  # model presets may be user-defined
            raise ConfigError(f"{group}={name}: unknown option; choose from [{', '.join(opts)}]")
    for key in ("d_model", "n_layers", "vocab_size", "context_length"):
        _positive(f"model.{key}", m[key])
    _positive("attn.n_heads", a.n_heads)
    _positive("attn.n_kv_heads", a.n_kv_heads, allow_none=True)
    _positive("attn.window", a.window, allow_none=True)
    if a.name == "local" and a.window is None:
        raise ConfigError("attn.window=null: attn=local needs an integer window >= 1")
    if m.d_model % a.n_heads:
        raise ConfigError(f"model.d_model={m.d_model}: must be divisible by attn.n_heads={a.n_heads}")
    n_kv = resolve_layout(cfg)
    if a.n_heads % n_kv:
        raise ConfigError(f"attn.n_kv_heads={n_kv}: must divide attn.n_heads={a.n_heads}")
    if registry.POSITIONAL.get(cfg.pos.name).rotates and a.name != "mla" and (m.d_model // a.n_heads) % 2:
        # (attn=mla rotates only its attn.rope_head_dim channels: checked in model/mla.py)
        raise ConfigError(f"pos={cfg.pos.name}: head_dim={m.d_model // a.n_heads} must be even (model.d_model / attn.n_heads)")
    _check_ranges(cfg)
    _check_extensions(cfg)
    for problem in (gating.config_problem(cfg), sinks.config_problem(cfg)):  # attn.gate, attn.sinks
        if problem:
            raise ConfigError(problem)
    _choose("norm.placement", cfg.norm.placement, ("pre", "post"))
    _choose("device.dtype", cfg.device.dtype, ("float32", "bfloat16", "float16"))
    from ..track.loggers import LOGGER_MODES  # importing it registers the logger backends

    registry.LOGGERS.get(cfg.logger.name)  # an unknown backend (`logger.name=foo`) → ConfigError
    if cfg.logger.mode is not None:
        _choose("logger.mode", cfg.logger.mode, LOGGER_MODES)
    for stage in cfg.stages:
        _choose("stages", stage, ("bench", "train"))
    for mode in cfg.bench.modes:
        _choose("bench.modes", mode, BENCH_MODES)
    _check_bench(cfg.bench)
    for key in ("positional", "kernel", "ffn", "norm"):
        registry.REGISTRIES[key].get(_axis_name(cfg, key))  # unknown names → ConfigError
    device = _job_device(cfg, target)
    kernel = registry.KERNELS.get(a.impl)()
    # attn=diff / linear first: their own capabilities, and their fields set without them
    problem = mechanism_problem(cfg, kernel) or short_conv_problem(cfg, kernel.owns_projection)
    if problem:
        raise ConfigError(problem)
    mechanism = mechanism_of(cfg)
    if mechanism is None or mechanism.uses_kernel:  # attn=linear calls no kernel: nothing to ask of it
        problem = kernel.unsupported(kernel_requirements(cfg, device.type))
        if problem:
            raise ConfigError(f"attn.impl={a.impl}: {problem}")
    problem = mla_config_problem(cfg, kernel)  # attn=mla dims, pos and kernel; MLA fields without attn=mla
    if problem:
        raise ConfigError(problem)
    _check_lengths(cfg)
    if "train" in cfg.stages:
        from ..train.checks import check as check_train_and_data

        check_train_and_data(cfg)
    _check_size(cfg, device, target)


def _job_device(cfg: DictConfig, target: Any | None) -> Any:
    """The job's device: resolved here, or the one of the machine it is submitted to (not checked for
    availability here, as a login node has no GPU)."""
    import torch

    from ..device import resolve_device

    if target is not None and target.device_type in ("cpu", "cuda", "mps"):
        return torch.device(target.device_type)
    return resolve_device(cfg.device)


def _check_size(cfg: DictConfig, device: Any, target: Any | None) -> None:
    from .size import check_config_fits

    check_config_fits(cfg, device, target)


def _check_ranges(cfg: DictConfig) -> None:
    """Numeric fields whose bad values would otherwise fail (or silently misbehave) inside torch."""
    for key, value in (("attn.dropout", cfg.attn.dropout), ("model.dropout", cfg.model.dropout)):
        if not 0 <= value < 1:
            raise ConfigError(f"{key}={value}: must be in [0, 1)")
    for key, value in (("ffn.mult", cfg.ffn.mult), ("norm.eps", cfg.norm.eps)):
        if not value > 0:
            raise ConfigError(f"{key}={value}: must be > 0")
    if cfg.model.init_std is not None and not cfg.model.init_std > 0:
        raise ConfigError(f"model.init_std={cfg.model.init_std}: must be > 0 (or null = 1/sqrt(model.d_model))")
    _choose("ffn.approximate", cfg.ffn.approximate, ("none", "tanh"))
    if not cfg.model.bias and cfg.attn.qkv_bias:
        raise ConfigError("attn.qkv_bias=true: not with model.bias=false (no bias in any Linear); "
                          "set attn.qkv_bias=false or model.bias=true")
    if not cfg.pos.base > 1:
        raise ConfigError(f"pos.base={cfg.pos.base}: must be > 1 (RoPE/sinusoidal frequency base)")
    _positive("ffn.multiple_of", cfg.ffn.multiple_of)
    _positive("device.threads", cfg.device.threads, allow_none=True)
    if cfg.device.get("memory_gb") is not None and not cfg.device.memory_gb > 0:
        raise ConfigError(f"device.memory_gb={cfg.device.memory_gb}: must be > 0 (or null = the device's own memory)")


def _check_extensions(cfg: DictConfig) -> None:
    """pos.scaling (RoPE context extension), attn.softcap and model.final_softcap."""
    from ..model.position import ROPE_SCALINGS
    from ..registry import POSITIONAL

    p = cfg.pos
    _choose("pos.scaling", p.scaling, ROPE_SCALINGS)
    if p.scaling != "none" and not POSITIONAL.get(p.name).rotates:
        raise ConfigError(f"pos.scaling={p.scaling}: only with pos=rope (pos={p.name} has no rotary frequencies)")
    if not p.factor >= 1:
        raise ConfigError(f"pos.factor={p.factor}: must be >= 1 (extended length / pos.original_context)")
    _positive("pos.original_context", p.original_context, allow_none=True)
    head_dim = cfg.model.d_model // cfg.attn.n_heads
    if p.scaling == "ntk" and head_dim <= 2:  # base · factor^(D/(D-2)) needs D > 2
        raise ConfigError(f"pos.scaling=ntk: head_dim={head_dim} must be > 2 (model.d_model / attn.n_heads)")
    if p.scaling == "llama3" and not 0 < p.low_freq_factor < p.high_freq_factor:
        raise ConfigError(f"pos.low_freq_factor={p.low_freq_factor}: must be > 0 and < pos.high_freq_factor={p.high_freq_factor}")
    if p.scaling == "yarn" and not 0 < p.beta_slow < p.beta_fast:
        raise ConfigError(f"pos.beta_slow={p.beta_slow}: must be > 0 and < pos.beta_fast={p.beta_fast}")
    for key, value in (("attn.softcap", cfg.attn.softcap), ("model.final_softcap", cfg.model.final_softcap)):
        if value is not None and not value > 0:
            raise ConfigError(f"{key}={value}: must be > 0 (or null = off)")


def _check_known_keys(cfg: DictConfig) -> None:
    """`+attn.windw=3` gets past Hydra's struct check; a typo must not be silently ignored."""
    for f in dataclasses.fields(Config):
        schema = f.default_factory
        if dataclasses.is_dataclass(schema) and isinstance(cfg.get(f.name), DictConfig):
            known = [g.name for g in dataclasses.fields(schema)]
            for key in cfg[f.name]:
                if key not in known:
                    raise ConfigError(f"{f.name}.{key}: unknown key; choose from [{', '.join(known)}]")


def _check_bench(b: DictConfig) -> None:
    for key in ("batch_size", "decode_tokens", "repeats"):
        _positive(f"bench.{key}", b[key])
    if not isinstance(b.warmup, int) or b.warmup < 0:
        raise ConfigError(f"bench.warmup={b.warmup}: must be an integer >= 0")
    if not b.seq_lens:
        raise ConfigError("bench.seq_lens=[]: give at least one sequence length")
    for t in b.seq_lens:
        _positive("bench.seq_lens", t)
    from ..bench.memory import MEMORY_METHODS

    _choose("bench.memory", b.memory, MEMORY_METHODS)
    if b.peak_flops is not None and not b.peak_flops > 0:
        raise ConfigError(f"bench.peak_flops={b.peak_flops}: must be > 0 FLOP/s (or null to probe)")


def _axis_name(cfg: DictConfig, key: str) -> str:
    return {"positional": cfg.pos.name, "kernel": cfg.attn.impl, "ffn": cfg.ffn.name, "norm": cfg.norm.name}[key]


def kernel_requirements(cfg: DictConfig, device_type: str) -> Any:
    """What this job asks of its attention kernel (model.kernels.Requirements), from the config."""
    from ..model.kernels import Requirements
    from ..model.layout import resolve_layout
    from ..registry import POSITIONAL

    scheme = POSITIONAL.get(cfg.pos.name)
    return Requirements(
        device=device_type,
        needs_backward="train" in cfg.stages,
        needs_cache="bench" in cfg.stages and bool({"prefill", "decode"} & set(cfg.bench.modes)),
        bias=scheme.needs_bias, rotary=scheme.rotates,
        window=cfg.attn.window is not None or ("train" in cfg.stages and cfg.train.get("eval_window") is not None),
        gqa=resolve_layout(cfg) != cfg.attn.n_heads, softcap=cfg.attn.get("softcap") is not None,
        qk_norm=bool(cfg.norm.get("qk_norm")), sinks=bool(cfg.attn.get("sinks", False)),
        gate=cfg.attn.get("gate", "none") != "none", dropout=cfg.attn.dropout > 0, dtype=str(cfg.device.dtype),
        pos=cfg.pos.name, attn=cfg.attn.name,
    )


def _check_lengths(cfg: DictConfig) -> None:
    """A positional scheme with a length limit (learned: model.context_length) cannot go past it."""
    from ..registry import POSITIONAL

    ctx = POSITIONAL.get(cfg.pos.name).max_length(int(cfg.model.context_length))
    if ctx is None:
        return
    unlimited = [n for n in POSITIONAL.names() if POSITIONAL.get(n).max_length(ctx) is None]
    lens = {"train.seq_len": [cfg.train.seq_len] if "train" in cfg.stages else []}
    if "bench" in cfg.stages:
        extra = cfg.bench.decode_tokens if {"prefill", "decode"} & set(cfg.bench.modes) else 0
        lens["bench.seq_lens"] = [t + extra for t in cfg.bench.seq_lens]
    for key, values in lens.items():
        for t in values:
            if t > ctx:
                raise ConfigError(
                    f"{key}: length {t} > model.context_length={ctx} with pos={cfg.pos.name}; "
                    f"raise model.context_length or use pos=[{', '.join(unlimited)}]"
                )


