"""Sweeps: run directories, the multirun summary and exit status, resume, launchers, experiments.

The subprocess tests run real multiruns of tiny jobs (stages=[] or a few training steps,
logger=none) and are marked slow. SLURM is faked by small sbatch/srun/sacct scripts on
PATH that run the job array locally, so the submitit_slurm path (sbatch script, signal,
setup lines, results coming back) runs for real."""
from __future__ import annotations

import csv
import itertools
import json
import os
import re
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from attnbench import load_config
from attnbench.config import conf_dir, config_hash, group_options
from attnbench.sweep import SweepCallback, main, resume_command
from attnbench.sweep.summary import collect, write_summary
from attnbench.track.launch import write_job_launch, write_sweep_launch

TINY = ["stages=[]", "logger=none", "device=cpu"]
EXPERIMENTS = group_options("experiment")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def results(job_dir: Path) -> dict:
    return json.loads((job_dir / "results.json").read_text())


# ----------------------------------------------------------------------------- summary (in process)
def fake_job(sweep: Path, num: int, res: dict | None, overrides: list[str]) -> Path:
    d = sweep / str(num)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if res is not None:
        (d / "results.json").write_text(json.dumps(res))
    return d


def test_summary_rows_figures_and_statuses(tmp_path):
    sweep = tmp_path / "sweep"
    stale = fake_job(sweep, 7, {"status": "ok", "variant": "old"}, ["attn=mha"])  # an earlier sweep's job
    write_job_launch(stale, "earlier")
    (sweep / "multirun.yaml").write_text("{}\n")
    write_sweep_launch(sweep, "latest")
    bench = [{"mode": "forward", "seq_len": 64, "status": "ok", "median_ms": 1.0},
             {"mode": "forward", "seq_len": 128, "status": "ok", "median_ms": 2.5},
             {"mode": "forward", "seq_len": 256, "status": "oom", "median_ms": None},
             {"mode": "train_step", "seq_len": 256, "status": "ok", "median_ms": 9.0}]
    ok = {"status": "ok", "error": None, "variant": "mha-rope", "model": {"params": 1234}, "bench": bench,
          "train": {"tokens_per_s": 5000.0, "val_loss": 2.5, "metric_name": "bpc", "metric": 3.6}}
    fake_job(sweep, 0, ok, ["attn=mha", "logger=none"])
    fake_job(sweep, 1, {"status": "failed", "error": "attn.n_kv_heads=3: must divide", "variant": "gqa-rope"},
             ["attn=gqa", "logger=none"])
    fake_job(sweep, 2, {"status": "running", "error": None, "variant": "mqa-rope"}, ["attn=mqa", "logger=none"])
    write_job_launch(fake_job(sweep, 10, None, ["attn=local", "logger=none"]), "latest")  # died before results.json
    rows = collect(sweep)
    assert [r["job"] for r in rows] == ["0", "1", "2", "10"]  # numeric order; job 7 is stale
    assert [r["status"] for r in rows] == ["ok", "failed", "failed", "failed"]
    assert rows[0]["overrides"] == "attn=mha"  # only what differs between jobs
    assert (rows[0]["params"], rows[0]["forward_ms"], rows[0]["forward_T"]) == (1234, 2.5, 128)
    assert (rows[0]["train_tokens_per_s"], rows[0]["val_loss"], rows[0]["metric"]) == (5000.0, 2.5, 3.6)
    assert "no readable results.json" in rows[3]["error"] and rows[2]["error"] == "job ended with status running"
    csv_path, md_path = write_summary(sweep, rows, "python -m attnbench -m x resume=true")
    table = read_csv(csv_path)
    assert [t["status"] for t in table] == ["ok", "failed", "failed", "failed"]
    assert table[1]["error"] == "attn.n_kv_heads=3: must divide" and table[0]["all_overrides"] == "attn=mha logger=none"
    md = md_path.read_text()
    assert "| job | variant | overrides | status | params | fwd ms (T=128) | train tok/s | val loss | bpc | error |" in md
    assert "| 0 | mha-rope | attn=mha | ok | 1,234 | 2.5 | 5000 | 2.5 | 3.6 | - |" in md
    assert "1 ok, 3 not ok" in md and "resume=true" in md
    assert main([str(sweep)]) == 1  # `python -m attnbench.sweep DIR` rebuilds the same summary
    assert read_csv(csv_path) == table


def test_resume_command_repeats_the_sweep_into_its_directory():
    cfg = OmegaConf.create({"hydra": {"overrides": {
        "hydra": ["hydra/launcher=joblib", "hydra.mode=MULTIRUN", "hydra.sweep.dir=old"],
        "task": ["attn=mha,gqa", "stages=[bench]", "resume=false"]}}})
    rows = [{"status": "interrupted"}]
    cmd = resume_command(cfg, Path("runs/multirun/2026-01-01/10-00-00"), rows)
    assert cmd == ("python -m attnbench -m hydra/launcher=joblib attn=mha,gqa 'stages=[bench]' resume=true "
                   "hydra.sweep.dir=runs/multirun/2026-01-01/10-00-00 train.resume=true")


def test_config_hash_ignores_bookkeeping_keys():
    base = config_hash(load_config(TINY))
    assert config_hash(load_config([*TINY, "logger=wandb", "resume=true", "train.resume=true"])) == base
    assert config_hash(load_config([*TINY, "seed=1"])) != base


def test_a_finished_result_is_never_overwritten(tmp_path):
    from attnbench.track.results import write_results

    write_results(tmp_path, {"status": "ok", "config_hash": "a", "n": 0})
    for n, status in enumerate(["running", "running", "failed"], 1):  # the same config re-run without resume
        write_results(tmp_path, {"status": status, "config_hash": "a", "n": n})
    assert json.loads((tmp_path / "results.1.json").read_text())["n"] == 0
    assert results(tmp_path)["n"] == 3 and not (tmp_path / "results.2.json").exists()
    write_results(tmp_path, {"status": "failed", "config_hash": "b"})  # an unfinished result is replaced
    assert results(tmp_path)["config_hash"] == "b" and not (tmp_path / "results.2.json").exists()


def test_job_that_raised_becomes_a_recorded_failure(tmp_path):
    """on_job_end: Hydra would re-raise the first failure after the sweep and skip the summary."""
    cfg = load_config(TINY)
    with_hydra = OmegaConf.create({**OmegaConf.to_container(cfg), "hydra": {
        "mode": RunMode.MULTIRUN, "runtime": {"output_dir": str(tmp_path)}}})  # what Hydra hands on_job_end
    ret = JobReturn()
    ret.status, ret.return_value = JobStatus.FAILED, RuntimeError("boom\nsecond line")
    SweepCallback().on_job_end(config=with_hydra, job_return=ret)
    assert ret.status == JobStatus.COMPLETED and ret.return_value == "failed"
    res = results(tmp_path)
    assert res["status"] == "failed" and res["error"] == "RuntimeError: boom second line"
    assert res["variant"] == "mha-learned-layernorm-gelu-L2-D64" and res["config_hash"] == config_hash(cfg)


@pytest.mark.parametrize("overrides,message", [
    (["attn.n_heads=4,abc"], "attn.n_heads: Value 'abc' of type 'str' could not be converted to Integer "
                             "[1 of 2 jobs: #1 attn.n_heads=abc]"),
    (["attn=mha,gqa", "attn.windw=1,2"], "attn.windw: unknown key; choose from [name, n_heads, n_kv_heads, "
                                          "window, impl, qkv_bias, dropout, softcap"),
    (["attn=mha,bogus"], "attn=bogus: unknown option; choose from ["),
])
def test_a_malformed_sweep_value_stops_the_sweep(overrides, message):
    """Every job is composed before any starts (tests/test_precheck.py has the rest of the refusal)."""
    from attnbench import ConfigError
    from attnbench.sweep import check_sweep_overrides

    with pytest.raises(ConfigError) as err:
        check_sweep_overrides([*overrides, "stages=[]"])
    assert str(err.value).startswith(message)


# ----------------------------------------------------------------------------- experiments (in process)
def sweep_params(name: str) -> dict:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)
    return dict(cfg.hydra.sweeper.params or {})


REPLICATE_AXES = ("seed", "train.lr")  # swept by every quality study; the report groups and tunes over them


def experiment_jobs(name: str, replicates: bool = False) -> list[list[str]]:
    """The overrides of every job `-m experiment=<name>` launches (the basic sweeper's product);
    without `replicates`, one job per variant (the first seed and learning rate)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in sweep_params(name).items()])
    axes = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in parsed]
    if not replicates:
        axes = [a[:1] if a[0].split("=")[0] in REPLICATE_AXES else a for a in axes]
    return [list(c) for c in itertools.product(*axes)]


QUALITY_STUDIES = ("positional", "head_layout", "norm_ffn", "depth_width", "window", "norm_placement")


@pytest.mark.parametrize("name", QUALITY_STUDIES)
def test_quality_studies_have_3_seeds_and_a_learning_rate_grid(name):
    params = sweep_params(name)
    assert len(str(params["seed"]).split(",")) >= 3 and len(str(params["train.lr"]).split(",")) >= 3
    jobs = experiment_jobs(name, replicates=True)
    n_seeds, n_lr = (len(str(params[k]).split(",")) for k in ("seed", "train.lr"))
    assert len(jobs) == n_seeds * n_lr * len(experiment_jobs(name))  # every variant at every lr and seed


def test_the_documented_experiments_exist():
    assert set(EXPERIMENTS) >= {"kernels", "head_layout", "positional", "norm_ffn", "depth_width", "window"}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_every_job_validates(name):
    assert conf_dir().joinpath("experiment", f"{name}.yaml").read_text().startswith("# @package _global_")
    cfg = load_config([f"experiment={name}"])  # sweeper params only apply with -m
    assert cfg.experiment == name
    assert cfg.stages == OmegaConf.load(conf_dir() / "experiment" / f"{name}.yaml").stages  # beats config.yaml
    jobs = experiment_jobs(name)
    assert len(jobs) >= 2
    cfgs = [load_config([f"experiment={name}", *job]) for job in jobs]  # each raises ConfigError if invalid
    assert len({config_hash(c) for c in cfgs}) == len(jobs)  # every job is a different config


def test_positional_evaluates_at_1x_2x_4x_8x_and_learned_fits_the_training_length():
    cfgs = [load_config(["experiment=positional", *job]) for job in experiment_jobs("positional")]
    assert sorted(c.pos.name for c in cfgs) == ["alibi", "learned", "none", "rope", "sinusoidal"]
    for c in cfgs:
        T = c.train.seq_len
        assert list(c.train.eval_seq_lens) == [T, 2 * T, 4 * T, 8 * T] and c.model.context_length >= T


def test_norm_ffn_parameters_are_matched():
    from attnbench import build_model

    counts = {}
    for job in experiment_jobs("norm_ffn"):
        cfg = load_config(["experiment=norm_ffn", *job])
        model = build_model(cfg)
        counts[(cfg.norm.name, cfg.ffn.name)] = sum(p.numel() for p in model.parameters())
    assert len(counts) == 4 and max(counts.values()) / min(counts.values()) < 1.03


def test_depth_width_shapes_have_matched_block_weights():
    cfgs = [load_config(["experiment=depth_width", *job]) for job in experiment_jobs("depth_width")]
    one_layer = [c for c in cfgs if c.model.n_layers == 1]
    shapes = [c for c in cfgs if c.model.n_layers > 1]
    sizes = {12 * c.model.n_layers * c.model.d_model ** 2 for c in shapes}
    assert len(shapes) == 3 and len(sizes) == 1 and len({c.model.n_layers for c in shapes}) == 3
    assert len(one_layer) == 1 and 0.9 < 12 * one_layer[0].model.d_model ** 2 / sizes.pop() <= 1.0
    assert {c.model.d_model // c.attn.n_heads for c in cfgs} == {16}
    assert all(abs(c.model.init_std * c.model.d_model ** 0.5 - 1) < 0.02 for c in cfgs)  # 1/sqrt(d) init
    gpu = [load_config(["experiment=depth_width", f"+experiment/depth_width={s}"])
           for s in ("L4_D768", "L9_D512", "L36_D256")]
    assert len({12 * c.model.n_layers * c.model.d_model ** 2 for c in gpu}) == 1


def test_window_has_windows_shorter_than_the_recall_distance_and_full_attention():
    from attnbench.train.data import AssociativeRecall

    cfgs = [load_config(["experiment=window", *job]) for job in experiment_jobs("window")]
    c = cfgs[0]
    data = AssociativeRecall(c.data.vocab_size, c.data.n_pairs, c.data.n_queries, 0)
    windows = sorted(x.attn.window for x in cfgs)
    assert all(x.attn.name == "local" and x.data.name == "synthetic" for x in cfgs)
    assert c.model.n_layers * (windows[0] - 1) < data.min_distance(c.train.seq_len) and windows[-1] == c.train.seq_len


# ----------------------------------------------------------------------------- multiruns (subprocess)
def sweep_dirs(runs: Path) -> list[Path]:
    return sorted(p.parent for p in runs.glob("multirun/*/*/multirun.yaml"))


@pytest.mark.slow
def test_multirun_job_dirs_and_summary(cli):
    runs = Path(os.environ["ATTNBENCH_RUNS"])
    r = cli("-m", "attn=mha,gqa,mqa", *TINY)
    assert r.returncode == 0, r.stderr
    (sweep,) = sweep_dirs(runs)
    assert re.fullmatch(r"multirun/\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}", sweep.relative_to(runs).as_posix())
    for num, attn in enumerate(["mha", "gqa", "mqa"]):
        job = sweep / str(num)
        assert {"config.yaml", "hydra.yaml", "overrides.yaml"} <= {p.name for p in (job / ".hydra").iterdir()}
        assert (job / "attnbench.log").is_file() and (job / "metrics.jsonl").is_file()
        assert results(job)["status"] == "ok" and results(job)["config"]["attn"]["name"] == attn
    rows = read_csv(sweep / "summary.csv")
    assert [(x["job"], x["overrides"], x["status"]) for x in rows] == [
        ("0", "attn=mha", "ok"), ("1", "attn=gqa", "ok"), ("2", "attn=mqa", "ok")]
    assert int(rows[2]["params"]) < int(rows[1]["params"]) < int(rows[0]["params"])
    assert "3 jobs, 3 ok" in r.stdout and "summary.md" in r.stdout and "resume=true" not in r.stdout
    bad = cli("-m", "attn.n_heads=4,four", *TINY)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "attnbench: error: attn.n_heads: Value 'four' of type 'str' could not be converted to Integer "
        "[1 of 2 jobs: #1 attn.n_heads=four]",
        "attnbench: error: sweep refused: 1 of 2 jobs are invalid; no job was launched"]
    assert len(sweep_dirs(runs)) == 1  # nothing was launched
    single = cli("attn=gqa", *TINY)
    assert single.returncode == 0, single.stderr
    (run_dir,) = [p.parent for p in runs.glob("*/*/results.json") if p.parts[-4] != "multirun"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}_gqa-learned-layernorm-gelu-L2-D64",
                        run_dir.relative_to(runs).as_posix())
    assert (run_dir / ".hydra" / "config.yaml").is_file()


@pytest.mark.slow
def test_failed_job_is_recorded_and_resume_reruns_only_it(cli, tmp_path):
    sweep, empty = tmp_path / "sweep", tmp_path / "no_checkpoint_here"
    empty.mkdir()  # a valid config (the directory exists) whose job fails: it holds no checkpoint
    args = ["-m", "stages=[],[train]", f"train.init_from={empty}", *TINY[1:], f"hydra.sweep.dir={sweep}"]
    r = cli(*args)
    assert r.returncode == 1, r.stderr  # after both jobs ran
    assert results(sweep / "0")["status"] == "ok"
    bad = results(sweep / "1")
    assert bad["status"] == "failed" and bad["error"] == f"train.init_from={empty}: no checkpoint file there"
    assert "no checkpoint file there" in (sweep / "1" / "attnbench.log").read_text()  # the job's log says why
    assert [x["status"] for x in read_csv(sweep / "summary.csv")] == ["ok", "failed"]
    assert "2 jobs, 1 ok, 1 NOT OK" in r.stdout
    assert f"resume=true hydra.sweep.dir={sweep}" in r.stdout
    ok_before = (sweep / "0" / "results.json").read_bytes(), (sweep / "0" / "results.json").stat().st_mtime_ns
    bad_mtime = (sweep / "1" / "results.json").stat().st_mtime_ns
    time.sleep(0.05)

    r = cli(*args, "resume=true")  # what the printed command runs
    assert r.returncode == 1
    ok_after = (sweep / "0" / "results.json").read_bytes(), (sweep / "0" / "results.json").stat().st_mtime_ns
    assert ok_after == ok_before  # skipped, untouched
    assert (sweep / "1" / "results.json").stat().st_mtime_ns > bad_mtime  # re-run
    assert "skipping" in (sweep / "0" / "attnbench.log").read_text()
    assert [x["reused"] for x in read_csv(sweep / "summary.csv")] == ["True", "False"]

    r = cli(*args, "attn.n_heads=2", "resume=true")  # job 0 changed
    assert results(sweep / "0")["config"]["attn"]["n_heads"] == 2
    assert json.loads((sweep / "0" / "results.1.json").read_text())["config"]["attn"]["n_heads"] == 4  # kept


RAISING_APP = textwrap.dedent("""
    import sys
    import attnbench.cli as cli
    real = cli.run_job
    def run_job(cfg, run_dir):  # fails outside the harness, where run_job cannot record it
        if cfg.attn.name == "gqa":
            raise RuntimeError("boom outside run_job")
        return real(cfg, run_dir)
    cli.run_job = run_job
    from attnbench.__main__ import main
    sys.argv[0] = "attnbench"
    main()
""")


@pytest.mark.slow
def test_job_that_raises_does_not_stop_the_sweep(tmp_path):
    import subprocess

    sweep = tmp_path / "sweep"
    r = subprocess.run([sys.executable, "-c", RAISING_APP, "-m", "attn=mha,gqa,mqa", *TINY,
                        f"hydra.sweep.dir={sweep}"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert [x["status"] for x in read_csv(sweep / "summary.csv")] == ["ok", "failed", "ok"]
    assert results(sweep / "1")["error"] == "RuntimeError: boom outside run_job"
    log = (sweep / "1" / "attnbench.log").read_text()
    assert "Traceback" in log and "boom outside run_job" in log  # Hydra alone leaves this log empty


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_other_processes_and_fails_the_sweep(cli, tmp_path):
    sweep = tmp_path / "sweep"
    r = cli("-m", "stages=[],[train],[bench]", f"train.init_from={tmp_path}", "bench.modes=[forward]",
            "bench.seq_lens=[8]", "bench.repeats=1", *TINY[1:], "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={sweep}")  # the train job finds no checkpoint in tmp_path
    assert r.returncode == 1, r.stderr
    assert [x["status"] for x in read_csv(sweep / "summary.csv")] == ["ok", "failed", "ok"]
    assert "NOT OK" in r.stdout and "hydra/launcher=joblib" in r.stdout  # the resume command keeps the launcher


@pytest.mark.slow
def test_submitit_local_runs_two_tiny_jobs(cli, tmp_path):
    sweep = tmp_path / "sweep"
    r = cli("-m", "attn=mha,gqa", *TINY, "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr
    assert [x["status"] for x in read_csv(sweep / "summary.csv")] == ["ok", "ok"]
    assert list((sweep / ".submitit").iterdir())  # the jobs went through submitit
    assert {results(sweep / n)["config"]["attn"]["name"] for n in "01"} == {"mha", "gqa"}


@pytest.mark.slow
def test_experiment_runs_end_to_end(cli, tmp_path):
    sweep = tmp_path / "sweep"
    r = cli("-m", "experiment=window", "attn.window=8,64", "seed=0", "train.lr=1e-3", "train.steps=3", "train.batch_size=2",
            "train.eval_batches=1", "train.eval_every=0", "logger=none", "device=cpu", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr
    rows = read_csv(sweep / "summary.csv")
    assert [x["overrides"] for x in rows] == ["attn.window=8", "attn.window=64"]
    assert all(x["metric_name"] == "recall_acc" and float(x["val_loss"]) > 0 for x in rows)
    res = results(sweep / "0")
    assert res["config"]["experiment"] == "window" and res["train"]["steps"] == 3


# ----------------------------------------------------------------------------- SLURM, faked
FAKE_SBATCH = '''
"""Fake sbatch: records the script; runs its array tasks one by one in the background like SLURM."""
import os, re, signal, subprocess, sys, time
from pathlib import Path
state = Path(os.environ["FAKE_SLURM_DIR"])
if sys.argv[1] != "--run":
    text = Path(sys.argv[-1]).read_text()
    job = str(1000 + len(list(state.glob("sbatch_*.sh"))))
    (state / f"sbatch_{job}.sh").write_text(text)
    subprocess.Popen([sys.executable, __file__, "--run", job, sys.argv[-1]], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"Submitted batch job {job}")
    sys.exit(0)
job, script = sys.argv[2], sys.argv[3]
text = Path(script).read_text()
m = re.search(r"^#SBATCH --array=0-(\\d+)", text, re.M)
sig = re.search(r"^#SBATCH --signal=(\\w+)@", text, re.M)
folder = re.search(r"submitit.core._submit (\\S+)", text).group(1).strip("'")
tasks = [f"{job}_{i}" for i in range(int(m.group(1)) + 1 if m else 1)]
for jid in tasks:
    (state / f"queued_{jid}").touch()  # what the fake squeue lists
for i, jid in enumerate(tasks):
    pickle = Path(folder.replace("%j", jid)) / f"{jid}_submitted.pkl"
    for _ in range(300):  # real SLURM starts a task well after sbatch returned
        if pickle.exists():
            break
        time.sleep(0.1)
    pidfile = state / f"pid_{jid}"
    env = dict(os.environ, SLURM_JOB_ID=str(5000 + i), SLURM_ARRAY_JOB_ID=job, SLURM_ARRAY_TASK_ID=str(i),
               SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0", SLURM_PROCID="0",
               SLURM_LOCALID="0", SLURM_JOB_NODELIST="localhost", FAKE_SLURM_PIDFILE=str(pidfile))
    p = subprocess.Popen(["bash", script], env=env)
    if os.environ.get("FAKE_SLURM_SIGNAL_TASK") == str(i):  # the pre-timeout signal, to the job step only
        trigger = Path(os.environ["FAKE_SLURM_SIGNAL_WHEN"])
        while p.poll() is None and not (trigger.is_file() and trigger.stat().st_size > 0 and pidfile.is_file()):
            time.sleep(0.05)
        if p.poll() is None:
            os.kill(int(pidfile.read_text()), getattr(signal, "SIG" + sig.group(1)))
    p.wait()
    (state / f"queued_{jid}").unlink()
'''

FAKE_SQUEUE = '''
"""Fake squeue -o %i|%T: the fake sbatch's tasks that have not ended, RUNNING once their step started."""
import os
from pathlib import Path
state = Path(os.environ["FAKE_SLURM_DIR"])
for q in sorted(state.glob("queued_*")):
    jid = q.name[len("queued_"):]
    print(f"{jid}|{'RUNNING' if (state / f'pid_{jid}').is_file() else 'PENDING'}")
'''

FAKE_SRUN = '''
"""Fake srun: --output/--error redirections, then exec the command (its pid is the job step's)."""
import os, sys
args, out, err = sys.argv[1:], None, None
while args[0].startswith("--"):
    opt = args.pop(0)
    if opt in ("--output", "--error"):
        path = args.pop(0)
        for k, v in (("%A", os.environ["SLURM_ARRAY_JOB_ID"]), ("%a", os.environ["SLURM_ARRAY_TASK_ID"]),
                     ("%j", os.environ["SLURM_JOB_ID"]), ("%t", "0")):
            path = path.replace(k, v)
        out, err = (path, err) if opt == "--output" else (out, path)
for fd, path in ((1, out), (2, err or out)):
    if path:
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), fd)
open(os.environ["FAKE_SLURM_PIDFILE"], "w").write(str(os.getpid()))
os.execvp(args[0], args)
'''


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir, state = tmp_path / "fake_slurm_bin", tmp_path / "fake_slurm_state"
    bin_dir.mkdir()
    state.mkdir()
    tools = {"sbatch": FAKE_SBATCH, "srun": FAKE_SRUN, "squeue": FAKE_SQUEUE,
             "sacct": 'print("JobID|State|NodeList")\n', "scancel": "",
             "scontrol": 'print("JobId=5000 JobState=RUNNING Restarts=0")\n'}
    for name, body in tools.items():
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{body}")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(state))
    return state


@pytest.mark.slow
def test_slurm_launcher_sends_the_trainers_stop_signal(cli, tmp_path, fake_slurm):
    """hydra/launcher=slurm_gpu: one job array whose sbatch script asks for SIGUSR1 before the time limit
    and exports WANDB_MODE=offline; a job signalled mid-training checkpoints, and with
    max_num_timeout=0 ends `interrupted` (tests/test_slurm.py continues jobs on a real SLURM)."""
    sweep = tmp_path / "sweep"
    env = {"FAKE_SLURM_SIGNAL_TASK": "0", "FAKE_SLURM_SIGNAL_WHEN": str(sweep / "0" / "metrics.jsonl")}
    r = cli("-m", "train.steps=100000,3", "stages=[train]", "logger=none", "device=cpu", "train.batch_size=2",
            "train.eval_batches=1", "train.eval_every=0", "train.log_every=1", "hydra/launcher=slurm_gpu",
            "hydra.launcher.partition=testq", "hydra.launcher.signal_delay_s=30", "hydra.launcher.poll_s=0.5",
            "hydra.launcher.max_num_timeout=0", f"hydra.sweep.dir={sweep}", env_extra=env, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    (script,) = fake_slurm.glob("sbatch_*.sh")
    text = script.read_text()
    for line in ("#SBATCH --signal=USR1@30", "#SBATCH --partition=testq", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --array=0-1%2", "export WANDB_MODE=offline", "export SUBMITIT_PREEMPT_SIGNAL=USR1"):
        assert line in text.splitlines(), line
    stopped, done = results(sweep / "0"), results(sweep / "1")
    assert stopped["status"] == "interrupted" and "timeout (SIGUSR1) 1 time, more than" in stopped["error"], stopped["error"]
    assert (sweep / "0" / "checkpoint.pt").is_file() and 0 < stopped["train"]["steps"] < 100000
    assert done["status"] == "ok" and done["train"]["steps"] == 3
    assert [x["status"] for x in read_csv(sweep / "summary.csv")] == ["interrupted", "ok"]
    assert "train.resume=true" in r.stdout and "hydra/launcher=slurm_gpu" in r.stdout


def test_mla_study_matches_kv_bytes_per_token():
    """Finding 8 compares MLA with GQA and MQA at matched KV cache bytes per token."""
    from attnbench.model import kv_cache_bytes_per_token

    kv = {}
    for job in experiment_jobs("mla"):
        cfg = load_config(["experiment=mla", *job])
        kv[next(o for o in job if o.startswith("+experiment/mla=")).split("=")[1]] = kv_cache_bytes_per_token(cfg)
    assert kv["mla_r56"] == kv["gqa"] and kv["mla_r24"] == kv["mqa"] and kv["mha"] == 2 * kv["gqa"] == 4 * kv["mqa"]


def test_mqar_grid_fits_the_keys_and_runs_with_linear_attention_and_its_short_conv():
    """Finding 13's grid: every job validates with softmax and with linear attention + short conv, no
    cell asks for more pairs than there are keys, and the sequence holds the pairs and the queries."""
    from attnbench.train.data import AssociativeRecall

    for attn in (["attn=mha"], ["attn=linear", "attn.short_conv=4"]):
        for job in experiment_jobs("mqar"):
            c = load_config(["experiment=mqar", *attn, *job])
            data = AssociativeRecall(c.data.vocab_size, c.data.n_pairs, c.data.n_queries, 0)
            assert c.data.n_pairs <= data.n_keys and data.not_applicable(c.train.seq_len) is None
            assert c.attn.get("short_conv") == (4 if attn[0] == "attn=linear" else None)
