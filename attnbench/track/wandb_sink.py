"""Weights & Biases sink: one W&B run per job, mirroring metrics.jsonl and results.json.

Local files stay the source of truth; this sink only mirrors them and never takes a
job down or hangs a sweep:
- mode = logger.mode, else $WANDB_MODE, else offline (an explicit `init(mode=...)`
  overrides WANDB_MODE inside wandb, so we resolve it ourselves);
- online without credentials logs offline instead (never an interactive prompt);
  online without network is bounded by logger.init_timeout_s, then falls back to offline;
- every W&B error becomes one warning; the first one in log()/summary() stops mirroring;
- close() finishes the run with a non-zero exit code for a failed job and waits (bounded)
  until the run's `.wandb` file holds its exit record, because `finish()` can return earlier.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from . import wandb_rules

log = logging.getLogger(__name__)

MAX_TAG_LEN = 64  # wandb.init rejects longer tags
SUMMARY_SKIP = {"config", "bench", "schema"}  # sent as config / per-row keys / not a figure
_online_failed = False  # set when online init failed once in this process


# ----------------------------------------------------------------------------- run identity
def resolve_mode(cfg: Any) -> str:
    """logger.mode, else $WANDB_MODE, else offline (the rule lives in wandb_rules.py)."""
    return wandb_rules.resolve_mode(cfg.logger.mode)


def sweep_dir() -> Optional[Path]:
    """The multirun directory when running inside a Hydra multirun job (also under its launchers)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return None
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None


def run_group(cfg: Any) -> Optional[str]:
    """logger.group, else the sweep ("<experiment>:multirun/<date>/<time>"), else the experiment name."""
    if cfg.logger.group:
        return str(cfg.logger.group)
    sweep = sweep_dir()
    if sweep is not None:
        return wandb_rules.sweep_group(sweep, cfg.experiment)
    return str(cfg.experiment) if cfg.experiment else None


def run_tags(cfg: Any) -> list[str]:
    from ..config.compose import AXES

    tags = [f"{axis}={cfg[axis].name}" for axis in AXES] + [str(t) for t in cfg.logger.tags]
    if cfg.experiment:
        tags.append(f"experiment={cfg.experiment}")
    too_long = [t for t in tags if len(t) > MAX_TAG_LEN]
    if too_long:
        log.warning("W&B tags are cut to %d characters: %s", MAX_TAG_LEN, too_long)
    return list(dict.fromkeys(t[:MAX_TAG_LEN] for t in tags))


def flatten(obj: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """{"attn": {"n_heads": 4}} -> {"attn.n_heads": 4}; lists stay values."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        out.update(flatten(value, name, sep) if isinstance(value, dict) else {name: value})
    return out


def flat_config(cfg: Any) -> dict[str, Any]:
    """The resolved config with dotted keys (run table, parallel coordinates, grouping)."""
    from ..config.spec import resolve_spec

    spec = resolve_spec(cfg)  # (the sink opens before the data is loaded: the vocabulary is the config's)
    data = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    data.pop("hydra", None)
    out = flatten(data)
    out["attn.n_kv_heads_resolved"] = spec.n_kv_heads  # n_kv_heads is null for MHA: plot this one
    out["variant"] = spec.variant
    out["config_hash"] = spec.config_hash
    return out


# ----------------------------------------------------------------------------- what is logged
def _bench_key(row: dict) -> str:
    return f"bench/{row.get('mode')}/T{row.get('seq_len')}"


def summary_figures(results: dict) -> dict[str, Any]:
    """results.json as W&B summary keys: bench/<mode>/T<len>/<key>, model/..., train/..., env/..., status."""
    out: dict[str, Any] = {}
    for key, value in results.items():
        if key in SUMMARY_SKIP:
            continue
        out.update(flatten(value, key, "/") if isinstance(value, dict) else {key: value})
    for row in results.get("bench") or []:
        base = _bench_key(row)
        out.update({f"{base}/{k}": v for k, v in row.items() if k not in ("mode", "seq_len")})
    # Scalars only: None values and lists (all kept in results.json) make poor summary columns.
    return {k: v for k, v in out.items() if v is not None and not isinstance(v, (list, tuple))}


def bench_table(rows: list[dict]) -> Any:
    import wandb

    from .results import BENCH_KEYS

    columns = list(BENCH_KEYS) + sorted({k for r in rows for k in r} - set(BENCH_KEYS))
    return wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])


# ----------------------------------------------------------------------------- credentials
has_credentials = wandb_rules.has_credentials  # kept here too: the tests and older callers import it from the sink


def _source_git_root() -> Optional[str]:
    """The attnbench checkout, so W&B records its commit even when runs/ is outside it."""
    root = Path(__file__).resolve().parent.parent
    return str(root) if (root / ".git").exists() else None


# ----------------------------------------------------------------------------- the sink
def init_kwargs(cfg: Any, run_dir: Path, mode: str) -> dict[str, Any]:
    import wandb

    from ..config.naming import variant_name

    lc = cfg.logger
    git_root = _source_git_root()
    settings = wandb.Settings(
        init_timeout=float(lc.init_timeout_s),  # online without network: fail after this, not ~90 s
        finish_timeout=float(lc.finish_timeout_s),  # the local .wandb file keeps whatever did not upload
        quiet=True, console="off",  # the job's own log already captures the console
        x_disable_stats=not lc.system_stats,  # a sampler process would perturb CPU timings
        git_root=git_root, disable_git=git_root is None,
    )
    return dict(
        project=lc.project, entity=lc.entity, name=variant_name(cfg), group=run_group(cfg),
        job_type="+".join(cfg.stages) or "build", tags=run_tags(cfg), config=flat_config(cfg),
        dir=str(run_dir), mode=mode, reinit="finish_previous", settings=settings,
    )


class WandbSink:
    """A Sink (see sinks.py) backed by one W&B run."""

    def __init__(self, run: Any, wait_s: float):
        self.run = run
        self.wait_s = wait_s
        self._mirroring = True
        self._closed = False
        self._last_step = -1  # W&B drops (with a warning) a step below the run's current one

    @classmethod
    def create(cls, cfg: Any, run_dir: Path, resume: bool = False) -> Optional["WandbSink"]:
        """Start the job's W&B run; None when disabled or when W&B cannot start at all. With `resume`,
        continue the run directory's latest W&B run (its id), so that a resumed job is one W&B run."""
        global _online_failed
        mode = resolve_mode(cfg)
        if mode == "disabled":
            return None
        if mode == "online" and _online_failed:
            mode = "offline"  # a sequential sweep pays the init timeout once, not once per job
        mode = wandb_rules.usable_mode(mode, f"logger.mode={mode}",
                                       f"upload later with `wandb sync {run_dir}/wandb/offline-run-*`")
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        run_id = previous_run_id(run_dir) if resume else None
        run = _start(cfg, run_dir, mode, run_id)
        if run is None and mode == "online":
            _online_failed = True
            log.warning("W&B online init failed within logger.init_timeout_s=%s; logging offline instead "
                        "(and for the rest of this process)", cfg.logger.init_timeout_s)
            run = _start(cfg, run_dir, "offline", run_id)
        return cls(run, wait_s=float(cfg.logger.finish_timeout_s)) if run is not None else None

    def identity(self) -> dict[str, Any]:
        """{"wandb_run_id": id} for results.json: a job re-run without resume starts a new W&B run (a new id)
        in the same directory, and the report's dashboard must take this one, not the earlier one's."""
        return {"wandb_run_id": str(self.run.id)}

    def _guard(self, what: str, fn: Any) -> None:
        if not self._mirroring:
            return
        try:
            fn()
        except Exception as exc:  # mirror only: warn once, stop mirroring, keep the job going
            self._mirroring = False
            log.warning("W&B %s failed; not mirroring the rest of this job (local files are complete): %s",
                        what, _one_line(exc))

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if int(step) <= self._last_step:  # already in this W&B run's history: never twice, never backwards
            log.debug("W&B: step %s not mirrored (the run is at step %d)", step, self._last_step)
            return
        self._last_step = int(step)
        self._guard("log", lambda: self.run.log(dict(metrics), step=int(step)))

    def rewind(self, step: int) -> None:
        """A resumed job restarts from a checkpoint at `step`: mirror only the steps after it.

        The resumed attempt continues the earlier attempt's run id (WandbSink.create). Offline,
        it writes a new folder whose history starts at step + 1; the earlier attempt's folder keeps
        what it logged (up to the checkpoint, when it stopped gracefully). A run that W&B itself
        resumed (online) already holds steps up to the crash and refuses lower ones: those stay as
        the crashed attempt logged them, and mirroring goes on from the run's current step
        (metrics.jsonl has the resumed values)."""
        floor = int(step)
        try:
            if self.run.resumed and int(self.run.starting_step) - 1 > floor:
                log.warning("W&B run %s was resumed at step %d > checkpoint step %d: W&B keeps the crashed "
                            "attempt's values for steps %d..%d (metrics.jsonl has the resumed ones)",
                            self.run.id, self.run.starting_step, floor, floor + 1, self.run.starting_step - 1)
                floor = int(self.run.starting_step) - 1
        except Exception as exc:  # an attribute of a wandb version we do not know: keep the checkpoint step
            log.debug("W&B resumed-run check failed: %s", exc)
        self._last_step = floor

    def summary(self, results: dict[str, Any]) -> None:
        def _write() -> None:
            if isinstance(results.get("config"), dict):  # stages may fix values (e.g. the vocabulary)
                self.run.config.update(flatten(results["config"]), allow_val_change=True)
            self.run.summary.update(summary_figures(results))
            if results.get("bench"):
                self.run.log({"bench/table": bench_table(results["bench"])})

        self._guard("summary", _write)

    def close(self, status: str) -> None:
        """Finish the run (exit code 1 unless ok) and wait until its file is complete. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.run.finish(exit_code=0 if status == "ok" else 1)
        except Exception as exc:
            log.warning("W&B finish failed (the run's local .wandb file may be incomplete): %s", _one_line(exc))
            return
        path = Path(self.run.settings.sync_file)
        if not wait_for_exit_record(path, self.wait_s):
            log.warning("W&B run file %s has no exit record after %.0f s", path, self.wait_s)
        else:
            if self.run.settings.mode == "offline":
                log.info("W&B offline run: %s (upload with `wandb sync %s`)", path.parent, path.parent)
            cache_keys(path)


def cache_keys(path: Path) -> None:
    """Write the run's key names beside the job (wandb_keys.py), so that `--wandb-dashboard` over a large
    sweep never parses this file again (about 0.1-0.3 s for a run of 3,000 steps)."""
    if path.parent.parent.name != "wandb":  # WANDB_DIR elsewhere: the report finds it under the job only
        return
    from .wandb_keys import read_keys

    try:
        read_keys(path.parents[2])
    except Exception as exc:  # a cache: the dashboard reads the file instead
        log.warning("W&B run keys not cached for %s: %s", path, exc)


def previous_run_id(run_dir: Path) -> Optional[str]:
    """The id of the latest W&B run under run_dir/wandb, or None. Read from the file's name
    (run-<id>.wandb): the folder's last field is an attempt number when two started in one second."""
    from .wandb_reader import find_run_files

    files = find_run_files(run_dir)
    return files[-1].stem.removeprefix("run-") if files else None


def _start(cfg: Any, run_dir: Path, mode: str, run_id: Optional[str] = None) -> Any:
    """wandb.init; with `run_id`, resume that run. Offline, each attempt is a new folder with the same
    id, and `wandb sync` uploads them in order as one run."""
    try:
        import wandb

        extra = {"id": run_id, "resume": "allow"} if run_id else {}
        return wandb.init(**init_kwargs(cfg, run_dir, mode), **extra)
    except Exception as exc:  # includes wandb's own timeout and "no API key" errors
        log.warning("W&B %s init failed: %s", mode, _one_line(exc))
        return None


def wait_for_exit_record(path: Path, timeout_s: float) -> bool:
    """finish() can return before wandb-core wrote the end of the file: poll for the exit record."""
    from .wandb_reader import has_exit_record

    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        if has_exit_record(path):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
