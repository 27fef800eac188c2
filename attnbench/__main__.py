"""`python -m attnbench [overrides]` and the `attnbench` console script.

Before handing over to Hydra, single runs are composed and validated once so a
bad value yields one line naming the field and the allowed values (Hydra's own
messages span several lines). `attnbench report PATH` forwards to the report,
`attnbench doctor [overrides]` to the node check (attnbench/doctor.py).
"""
from __future__ import annotations

import os
import sys

from .config import ConfigError, load_config

# Hydra flags after which composing ourselves would be wrong or useless.
_PASSTHROUGH_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "--version", "--shell-completion")


def precheck(argv: list[str]) -> None:
    if any(a.split("=")[0] in _PASSTHROUGH_FLAGS for a in argv):
        return
    overrides = [a for a in argv if not a.startswith("-") and not a.lstrip("+~").startswith("hydra")]
    if any(a in ("-m", "--multirun") for a in argv):
        from .sweep.precheck import check_sweep_overrides

        check_sweep_overrides(argv_overrides(argv))  # every job composed and validated: nothing launches if one is bad
    else:
        load_config(overrides)


def argv_overrides(argv: list[str]) -> list[str]:
    """The overrides of a command line, Hydra's own included (hydra/launcher=..., hydra.sweep.dir=...):
    the sweep check composes the launching config as Hydra will."""
    return [a for a in argv if not a.startswith("-")]


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["report"]:
        from .report.cli import main as report_main

        sys.exit(report_main(argv[1:]))
    if argv[:1] == ["doctor"]:
        from .doctor import main as doctor_main

        sys.exit(doctor_main(argv[1:]))
    try:
        precheck(argv)
    except ConfigError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        for line in str(exc).splitlines():  # a refused sweep: one line per distinct error
            print(f"attnbench: error: {line}", file=sys.stderr)
        sys.exit(2)
    from .cli import app
    from .sweep.callback import exit_code

    app()
    # A multirun returns here after all jobs ran; the sweep callback knows whether any failed.
    sys.exit(exit_code())


if __name__ == "__main__":
    main()
