"""Typed config schema, composition (`load_config`) and cross-axis validation.

Hydra composes the YAML files in `conf/`; the dataclasses below are registered as
the schema so a wrong type or an unknown key fails at composition time. Local
invariants live in `validate()` (called once per job, before anything is
allocated) and every failure is a `ConfigError` with one line that names the
config key and the allowed values.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A bad configuration; the message is one line naming the field."""


# ----------------------------------------------------------------------------- schema
@dataclass
class AttnConfig:
    name: str = "mha"
    n_heads: int = 4
    n_kv_heads: Optional[int] = None  # null = n_heads (MHA)
    window: Optional[int] = None  # null = full causal
    impl: str = "sdpa"
    qkv_bias: bool = False
    dropout: float = 0.0


@dataclass
class PosConfig:
    name: str = "learned"
    base: float = 10000.0  # RoPE base


@dataclass
class NormConfig:
    name: str = "layernorm"
    placement: str = "pre"
    eps: float = 1e-5


@dataclass
class FFNConfig:
    name: str = "gelu"
    mult: float = 4.0  # hidden = mult * d_model for non-gated FFNs
    multiple_of: int = 64  # gated FFNs round their 2/3 hidden size up to this


@dataclass
class ModelConfig:
    name: str = "tiny"
    d_model: int = 64
    n_layers: int = 2
    vocab_size: int = 256
    context_length: int = 512
    dropout: float = 0.0
    tie_embeddings: bool = True
    # Std of the normal init of every matrix (GPT-2: 0.02; residual projections get /sqrt(2·layers)).
    # 0.02 suits widths in the hundreds; the `tiny` preset uses 1/sqrt(d_model) (see conf/model/tiny.yaml).
    init_std: float = 0.02


@dataclass
class DeviceConfig:
    name: str = "auto"
    dtype: str = "float32"
    compile: bool = False
    threads: Optional[int] = None  # null = leave torch's default


@dataclass
class BenchConfig:
    name: str = "default"
    modes: list = field(default_factory=lambda: ["forward", "train_step", "prefill", "decode"])
    batch_size: int = 4
    seq_lens: list = field(default_factory=lambda: [64, 128])
    decode_tokens: int = 16
    warmup: int = 2
    repeats: int = 10
    memory: str = "auto"  # auto (cuda counter / CPU subprocess) | subprocess | none; see bench/memory.py
    peak_flops: Optional[float] = None  # override the measured matmul peak (FLOP/s)


@dataclass
class TrainConfig:
    name: str = "default"
    steps: int = 1500
    batch_size: int = 32
    seq_len: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.95
    eval_every: int = 250
    eval_batches: int = 8
    eval_seq_lens: list = field(default_factory=list)
    log_every: int = 1  # metrics.jsonl / W&B every N steps (eval steps always)
    checkpoint_every: int = 0  # 0 = only on interrupt and at the end
    resume: bool = False
    sample_tokens: int = 200


@dataclass
class DataConfig:
    name: str = "synthetic"
    path: Optional[str] = None
    url: Optional[str] = None
    sha256: Optional[str] = None
    cache_dir: Optional[str] = None
    tokenizer: str = "char"
    vocab_size: int = 17  # synthetic: vocabulary (0 = padding; keys and values split the rest)
    n_pairs: int = 4  # synthetic: key-value pairs per sequence (sequence length = train.seq_len)
    n_queries: Optional[int] = 16  # synthetic: null = n_pairs
    val_fraction: float = 0.1


@dataclass
class LoggerConfig:
    name: str = "wandb"
    mode: Optional[str] = None  # null = $WANDB_MODE or offline
    project: str = "attnbench"
    entity: Optional[str] = None
    tags: list = field(default_factory=list)
    group: Optional[str] = None  # null = the sweep directory (multirun), else the experiment name
    init_timeout_s: float = 30.0  # online without network: give up (and log offline) after this
    finish_timeout_s: float = 60.0  # bound on the end-of-run upload and on waiting for the local file
    system_stats: bool = False  # W&B's CPU/GPU sampler; off by default so it cannot perturb CPU timings


@dataclass
class Config:
    attn: AttnConfig = field(default_factory=AttnConfig)
    pos: PosConfig = field(default_factory=PosConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    ffn: FFNConfig = field(default_factory=FFNConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    experiment: Optional[str] = None
    stages: list = field(default_factory=lambda: ["bench", "train"])
    seed: int = 0
    resume: bool = False  # skip this job if its run dir already holds an ok result for this config


def register_schema() -> None:
    ConfigStore.instance().store(name="attnbench_schema", node=Config)


register_schema()

# ----------------------------------------------------------------------------- composition
CONF_DIR_CANDIDATES = (
    Path(__file__).resolve().parent / "conf",  # wheel: conf/ shipped as attnbench.conf
    Path(__file__).resolve().parent.parent / "conf",  # source checkout / editable install
)

# Each ablation axis is a Hydra config group whose chosen option is stored in `<group>.name`.
AXES = ("attn", "pos", "norm", "ffn", "model")
GROUPS = AXES + ("device", "bench", "train", "data", "logger", "experiment")


def conf_dir() -> Path:
    for cand in CONF_DIR_CANDIDATES:
        if (cand / "config.yaml").is_file():
            return cand
    raise FileNotFoundError("attnbench: cannot find conf/config.yaml next to the package")


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def load_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose `conf/` exactly as the CLI does, apply overrides, validate."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    check_group_overrides(overrides)
    if GlobalHydra.instance().is_initialized():  # e.g. called from inside a Hydra app
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            cfg = compose(config_name="config", overrides=list(overrides))
    except ConfigError:
        raise
    except Exception as exc:  # Hydra/OmegaConf errors are multi-line: keep one line
        raise ConfigError(one_line_error(exc)) from exc
    validate(cfg)
    return cfg


def check_group_overrides(overrides: Sequence[str]) -> None:
    """Reject `group=unknown` (also inside sweep lists) with the allowed values."""
    for ov in overrides:
        key, sep, value = ov.lstrip("+~").partition("=")
        if not sep or key not in GROUPS:
            continue
        allowed = group_options(key)
        for v in value.split(","):
            v = v.strip()
            if v and v != "null" and v not in allowed:
                raise ConfigError(f"{key}={v}: unknown option; choose from [{', '.join(allowed)}]")


def one_line_error(exc: BaseException) -> str:
    """Flatten a Hydra/OmegaConf exception chain into one line naming the key."""
    from omegaconf.errors import OmegaConfBaseException

    for e in (exc, exc.__cause__, exc.__context__):
        if isinstance(e, OmegaConfBaseException) and getattr(e, "full_key", None):
            msg = str(getattr(e, "msg", e)).splitlines()[0]
            schema = getattr(e, "object_type", None)
            if msg.startswith("Key ") and dataclasses.is_dataclass(schema):  # a typo'd key: list the real ones
                msg = f"unknown key; choose from [{', '.join(f.name for f in dataclasses.fields(schema))}]"
            return f"{e.full_key}: {msg}"
    return " ".join(str(exc).split())


# ----------------------------------------------------------------------------- validation
def _choose(key: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value}: not allowed; choose from [{', '.join(map(str, allowed))}]")


def _positive(key: str, value: Optional[int], allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value}: must be an integer >= 1")


def resolve_layout(cfg: DictConfig) -> int:
    """The number of KV heads implied by `attn.name` and `attn.n_kv_heads`."""
    a = cfg.attn
    n_kv = a.n_kv_heads
    if a.name == "mqa":
        if n_kv not in (None, 1):
            raise ConfigError(f"attn.n_kv_heads={n_kv}: attn=mqa uses exactly 1 KV head (use attn=gqa)")
        return 1
    if a.name in ("mha", "local"):
        if n_kv not in (None, a.n_heads):
            raise ConfigError(
                f"attn.n_kv_heads={n_kv}: attn={a.name} uses n_kv_heads = attn.n_heads ({a.n_heads}); use attn=gqa"
            )
        return a.n_heads
    return a.n_heads if n_kv is None else n_kv  # gqa


def validate(cfg: DictConfig) -> None:
    """Local and cross-axis checks; raises ConfigError with a one-line message."""
    from . import registry
    from .device import resolve_device

    m, a = cfg.model, cfg.attn
    _check_known_keys(cfg)
    for group in AXES:
        name = cfg[group].name
        opts = group_options(group)
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
    if cfg.pos.name == "rope" and (m.d_model // a.n_heads) % 2:
        raise ConfigError(f"pos=rope: head_dim={m.d_model // a.n_heads} must be even (model.d_model / attn.n_heads)")
    _check_ranges(cfg)
    _choose("norm.placement", cfg.norm.placement, ("pre", "post"))
    _choose("device.dtype", cfg.device.dtype, ("float32", "bfloat16", "float16"))
    if cfg.logger.mode is not None:
        _choose("logger.mode", cfg.logger.mode, ("offline", "online", "disabled"))
    for stage in cfg.stages:
        _choose("stages", stage, ("bench", "train"))
    for mode in cfg.bench.modes:
        _choose("bench.modes", mode, ("forward", "train_step", "prefill", "decode"))
    _check_bench(cfg.bench)
    for key in ("positional", "kernel", "ffn", "norm"):
        registry.REGISTRIES[key].get(_axis_name(cfg, key))  # unknown names → ConfigError
    device = resolve_device(cfg.device)
    kernel = registry.KERNELS.get(a.impl)()
    problem = kernel.unsupported(cfg, device.type, n_kv)
    if problem:
        raise ConfigError(f"attn.impl={a.impl}: {problem}")
    _check_lengths(cfg)
    if "train" in cfg.stages:
        from .train.checks import check as check_train_and_data

        check_train_and_data(cfg)


def _check_ranges(cfg: DictConfig) -> None:
    """Numeric fields whose bad values would otherwise fail (or silently misbehave) inside torch."""
    for key, value in (("attn.dropout", cfg.attn.dropout), ("model.dropout", cfg.model.dropout)):
        if not 0 <= value < 1:
            raise ConfigError(f"{key}={value}: must be in [0, 1)")
    for key, value in (("ffn.mult", cfg.ffn.mult), ("norm.eps", cfg.norm.eps), ("model.init_std", cfg.model.init_std)):
        if not value > 0:
            raise ConfigError(f"{key}={value}: must be > 0")
    if not cfg.pos.base > 1:
        raise ConfigError(f"pos.base={cfg.pos.base}: must be > 1 (RoPE/sinusoidal frequency base)")
    _positive("ffn.multiple_of", cfg.ffn.multiple_of)
    _positive("device.threads", cfg.device.threads, allow_none=True)


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
    _choose("bench.memory", b.memory, ("auto", "subprocess", "none"))
    if b.peak_flops is not None and not b.peak_flops > 0:
        raise ConfigError(f"bench.peak_flops={b.peak_flops}: must be > 0 FLOP/s (or null to probe)")


def _axis_name(cfg: DictConfig, key: str) -> str:
    return {"positional": cfg.pos.name, "kernel": cfg.attn.impl, "ffn": cfg.ffn.name, "norm": cfg.norm.name}[key]


def _check_lengths(cfg: DictConfig) -> None:
    """Learned positions cannot go past model.context_length."""
    if cfg.pos.name != "learned":
        return
    ctx = cfg.model.context_length
    lens = {"train.seq_len": [cfg.train.seq_len] if "train" in cfg.stages else []}
    if "bench" in cfg.stages:
        extra = cfg.bench.decode_tokens if {"prefill", "decode"} & set(cfg.bench.modes) else 0
        lens["bench.seq_lens"] = [t + extra for t in cfg.bench.seq_lens]
    for key, values in lens.items():
        for t in values:
            if t > ctx:
                raise ConfigError(
                    f"{key}: length {t} > model.context_length={ctx} with pos=learned; "
                    "raise model.context_length or use pos=[none, sinusoidal, rope, alibi]"
                )


# ----------------------------------------------------------------------------- naming
def variant_name(cfg: DictConfig) -> str:
    """Stable run label, e.g. `gqa-alibi-rmsnorm-swiglu-L4-D256` (post-LN adds `_post`)."""
    norm = cfg.norm.name + ("_post" if cfg.norm.placement == "post" else "")
    return f"{cfg.attn.name}-{cfg.pos.name}-{norm}-{cfg.ffn.name}-L{cfg.model.n_layers}-D{cfg.model.d_model}"


def config_hash(cfg: DictConfig) -> str:
    """Hash of the resolved config minus bookkeeping keys, used by sweep resume."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    data.pop("resume", None)
    data.get("train", {}).pop("resume", None)
    data.pop("logger", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _variant_resolver(*, _root_: DictConfig) -> str:
    return variant_name(_root_)


if not OmegaConf.has_resolver("variant"):
    OmegaConf.register_new_resolver("variant", _variant_resolver)
