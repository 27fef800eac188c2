"""A multirun is refused before any job starts when any of its jobs is invalid (sweep/precheck.py).

In process: the enumeration and composition match Hydra's, the refusal names the bad jobs, a
SLURM sweep is checked for the device its jobs will have. The subprocess tests (slow) run
`python -m attnbench -m ...` and check that nothing was launched."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from attnbench import ConfigError, load_config
from attnbench.config import conf_dir, validate
from attnbench.sweep import check_sweep_overrides
from attnbench.sweep.precheck import NOT_VALIDATED, SweepRefused

TINY = ["stages=[]", "logger=none", "device=cpu"]


def test_a_valid_grid_passes_and_counts_its_jobs():
    assert check_sweep_overrides(["attn=mha,gqa,mqa", "seed=0,1", "train.lr=1e-3,3e-3", *TINY]) == 12
    assert check_sweep_overrides(["experiment=depth_width", "seed=0", "train.lr=1e-3", "logger=none"]) == 4


def test_the_issue_example_is_refused_with_one_line_per_error():
    with pytest.raises(SweepRefused) as err:
        check_sweep_overrides(["attn=gqa,mha", "attn.n_heads=5", "logger=none"])
    assert str(err.value).splitlines() == [
        "model.d_model=64: must be divisible by attn.n_heads=5 [2 of 2 jobs: #0 attn=gqa, #1 attn=mha]",
        "sweep refused: 2 of 2 jobs are invalid; no job was launched"]


def test_a_mixed_grid_is_refused_and_names_the_bad_jobs():
    """Some jobs valid, two distinct errors: each error once, with its jobs; the count of bad jobs."""
    with pytest.raises(SweepRefused) as err:
        check_sweep_overrides(["attn=mha,gqa", "attn.n_heads=4,3", "attn.n_kv_heads=2", "seed=0,1,2,3", *TINY])
    lines = str(err.value).splitlines()
    assert lines == [
        "attn.n_kv_heads=2: attn=mha uses n_kv_heads = attn.n_heads (4); use attn=gqa "
        "[4 of 16 jobs: #0 attn=mha attn.n_heads=4 seed=0, #1 attn=mha attn.n_heads=4 seed=1, "
        "#2 attn=mha attn.n_heads=4 seed=2, and 1 more]",
        "model.d_model=64: must be divisible by attn.n_heads=3 "
        "[8 of 16 jobs: #4 attn=mha attn.n_heads=3 seed=0, #5 attn=mha attn.n_heads=3 seed=1, "
        "#6 attn=mha attn.n_heads=3 seed=2, and 5 more]",
        "sweep refused: 12 of 16 jobs are invalid; no job was launched"]


def test_every_value_is_composed_even_of_keys_validate_never_reads():
    with pytest.raises(SweepRefused, match=r"seed: Value 'x' .* \[1 of 3 jobs: #2 seed=x\]"):
        check_sweep_overrides(["seed=0,1,x", *TINY])


def test_validate_never_reads_the_keys_the_precheck_validates_once():
    """Jobs that differ only in NOT_VALIDATED keys share one validation: guard that validate() reads none."""
    cfg = load_config(["stages=[bench,train]", "logger=none"])
    for key in NOT_VALIDATED:
        OmegaConf.update(cfg, key, "${oc.env:ATTNBENCH_UNSET_FOR_THIS_TEST}")  # reading it would raise
        with pytest.raises(InterpolationResolutionError):
            OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
    validate(cfg)


def test_precheck_composes_each_job_as_hydra_does():
    """The per-group-combination composition plus value overrides gives each job's Hydra config."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from attnbench.config import one_line_error
    from attnbench.sweep import precheck

    overrides = ["experiment=depth_width", "attn=mha,gqa", "seed=0,1", "train.lr=3e-3", "attn.n_heads=4"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        hydra = GlobalHydra.instance().hydra
        master = precheck._master_config(hydra, overrides, one_line_error)
        jobs = precheck.sweep_jobs(master, one_line_error)
        assert len(jobs) == 4 * 2 * 2 and all(any(o.startswith("+experiment/depth_width=") for o in j) for j in jobs)
        from hydra.core.override_parser.overrides_parser import OverridesParser

        loader = hydra.config_loader
        for job in jobs[::5]:
            parsed = OverridesParser.create().parse_overrides(job)
            groups = tuple(o.input_line for o in parsed if loader.repository.group_exists(o.key_or_group))
            cfg = precheck._compose_base(loader, master, groups)
            precheck._apply([o for o in parsed if o.input_line not in groups], cfg)
            want = load_config(["experiment=depth_width", *job])
            drop = {"launch_id"}
            assert {k: v for k, v in OmegaConf.to_container(cfg).items() if k not in drop} == \
                {k: v for k, v in OmegaConf.to_container(want).items() if k not in drop}, job
    GlobalHydra.instance().clear()


def test_a_slurm_sweep_is_checked_for_the_device_its_jobs_get():
    """On a login node without a GPU, device=cuda is what the jobs will have: not refused for that;
    their kernel and size checks still run (memory: device.memory_gb, else the launcher's mem_gb on CPU)."""
    slurm = ["hydra/launcher=slurm_gpu", "logger=none", "stages=[bench]"]
    assert check_sweep_overrides([*slurm, "device=cuda", "attn=mha,gqa"]) == 2
    if not os.environ.get("CUDA_VISIBLE_DEVICES") and not _cuda():
        with pytest.raises(ConfigError, match="device=cuda: CUDA is not available"):  # the basic launcher runs here
            check_sweep_overrides(["device=cuda", "attn=mha,gqa", "logger=none", "stages=[bench]"])
    with pytest.raises(SweepRefused, match=r"more than the 1 GiB of device.memory_gb=1.0 \(device=cuda\).*\[1 of 2 jobs: #1 model.n_layers=20000\]"):
        check_sweep_overrides([*slurm, "device=cuda", "device.memory_gb=1", "model.n_layers=2,20000"])
    with pytest.raises(SweepRefused, match=r"more than the 1 GiB requested per job \(device=cpu\)"):
        check_sweep_overrides([*slurm, "device=cpu", "hydra.launcher.mem_gb=1", "model.n_layers=2,20000"])


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# ----------------------------------------------------------------------------- the CLI (subprocess)
@pytest.mark.slow
def test_a_bad_multirun_launches_nothing(cli, tmp_path):
    runs = Path(os.environ["ATTNBENCH_RUNS"])
    sweep = tmp_path / "sweep"
    r = cli("-m", "attn=gqa,mha", "attn.n_heads=5", "logger=none", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "attnbench: error: model.d_model=64: must be divisible by attn.n_heads=5 [2 of 2 jobs: #0 attn=gqa, #1 attn=mha]",
        "attnbench: error: sweep refused: 2 of 2 jobs are invalid; no job was launched"], r.stderr
    mixed = cli("-m", "attn=gqa,mha", "attn.n_heads=4,5", *TINY)  # jobs 0 and 2 are valid: nothing runs either
    assert mixed.returncode == 2 and "[2 of 4 jobs: #1 attn=gqa attn.n_heads=5, #3 attn=mha attn.n_heads=5]" \
        in mixed.stderr, mixed.stderr
    assert not sweep.exists() and not list(runs.glob("**/results.json")) and not list(runs.glob("**/multirun.yaml"))
