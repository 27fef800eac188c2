"""Hydra only instantiates launchers defined under the `hydra_plugins` package, and discovers their
configs by importing it; the launcher itself is attnbench.sweep.slurm_launcher (docs/sweeps.md)."""
from attnbench.sweep.slurm_launcher import SlurmLauncher, register


class AttnbenchSlurmLauncher(SlurmLauncher):
    """hydra/launcher=attnbench_slurm (the base of conf/hydra/launcher/slurm_gpu.yaml)."""


register(f"{__name__}.AttnbenchSlurmLauncher")
