"""The W&B rules shared by the job sink (`wandb_sink.py`) and the report run (`report/wandb_run.py`).

One place, so the two can never disagree (a report run in a different group from its jobs is
invisible in W&B's group view):
- mode: explicit (`logger.mode` / `--wandb-mode`), else `$WANDB_MODE`, else offline. An explicit
  `wandb.init(mode=...)` overrides WANDB_MODE inside wandb, so the mode is resolved here;
- credentials: online without an API key logs offline instead, because `wandb.init` would prompt
  for a key forever on a terminal (and fail elsewhere);
- group: a sweep's runs share `multirun/<date>/<time>`, written `<experiment>:multirun/...` when an
  experiment is set.
This module imports nothing from the package, so both sides (and config validation) can use it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

LOGGER_MODES = ("offline", "online", "disabled")  # `logger.mode`, `--wandb-mode`, $WANDB_MODE
_LEGACY = {"dryrun": "offline", "run": "online"}  # wandb's old spellings, still accepted in WANDB_MODE


def resolve_mode(mode: Optional[str]) -> str:
    """The explicit mode, else $WANDB_MODE, else offline; an unknown $WANDB_MODE logs offline."""
    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    mode = _LEGACY.get(mode, mode)
    if mode not in LOGGER_MODES:
        log.warning("WANDB_MODE=%s: not one of %s; logging offline", mode, list(LOGGER_MODES))
        return "offline"
    return mode


def has_credentials() -> bool:
    """Whether online W&B would find an API key without prompting (env, .netrc, settings)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:  # wandb's own lookup, told not to prompt; an internal module, hence the fallback
        import wandb
        from wandb.sdk.lib import wbauth

        host = os.environ.get("WANDB_BASE_URL") or wandb.Settings().base_url
        found = wbauth.authenticate_session(host=host, source="attnbench", prompt=False, update_session=False)
        return found is not None
    except Exception as exc:
        log.debug("W&B credential lookup failed: %s", exc)
        return False


def usable_mode(mode: str, what: str, hint: str) -> str:
    """`mode`, except online without credentials: offline, with a warning naming the setting (`what`)
    and how to upload later (`hint`)."""
    if mode == "online" and not has_credentials():
        log.warning("%s but no W&B API key (WANDB_API_KEY or `wandb login`): logging offline; %s", what, hint)
        return "offline"
    return mode


def sweep_group(sweep: Path, experiment: Optional[str]) -> str:
    """The W&B group of a sweep directory: `multirun/<date>/<time>`, prefixed `<experiment>:` when set."""
    tail = "/".join(Path(sweep).resolve().parts[-3:])  # multirun/<date>/<time> for the default layout
    return f"{experiment}:{tail}" if experiment else tail
