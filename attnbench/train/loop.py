"""The training stage: AdamW + warm-up/cosine, clipping, autocast, checkpoints, graceful stop.

`run_train` never raises for a run that went wrong in an expected way: a
non-finite loss ends it as `diverged` (with the step), a signal as
`interrupted` (after saving a checkpoint); the returned dict is the `train`
section of results.json. Logging and evaluation stay outside the timed region.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..config.naming import config_hash
from ..device import autocast
from ..model.attention import max_attention_logit
from ..model.probes import sink_probes
from .checkpoint import (checkpoint_path, init_weights_from, read_checkpoint, remove_stale_temps,
                         restore_checkpoint, save_checkpoint)
from .data import IGNORE, LMData, TextData, prepare_data
from .evaluate import eval_lengths, evaluate, metric_of, sample_text
from .interrupt import GracefulStop, StopRequested
from .resume_rules import check_resumable, resumed_anchor, trained_config
from .schedule import build_optimizer, lr_at

log = logging.getLogger(__name__)

LOSS_WINDOW = 10  # train_loss in the result = mean of the last LOSS_WINDOW steps
# The first steps of each process are warm-up, left out of tokens_per_s: step 0 holds torch.compile's
# compilation (29 s of a 100-step CPU run, a 14.7x underestimate, issue 21), and on a GPU the first steps
# also pay CUDA context, allocator and autotuning costs. Three steps cover a recompilation at step 1.
TIMING_WARMUP_STEPS = 3


@dataclass
class Progress:
    """Counters that survive a resume (saved in the checkpoint)."""

    step: int = 0
    tokens: int = 0
    train_s: float = 0.0  # every step, warm-up included
    warmup_s: float = 0.0  # the warm-up steps of every process (a resumed run compiles again)
    warmup_steps: int = 0
    timed_s: float = 0.0  # the steps after the warm-up: the steady state tokens_per_s is computed on
    timed_steps: int = 0
    recent: list = field(default_factory=list)  # the last LOSS_WINDOW train losses
    last_val: Optional[dict] = None  # {"step", "loss", "acc"} of the latest evaluation
    lr_anchor: Optional[list] = None  # [step, lr]: train.steps changed on resume there (schedule.lr_at)


@dataclass
class Trainer:
    cfg: Any
    model: nn.Module
    forward: nn.Module  # the model, or its torch.compile'd wrapper
    data: LMData
    device: torch.device
    dtype: torch.dtype
    opt: torch.optim.Optimizer
    scaler: Any
    run_dir: Path
    sinks: Any
    val_batches: list
    prog: Progress = field(default_factory=Progress)
    job_id: Optional[str] = None  # the SLURM job that runs this training (recorded in each checkpoint)
    own_only: bool = False  # resume only a checkpoint this SLURM job wrote (an automatic continuation)

    def train_step(self, step: int) -> tuple[float, float, float]:
        """One update; returns (loss, grad norm, lr). Synchronises once (for the NaN check)."""
        tc = self.cfg.train
        x, y = self.data.train_batch(step, int(tc.batch_size), int(tc.seq_len))  # (B, T) each
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        lr = lr_at(step, tc, self.prog.lr_anchor)
        for group in self.opt.param_groups:
            group["lr"] = lr
        with autocast(self.device, self.dtype):
            logits = self.forward(x)  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        clip = float(tc.grad_clip) if tc.grad_clip > 0 else float("inf")
        gnorm = nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        loss_v, gnorm_v = torch.stack([loss.detach().float(), gnorm.float()]).tolist()
        return loss_v, gnorm_v, lr

    def validate(self) -> dict:
        ev = evaluate(self.model, self.val_batches, self.device, self.dtype,
                      pos_buckets=int(self.cfg.train.get("pos_buckets", 0) or 0))  # by_pos: reused at the end
        self.prog.last_val = {"step": self.prog.step, **ev}
        return {"val_loss": ev["loss"], f"val_{self.data.metric_name}": metric_of(self.data, ev)}

    def save(self) -> Path:
        path = checkpoint_path(self.run_dir)
        meta = {"trained_config": trained_config(self.cfg), "train_steps": int(self.cfg.train.steps),
                "slurm_job_id": self.job_id}
        save_checkpoint(path, self.model, self.opt, self.scaler, asdict(self.prog), config_hash(self.cfg), meta)
        return path

    def resume(self) -> Optional[int]:
        """Load the run directory's checkpoint into this trainer; the step it resumes from, or None."""
        path = checkpoint_path(self.run_dir)
        obj = read_checkpoint(path) if path.is_file() else None
        if obj is not None and self.own_only and obj.get("slurm_job_id") != self.job_id:
            # SLURM restarted this job before its first checkpoint: the file is an earlier launch's
            log.warning("%s was written by SLURM job %s, not this job %s: starting from step 0",
                        path, obj.get("slurm_job_id"), self.job_id)
            obj = None
        if obj is None:
            log.info("resuming, but %s has no checkpoint of this job; starting from step 0", self.run_dir)
            self._rewind_history(0)
            return None
        check_resumable(path, obj, self.cfg, config_hash(self.cfg))
        restore_checkpoint(path, obj, self.model, self.opt, self.scaler)
        self.prog = Progress(**obj["counters"])
        self.prog.lr_anchor = resumed_anchor(obj, self.cfg)
        log.info("resumed from %s at step %d", path, self.prog.step)
        self._rewind_history(self.prog.step)
        return self.prog.step

    def _rewind_history(self, step: int) -> None:
        """A crash (kill -9) after the last checkpoint left steps beyond it in the logged history;
        this run logs them again, so the sinks forget them first (metrics.jsonl, the W&B mirror)."""
        rewind = getattr(self.sinks, "rewind", None)
        if rewind is not None:
            rewind(step)

    def run(self, stop: GracefulStop) -> tuple[str, Optional[str], Optional[int]]:
        """Train to train.steps; returns (status, error, diverged_step)."""
        tc, p = self.cfg.train, self.prog
        bar = tqdm(total=int(tc.steps), initial=p.step, unit="step", dynamic_ncols=True,
                   disable=not sys.stderr.isatty())
        tokens_per_step = int(tc.batch_size) * int(tc.seq_len)
        first = p.step
        try:
            for step in range(p.step, int(tc.steps)):
                t0 = time.perf_counter()
                loss, gnorm, lr = self.train_step(step)
                dt = time.perf_counter() - t0
                p.step, p.tokens, p.train_s = step + 1, p.tokens + tokens_per_step, p.train_s + dt
                if step - first < TIMING_WARMUP_STEPS:
                    p.warmup_s, p.warmup_steps = p.warmup_s + dt, p.warmup_steps + 1
                else:
                    p.timed_s, p.timed_steps = p.timed_s + dt, p.timed_steps + 1
                if not math.isfinite(loss):
                    return "diverged", f"train loss is {loss} at step {p.step} (train.lr={tc.lr})", p.step
                p.recent = (p.recent + [loss])[-LOSS_WINDOW:]
                self.after_step({"train_loss": loss, "lr": lr, "tokens_per_s": tokens_per_step / dt,
                                 "grad_norm": gnorm}, bar)
                if stop.requested:
                    path = self.save()
                    return "interrupted", (f"stopped by {stop.requested} at step {p.step}; checkpoint {path}; "
                                           "rerun with train.resume=true to continue"), None
        finally:
            bar.close()
        return "ok", None, None

    def after_step(self, metrics: dict, bar: tqdm) -> None:
        """Evaluation, logging, progress bar and periodic checkpoints (all outside the timed step)."""
        tc, step = self.cfg.train, self.prog.step
        if (tc.eval_every > 0 and step % tc.eval_every == 0) or step == tc.steps:
            metrics.update(self.validate())
            log.info("step %d/%d: %s", step, tc.steps, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        if self.sinks is not None and (step % tc.log_every == 0 or "val_loss" in metrics):
            self.sinks.log(metrics, step)
        bar.set_postfix(loss=f"{metrics['train_loss']:.4f}", tok_s=f"{metrics['tokens_per_s']:.0f}", refresh=False)
        bar.update(1)
        if tc.checkpoint_every > 0 and step % tc.checkpoint_every == 0:
            self.save()


def run_train(cfg: Any, model: nn.Module, device: torch.device, dtype: torch.dtype, run_dir: Path,
              sinks: Any, data: Optional[LMData] = None, resume: bool = False, job_id: Optional[str] = None,
              own_only: bool = False) -> dict:
    """Train `model` per `cfg.train` on `cfg.data`; returns the `train` section of results.json.
    Resumes from the run directory's checkpoint with train.resume=true or `resume` (a continued SLURM
    job: `own_only`, only a checkpoint that SLURM job `job_id` wrote)."""
    t_start = time.perf_counter()
    data = data if data is not None else prepare_data(cfg)
    tc = cfg.train
    if n := remove_stale_temps(checkpoint_path(run_dir)):
        log.warning("removed %d temporary checkpoint file(s) of a save that was killed", n)
    model.to(device).train()
    init_from = str(init_weights_from(model, tc.init_from)) if tc.get("init_from") else None  # before resume
    opt, opt_name = build_optimizer(model, tc, device)
    trainer = Trainer(
        cfg=cfg, model=model, forward=torch.compile(model) if cfg.device.compile else model, data=data,
        device=device, dtype=dtype, opt=opt, run_dir=Path(run_dir), sinks=sinks,
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        val_batches=data.val_batches(int(tc.eval_batches), int(tc.batch_size), int(tc.seq_len)),
        job_id=job_id, own_only=own_only and not tc.resume,
    )
    resumed_from = trainer.resume() if tc.resume or resume else None
    with GracefulStop() as stop:
        status, error, diverged_step = trainer.run(stop)
        checkpoint = None
        if status == "ok":  # saved before the final evaluation: a signal during it loses no training
            checkpoint = trainer.save() if trainer.prog.step != resumed_from else checkpoint_path(run_dir)
        elif status == "interrupted":
            checkpoint = checkpoint_path(trainer.run_dir)
        status, error, quality = _final_quality(trainer, stop, status, error, checkpoint)
        res = {"status": status, "error": error, "optimizer": opt_name, "resumed_from_step": resumed_from,
               "stopped_by": stop.requested if status == "interrupted" else None,
               "data": data.describe(), "checkpoint": str(checkpoint) if checkpoint else None,
               "diverged_step": diverged_step, "init_from": init_from, "lr_anchor": trainer.prog.lr_anchor,
               **quality}
    p = trainer.prog
    res.update(steps=p.step, tokens=p.tokens, train_s=p.train_s, wall_s=time.perf_counter() - t_start,
               train_loss=sum(p.recent) / len(p.recent) if p.recent else None, **throughput(p, tc))
    return res


def _final_quality(tr: Trainer, stop: GracefulStop, status: str, error: Optional[str],
                   checkpoint: Optional[Path]) -> tuple[str, Optional[str], dict]:
    """(status, error, validation figures). A signal during the final evaluation stops it at once:
    the run is `interrupted`, and resuming it (train.resume=true, or SLURM's next attempt) trains no
    step and evaluates again."""
    if status != "ok":
        return status, error, _quality(tr, status)
    try:
        with stop.at_once():
            return status, error, _quality(tr, status)
    except StopRequested as exc:
        error = (f"stopped by {exc} during the final evaluation (training finished at step {tr.prog.step}); "
                 f"checkpoint {checkpoint}; rerun with train.resume=true to evaluate it")
        return "interrupted", error, _quality(tr, "interrupted")


def throughput(p: Progress, tc: Any) -> dict:
    """tokens_per_s over the steps after the warm-up (steady state), with the warm-up's time and the
    number of steps timed. A run too short to have steps after its warm-up falls back to every step
    and says so (`tokens_per_s_includes_warmup`)."""
    tokens_per_step = int(tc.batch_size) * int(tc.seq_len)
    steady = p.timed_steps > 0 and p.timed_s > 0
    if steady:
        tps = p.timed_steps * tokens_per_step / p.timed_s
    else:
        tps = p.tokens / p.train_s if p.train_s > 0 else None
    return {"tokens_per_s": tps, "tokens_per_s_includes_warmup": not steady, "warmup_s": p.warmup_s,
            "warmup_steps": p.warmup_steps, "timed_steps": p.timed_steps, "timed_s": p.timed_s}


def _quality(tr: Trainer, status: str) -> dict:
    """Validation figures; at every length and with a sample only when training finished."""
    data, cfg, p = tr.data, tr.cfg, tr.prog
    out: dict = {"metric_name": data.metric_name, "val_loss": None, "metric": None,
                 "val_loss_by_len": {}, "metric_by_len": {}, "val_na": {}, "val_loss_by_pos": {}, "sample": None}
    if status == "diverged":
        return out
    if status == "ok":
        known = p.last_val if p.last_val and p.last_val["step"] == p.step else None
        if known is None:
            tr.validate()
            known = p.last_val
        by_len, metric_by_len, na, by_pos = eval_lengths(tr.model, data, cfg, tr.device, tr.dtype, known)
        out.update(val_loss_by_len=by_len, metric_by_len=metric_by_len, val_na=na, val_loss_by_pos=by_pos)
        # Finding 10 (Wortsman et al. 2023): the largest attention logit, on the first validation batch
        out["max_attn_logit"] = max_attention_logit(tr.model, tr.val_batches[0][0].to(tr.device))
        # Finding 11 (Qiu et al. 2025): attention on the first token, massive activations, gate values
        out.update(sink_probes(tr.model, tr.val_batches[0][0].to(tr.device)))
        if isinstance(data, TextData) and cfg.train.sample_tokens > 0:
            out.update(_sample(tr, data))
    if p.last_val is not None:
        out["val_loss"] = p.last_val["loss"]
        out["metric"] = metric_of(data, p.last_val)
        if data.metric_name == "bpc":
            out["perplexity"] = math.exp(p.last_val["loss"])
    return out


def _sample(tr: Trainer, data: TextData) -> dict:
    kernel = tr.model.blocks[0].attn.kernel
    if not getattr(kernel, "supports_cache", True):
        return {"sample_na": f"attn.impl={tr.cfg.attn.impl} has no KV cache"}
    text = sample_text(tr.model, data, int(tr.cfg.train.sample_tokens), int(tr.cfg.model.context_length),
                       tr.device, tr.dtype, int(tr.cfg.seed))
    return {"sample": text}
