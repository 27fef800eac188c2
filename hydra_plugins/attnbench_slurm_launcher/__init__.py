"""attnbench's SLURM launcher, where Hydra looks for plugins (the code lives in attnbench/sweep/slurm_launcher.py)."""
