"""Typed config schema: one dataclass per config group, registered as `attnbench_schema`.

Hydra composes the YAML files in `conf/`; these dataclasses make a wrong type or an
unknown key fail at composition time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any  # list[Any]: OmegaConf reads the annotations at run time

from hydra.core.config_store import ConfigStore

from ..bench.modes import BENCH_MODES


@dataclass
class AttnConfig:
    name: str = "mha"
    n_heads: int = 4
    n_kv_heads: int | None = None  # null = n_heads (MHA)
    window: int | None = None  # null = full causal
    impl: str = "sdpa"
    qkv_bias: bool = False
    dropout: float = 0.0
    softcap: float | None = None  # Gemma 2: scores -> softcap·tanh(scores/softcap); null = off
    gate: str = "none"  # output gating (Qiu et al. 2025, Qwen3-Next): none | headwise | elementwise
    sinks: bool = False  # a learned sink logit per head in every softmax (gpt-oss; StreamingLLM's sink)
    # attn=mla (DeepSeek-V2 Multi-head Latent Attention); null = derived from D = d_model / n_heads
    kv_lora_rank: int | None = None  # latent dims cached per token; null = 4·D
    q_lora_rank: int | None = None  # low-rank query; null = full-rank query projection
    qk_nope_head_dim: int | None = None  # per-head position-free q/k dims; null = D
    rope_head_dim: int | None = None  # decoupled RoPE q/k dims (one key shared by all heads); null = D/2
    v_head_dim: int | None = None  # null = D
    absorb: bool = False  # decode steps fold the up-projections into the query and output
    # attn=diff (Differential Transformer, model/differential.py): null = 0.8 - 0.6·exp(-0.3·(l-1)) per layer l
    lambda_init: float | None = None
    # attn=linear (Katharopoulos et al. 2020, model/linear_attention.py); set by conf/attn/linear.yaml
    feature_map: str | None = None  # elu1 | relu | taylor2
    chunk_size: int | None = None  # tokens per chunk of the parallel (training / prefill) form
    short_conv: int | None = None  # taps of a causal depthwise conv on q, k, v (Based); null = none


@dataclass
class PosConfig:
    name: str = "learned"
    base: float = 10000.0  # RoPE base
    # RoPE context extension (pos=rope only): none | linear (PI) | ntk | yarn | llama3
    scaling: str = "none"
    factor: float = 1.0  # extended length / original_context
    original_context: int | None = None  # the pre-extension length; null = model.context_length
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0  # yarn
    scaling_in_training: bool = True  # false: plain RoPE while training, scaled in eval (extension without fine-tuning)


@dataclass
class NormConfig:
    name: str = "layernorm"
    placement: str = "pre"
    eps: float = 1e-5
    qk_norm: bool = False  # norm.name over head_dim on q and k, before RoPE (Qwen3)


@dataclass
class FFNConfig:
    name: str = "gelu"
    mult: float = 4.0  # hidden = mult * d_model for non-gated FFNs
    multiple_of: int = 64  # gated FFNs round their 2/3 hidden size up to this
    approximate: str = "none"  # GELU of gelu/geglu: none (exact, as PyTorch/nanoGPT) | tanh (GPT-2's gelu_new)


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
    # null = 1/sqrt(d_model), following the width (the `tiny` preset; see conf/model/tiny.yaml).
    init_std: float | None = 0.02
    bias: bool = True  # false: no bias in any Linear or LayerNorm (nanoGPT's bias=False); needs attn.qkv_bias=false
    final_softcap: float | None = None  # Gemma 2: logits -> cap·tanh(logits/cap); null = off


@dataclass
class DeviceConfig:
    name: str = "auto"
    dtype: str = "float32"
    compile: bool = False
    threads: int | None = None  # null = leave torch's default
    # The memory the size check (config/size.py) compares a job's estimate with; null = the device's own
    # (RAM on CPU, within cgroup/ulimit limits; total memory on CUDA). Set it to check a sweep on a login
    # node against the GPUs it will run on.
    memory_gb: float | None = None


@dataclass
class BenchConfig:
    name: str = "default"
    modes: list[Any] = field(default_factory=lambda: list(BENCH_MODES))
    batch_size: int = 4
    seq_lens: list[Any] = field(default_factory=lambda: [64, 128])
    decode_tokens: int = 16
    warmup: int = 2
    repeats: int = 10
    memory: str = "auto"  # auto (cuda counter / CPU subprocess) | subprocess | none; see bench/memory.py
    peak_flops: float | None = None  # override the measured matmul peak (FLOP/s)


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
    eval_seq_lens: list[Any] = field(default_factory=list)
    # val_loss_by_pos: the final validation loss in this many equal buckets of positions, at every
    # evaluation length (where past the training length a positional scheme breaks); 0 = off
    pos_buckets: int = 8
    # StreamingLLM's window attention on a model trained without it: val_loss_by_len (train.seq_len and
    # train.eval_seq_lens) evaluated with this sliding window; training and val_loss as configured. null = off
    eval_window: int | None = None
    log_every: int = 1  # metrics.jsonl / W&B every N steps (eval steps always)
    checkpoint_every: int = 0  # 0 = only on interrupt and at the end
    resume: bool = False
    sample_tokens: int = 200
    init_from: str | None = None  # a checkpoint (or run dir) whose weights start this run: fine-tuning


@dataclass
class DataConfig:
    name: str = "synthetic"
    path: str | None = None
    url: str | None = None
    sha256: str | None = None
    cache_dir: str | None = None
    tokenizer: str = "char"
    # synthetic / mqar / mad: vocabulary (synthetic: 0 = padding; keys and values split the rest); mad: null = MAD's
    vocab_size: int | None = 17
    n_pairs: int = 4  # synthetic / mqar: key-value pairs per sequence (sequence length = train.seq_len)
    n_queries: int | None = 16  # synthetic / mqar: null = n_pairs (mqar: each key once; fewer = a subset)
    val_fraction: float = 0.1
    power_a: float = 0.01  # mqar: query gaps p(g) ∝ (g+1)^(a-1) (Zoology); 1 = uniform
    random_non_queries: bool = True  # mqar: random tokens between the queries (Zoology); false = zeros
    train_pairs: list[Any] | None = None  # mqar: training mixture of pair counts (equal shares); null = n_pairs
    # synthetic / mqar / mad: a fixed training set of this many sequences, read in epochs (train/pool.py);
    # null = a fresh batch every step (mad: MAD's count for the task); 0 = a fresh batch every step
    train_examples: int | None = None
    task: str | None = None  # mad: in_context_recall | fuzzy_in_context_recall | noisy_in_context_recall |
    #   selective_copying | compression | memorization
    # mad: null = MAD's default for data.task (train/mad.py: MAD_DEFAULTS)
    noise_vocab_size: int | None = None
    frac_noise: float | None = None
    k_motif_size: int | None = None
    v_motif_size: int | None = None
    num_tokens_to_copy: int | None = None


@dataclass
class LoggerConfig:
    # Any backend: name, mode, project, tags, group. W&B only: entity and the last three (see track/loggers.py).
    name: str = "wandb"  # the backend, a name in registry.LOGGERS: wandb | none
    mode: str | None = None  # null = $WANDB_MODE or offline
    project: str = "attnbench"
    entity: str | None = None
    tags: list[Any] = field(default_factory=list)
    group: str | None = None  # null = the sweep directory (multirun), else the experiment name
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
    experiment: str | None = None
    stages: list[Any] = field(default_factory=lambda: ["bench", "train"])
    seed: int = 0
    resume: bool = False  # skip this job if its run dir already holds an ok result for this config
    launch_id: str | None = None  # the launch that started this job (track/launch.py); bookkeeping, not hashed


def register_schema() -> None:
    ConfigStore.instance().store(name="attnbench_schema", node=Config)


register_schema()

