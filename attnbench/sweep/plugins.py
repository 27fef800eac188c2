"""Make attnbench's Hydra launcher (hydra/launcher=attnbench_slurm, the base of slurm_gpu) known.

Hydra finds plugins by walking the `hydra_plugins` package, which an editable install (`pip install -e .`)
hides behind a path hook that pkgutil cannot walk; importing the plugin module stores its config
(ConfigStore) and Hydra's own `register` makes the class known either way. Both the sweep check
(precheck.py, which composes the launching config before Hydra starts) and the app (cli.py) call this,
so the launcher resolves under every kind of install (tests/test_sweeps.py runs without PYTHONPATH).
"""
from __future__ import annotations


def register_launchers() -> None:
    """Idempotent: Hydra's registry and the ConfigStore are keyed by name."""
    from hydra.core.plugins import Plugins
    from hydra_plugins.attnbench_slurm_launcher.launcher import AttnbenchSlurmLauncher

    Plugins.instance().register(AttnbenchSlurmLauncher)
