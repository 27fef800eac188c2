"""The Hydra app: compose → run_job → print the summary. Thin on purpose."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .config import conf_dir
from .job import run_job
from .report.console import format_results
from .sweep.plugins import register_launchers

log = logging.getLogger("attnbench")


register_launchers()  # hydra/launcher=slurm_gpu under an editable install too (sweep/plugins.py)


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base=None)
def app(cfg: DictConfig) -> str:
    hc = HydraConfig.get()
    res = run_job(cfg, Path(hc.runtime.output_dir))
    failed_run = hc.mode == RunMode.RUN and res["status"] != "ok"
    # A failed single run prints its error once, on stderr (below); a sweep's job prints it with the rest.
    print(format_results({**res, "error": None} if failed_run else res), flush=True)
    if failed_run:
        # Single run: fail with the one-line error. In a sweep we return instead, so the
        # other jobs go on (a sys.exit in a job would abort the whole multirun).
        print(f"attnbench: error: {res['error']}", file=sys.stderr)
        sys.exit(1)
    return res["status"]
