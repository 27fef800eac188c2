"""`python -m attnbench.study` (issue 27): the grid step, planted studies through a fake stage runner
(the pure logic: extension, divergence, interruption, a finished re-run, refusals, the dry run), and
one real end-to-end study of tiny jobs with the basic launcher."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attnbench.study import cli, grid
from attnbench.study.plan import compose_sweep, key_of, value_of
from attnbench.track.launch import write_job_launch, write_sweep_launch

TINY = ["stages=[]", "logger=none", "device=cpu"]


# ----------------------------------------------------------------------------- the grid's own step
@pytest.mark.parametrize("values, up, down", [
    (["1e-3", "3e-3", "1e-2"], 3e-2, 3e-4),  # 2 per decade: the 1, 3, 10 pattern goes on
    (["1e-3", "3e-3", "1e-2", "3e-2"], 1e-1, 3e-4),
    (["1e-4", "3e-4"], 1e-3, 3e-5),
    (["1e-3", "1e-2"], 1e-1, 1e-4),  # one per decade
    (["1e-3", "2e-3", "4e-3"], 8e-3, 5e-4),  # ratio 2, not on decades
    (["0.1", "0.2", "0.3"], 0.4, 0.0),  # linear
    (["16", "32", "64"], 128, 8),  # integer, log
    (["2", "4", "6"], 8, 0),  # integer, linear (a key that must be positive refuses 0 at the extension's precheck)
])
def test_the_value_past_each_edge_follows_the_grids_own_step(values, up, down):
    step = grid.grid_step(values)
    tried = [float(v) for v in values]
    assert grid.next_value(step, tried, grid.HIGHEST) == pytest.approx(up)
    assert grid.next_value(step, tried, grid.LOWEST) == pytest.approx(down)
    assert grid.fmt_value(grid.next_value(step, tried, grid.HIGHEST)) == grid.fmt_value(up)


def test_an_irregular_grid_has_no_step_and_values_are_written_exactly():
    assert grid.grid_step(["1e-3", "2e-3", "1e-2"]) is None
    assert grid.grid_step(["1e-3"]) is None and grid.grid_step(["mha", "gqa"]) is None
    assert grid.fmt_value(3e-3 * 10) == "0.03" and grid.fmt_value(128.0) == "128"
    assert grid.next_value(grid.grid_step(["1", "2"]), [1.0, 2.0], grid.LOWEST) is None  # 0.5 is no integer >= 1


# ----------------------------------------------------------------------------- a fake stage runner
class Planted:
    """Stands in for `python -m attnbench -m` (launch.multirun): enumerates the jobs as Hydra does and
    writes each one's results.json with a planted val loss, skipping ok jobs as resume=true does."""

    def __init__(self, loss, stop_at: int | None = None, stop_after_jobs: int = 0):
        self.loss, self.calls, self.stop_at, self.stop_after_jobs = loss, [], stop_at, stop_after_jobs

    def __call__(self, overrides, sweep_dir: Path) -> int:
        self.calls.append(Path(sweep_dir).name if Path(sweep_dir).parent.name != "extend"
                          else f"extend/{Path(sweep_dir).name}")
        _, jobs = compose_sweep(overrides)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "multirun.yaml").write_text("hydra: {}\n")
        lid = f"launch-{len(self.calls)}"
        write_sweep_launch(sweep_dir, lid)
        bad = 0
        for num, job in enumerate(jobs):
            if self.stop_at == len(self.calls) and num >= self.stop_after_jobs:
                raise KeyboardInterrupt
            bad += self._job(sweep_dir / str(num), [o for o in job if not key_of(o).startswith("hydra")], lid)
        return 1 if bad else 0

    def _job(self, d: Path, job: list, lid: str) -> int:
        values = {key_of(o): value_of(o) for o in job}
        attn, lr, seed = values.get("attn", "mha"), float(values["train.lr"]), int(values["seed"])
        old = d / "results.json"
        cfg = {"attn": {"name": attn}, "seed": seed, "train": {"lr": lr}, "stages": []}
        if old.is_file() and json.loads(old.read_text()).get("status") == "ok":
            write_job_launch(d, lid)
            return 0
        status, loss = self.loss(attn, lr, seed)
        (d / ".hydra").mkdir(parents=True, exist_ok=True)
        (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(job))
        write_job_launch(d, lid)
        res = {"schema": 1, "status": status, "error": None if status == "ok" else f"{status} at step 3",
               "variant": f"{attn}-rope", "launch_id": lid, "config": cfg, "env": {}, "model": {"params": 10},
               "bench": [], "train": {"status": status, "val_loss": loss if status == "ok" else None}}
        old.write_text(json.dumps(res))
        return status != "ok"


def bowl(best: dict, diverge: dict | None = None):
    """val loss 2 + (log10 lr - log10 best[attn])², + 0.01 × seed; `diverge[attn]`: (lr, seeds) that diverge."""
    def loss(attn, lr, seed):
        lr_bad, seeds = (diverge or {}).get(attn, (math.inf, ()))
        if lr >= lr_bad * 0.999 and seed in seeds:
            return "diverged", None
        return "ok", 2 + (math.log10(lr) - math.log10(best[attn])) ** 2 + 0.01 * seed
    return loss


GRID = ["attn=mha,gqa", "train.lr=1e-3,3e-3,1e-2", "seed=0,1", *TINY]


def study(tmp_path, runner, *opts, overrides=GRID):
    return cli.main(["--dir", str(tmp_path / "st"), "--tune", "train.lr", "--baseline", "attn=mha", *opts,
                     "--", *overrides], runner=runner)


def record(tmp_path) -> dict:
    return json.loads((tmp_path / "st" / "study.json").read_text())


def variants_csv(tmp_path) -> dict:
    import csv

    with open(tmp_path / "st" / "report" / "variants.csv") as f:
        return {row["name"]: row for row in csv.DictReader(f)}


# ----------------------------------------------------------------------------- planted studies
def test_a_grid_is_extended_upward_until_the_choice_is_interior(tmp_path, capsys):
    """mha's best lr is 3e-2, past the grid: extended to 3e-2 (chosen, still the top), then 1e-1 (worse):
    interior. gqa's is 3e-3, inside: never extended. Then each is confirmed at its value on seeds 2, 3, 4."""
    runner = Planted(bowl({"mha": 3e-2, "gqa": 3e-3}))
    assert study(tmp_path, runner) == 0
    assert runner.calls == ["tune", "extend/1", "extend/2", "c1", "c2"]
    rec = record(tmp_path)
    assert [(e["value"], [v["variant"] for v in e["variants"]]) for e in rec["extensions"]] == \
        [("0.03", ["mha-rope"]), ("0.1", ["mha-rope"])]
    assert rec["launches"]["extend/1"]["overrides"][-2:] == ["train.lr=0.03", "seed=0,1"]
    assert rec["edges"] == [] and rec["confirm"]["seeds"] == [2, 3, 4]
    assert all(rec["stages"][s]["state"] == "done" for s in ("tune", "extend", "confirm", "report"))
    rows = variants_csv(tmp_path)
    assert float(rows["mha-rope"]["train.lr"]) == pytest.approx(0.03) and rows["mha-rope"]["tuned_at_edge"] == ""
    assert float(rows["gqa-rope"]["train.lr"]) == pytest.approx(0.003)
    assert {r["selection"] for r in rows.values()} == {"held_out"}
    assert rows["mha-rope"]["replicates"] == "seed=2,3,4"
    out = capsys.readouterr().out
    assert "| variant | n | train.lr (chosen of) |" in out and "held-out runs" in out


def test_extensions_stop_at_max_extensions_and_the_report_says_so(tmp_path, capsys):
    runner = Planted(bowl({"mha": 1.0, "gqa": 3e-3}))  # mha wants ever higher lr
    assert study(tmp_path, runner, "--max-extensions", "2") == 0
    rec = record(tmp_path)
    assert [e["value"] for e in rec["extensions"]] == ["0.03", "0.1"]
    (edge,) = rec["edges"]
    assert edge["variant"] == "mha-rope" and edge["why"] == "still at the edge after 2 extensions"
    assert "still at the edge after 2 extensions" in (tmp_path / "st" / "report" / "report.md").read_text()
    assert "still at the edge after 2 extensions" in capsys.readouterr().out


def test_a_top_value_that_diverges_is_an_edge_needing_no_extension(tmp_path):
    """Both variants improve with lr, and 1e-2 diverges: for gqa on every tuning seed (so 3e-3 is interior),
    for mha on seed 1 only (its seed 0 at 1e-2 is the best ok job). Nothing is extended past 1e-2."""
    runner = Planted(bowl({"mha": 1.0, "gqa": 1.0}, diverge={"gqa": (1e-2, (0, 1)), "mha": (1e-2, (1,))}))
    assert study(tmp_path, runner) == 0
    assert runner.calls[:2] == ["tune", "c1"] and not record(tmp_path)["extensions"]
    rows = variants_csv(tmp_path)
    assert float(rows["gqa-rope"]["train.lr"]) == pytest.approx(3e-3) and rows["gqa-rope"]["tuned_at_edge"] == ""
    edges = {e["variant"]: e["why"] for e in record(tmp_path)["edges"]}
    if rows["mha-rope"]["tuned_at_edge"]:  # the report chose the partly diverged top value: named, not extended
        assert "failed on a tuning seed (diverged)" in edges["mha-rope"]
    assert "gqa-rope" not in edges


def test_an_extension_that_diverges_brackets_the_choice(tmp_path):
    runner = Planted(bowl({"mha": 1.0, "gqa": 3e-3}, diverge={"mha": (3e-2, (0, 1))}))
    assert study(tmp_path, runner) == 0
    rec = record(tmp_path)
    assert [e["value"] for e in rec["extensions"]] == ["0.03"] and rec["edges"] == []
    assert float(variants_csv(tmp_path)["mha-rope"]["train.lr"]) == pytest.approx(1e-2)


def test_an_interrupted_study_resumes_without_running_finished_jobs_again(tmp_path, capsys):
    first = Planted(bowl({"mha": 3e-2, "gqa": 3e-3}), stop_at=2, stop_after_jobs=1)  # Ctrl-C in extend/1, job 1
    assert study(tmp_path, first) == 130
    rec = record(tmp_path)  # consistent: tune done, the extension recorded as running
    assert rec["stages"]["tune"]["state"] == "done" and "extend" not in rec["stages"]
    assert rec["launches"]["extend/1"]["state"] == "running" and rec["extensions"][0]["value"] == "0.03"
    assert "re-run the same command" in capsys.readouterr().err
    second = Planted(bowl({"mha": 3e-2, "gqa": 3e-3}))
    assert study(tmp_path, second) == 0
    assert second.calls == ["extend/1", "extend/2", "c1", "c2"]  # the tuning sweep is not launched again
    ext1 = tmp_path / "st" / "extend" / "1"
    assert json.loads((ext1 / "0" / "results.json").read_text())["launch_id"] == "launch-2"  # from the first run
    assert json.loads((ext1 / "1" / "results.json").read_text())["launch_id"] == "launch-1"  # the resumed launch
    assert [e["value"] for e in record(tmp_path)["extensions"]] == ["0.03", "0.1"]


def test_a_finished_study_re_runs_without_launching(tmp_path, capsys):
    assert study(tmp_path, Planted(bowl({"mha": 3e-3, "gqa": 3e-3}))) == 0
    capsys.readouterr()

    def never(overrides, sweep_dir):
        raise AssertionError(f"launched {sweep_dir}")

    assert study(tmp_path, never) == 0
    out = capsys.readouterr().out
    assert "| mha-rope (baseline) |" in out and "launching" not in out


def test_a_different_command_on_the_same_dir_is_refused_in_one_line(tmp_path, capsys):
    assert study(tmp_path, Planted(bowl({"mha": 3e-3, "gqa": 3e-3}))) == 0
    capsys.readouterr()
    assert study(tmp_path, Planted(bowl({})), "--confirm-seeds", "4") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"attnbench.study: error: --dir {tmp_path / 'st'} holds a study of another command "
                   "(--confirm-seeds: this command has 4, the study has 3); re-run that command to continue it, "
                   "or use another --dir"]
    assert study(tmp_path, Planted(bowl({})), overrides=[*GRID, "train.steps=5"]) == 2
    assert "the overrides after --: this command has" in capsys.readouterr().err


@pytest.mark.parametrize("tune, overrides, message", [
    ("train.lrr", GRID, "--tune train.lrr: not a key of the config"),
    ("train.lr", ["attn=mha,gqq", "train.lr=1e-3,3e-3", *TINY], "attn=gqq: unknown option"),
    ("train.lr", ["attn.n_heads=4,five", "train.lr=1e-3,3e-3", *TINY], "attn.n_heads"),
    ("train.lr", ["attn=mha,gqa", "train.lr=1e-3", *TINY], "--tune train.lr: the sweep gives it 1 value"),
    ("train.lr", [*GRID, "hydra.sweep.dir=x"], "hydra.sweep.dir=x: the study sets hydra.sweep.dir itself"),
    ("train.lr", ["attn=mha", "train.lr=1e-3,2e-3,1e-2", *TINY], "has no step of its own"),
])
def test_bad_input_is_refused_before_anything_runs(tmp_path, capsys, tune, overrides, message):
    def never(overrides, sweep_dir):
        raise AssertionError("launched")

    argv = ["--dir", str(tmp_path / "st"), "--tune", tune, "--baseline", "attn=mha", "--", *overrides]
    assert cli.main(argv, runner=never) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("attnbench.study: error: ")
    assert not (tmp_path / "st").exists()


def test_an_objective_that_no_job_measures_stops_the_study_in_one_line(tmp_path, capsys):
    assert study(tmp_path, Planted(bowl({"mha": 3e-3, "gqa": 3e-3})), "--objective", "val_los") == 2
    assert capsys.readouterr().err.startswith("attnbench.study: error: --objective val_los: not a numeric figure")
    assert record(tmp_path)["stages"]["tune"]["state"] == "done"  # kept: a re-run with that command reports it again


def test_a_folder_that_is_not_a_study_is_refused(tmp_path, capsys):
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "multirun.yaml").write_text("hydra: {}\n")
    assert study(tmp_path, None) == 2
    assert f"--dir {tmp_path / 'st'}: not empty and no study.json in it" in capsys.readouterr().err


def test_a_bad_baseline_key_is_refused_before_anything_runs(tmp_path, capsys):
    argv = ["--dir", str(tmp_path / "st"), "--tune", "train.lr", "--baseline", "atn=mha", "--", *GRID]
    assert cli.main(argv, runner=None) == 2
    assert "--baseline atn=mha: write KEY=VALUE with a key of the config" in capsys.readouterr().err


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, capsys):
    assert study(tmp_path, None, "--dry-run", "--max-extensions", "2") == 0
    out = capsys.readouterr().out
    assert "tune:    12 jobs" in out and "2 variants x train.lr = 0.001, 0.003, 0.01 x seeds 0, 1" in out
    assert "log, 2 per decade" in out and "2 jobs per extension" in out and "at most 2 per variant" in out
    assert "confirm: each variant at its chosen train.lr on seeds 2, 3, 4: 6 jobs" in out
    assert "0.03" not in out  # the extension is shown as its rule, not as guessed values
    assert not (tmp_path / "st").exists()


# ----------------------------------------------------------------------------- a real study
@pytest.mark.slow
def test_a_real_study_of_tiny_jobs_end_to_end(tmp_path):
    """Three training steps: a higher lr has the lower loss, so 1e-4, 3e-4 is extended to 1e-3 (the grid's
    step, ×3.3 to the next decade value), which stays at the edge with --max-extensions 1; then seed 1
    confirms it. Every stage through `python -m attnbench -m`; a second run only reports."""
    argv = ["-m", "attnbench.study", "--dir", str(tmp_path / "st"), "--tune", "train.lr", "--baseline", "attn=mha",
            "--max-extensions", "1", "--confirm-seeds", "1", "--", "attn=mha", "train.lr=1e-4,3e-4", "seed=0",
            "stages=[train]", "train.steps=3", "train.batch_size=2", "train.eval_batches=1", "logger=none",
            "device=cpu", "device.threads=1"]
    r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = record(tmp_path)
    assert [e["value"] for e in rec["extensions"]] == ["0.001"]
    assert rec["edges"][0]["why"] == "still at the edge after 1 extension"
    assert [a["launch_id"] is not None for a in rec["launches"]["tune"]["attempts"]] == [True]
    rows = variants_csv(tmp_path)
    (row,) = rows.values()
    assert row["selection"] == "held_out" and row["replicates"] == "seed=1" and float(row["train.lr"]) == 1e-3
    again = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0 and "launching" not in again.stdout and "held-out runs" in again.stdout


def test_an_edge_that_ties_with_its_neighbour_is_not_extended(tmp_path):
    """Recall at the ceiling at two values (Finding 13): the report picks the first (the lowest, an edge),
    but the optimum is inside the grid, so nothing is extended."""
    def flat(attn, lr, seed):
        return "ok", 2.0 if lr < 5e-3 else 2.5

    assert study(tmp_path, Planted(flat)) == 0
    rec = record(tmp_path)
    assert rec["extensions"] == []
    assert {e["why"] for e in rec["edges"]} == {"ties with 0.003 inside the grid (2): the optimum is not past the edge"}


def test_without_a_baseline_and_with_the_dashboard(tmp_path, capsys):
    """--baseline is optional (figures without verdicts); --wandb-dashboard goes to the report's own, which
    refuses jobs without W&B runs (logger=none) in its one line: the flag reached it."""
    argv = ["--dir", str(tmp_path / "st"), "--tune", "train.lr", "--", *GRID]
    assert cli.main(argv, runner=Planted(bowl({"mha": 3e-3, "gqa": 3e-3}))) == 0
    out = capsys.readouterr().out
    assert "| variant | n | train.lr (chosen of) | val loss (lower is better) | reported on |" in out
    assert "verdict" not in out
    assert cli.main(argv[:4] + ["--wandb-dashboard"] + argv[4:], runner=None) == 2
    assert "--wandb-dashboard: no job under the paths has a W&B run" in capsys.readouterr().err


def test_each_launch_is_the_projects_own_multirun_with_resume(tmp_path, monkeypatch):
    """What makes a re-run skip finished jobs and keeps every launcher's behaviour: the child command."""
    from attnbench.study import launch

    seen = []

    class Child:
        def __init__(self, cmd):
            seen.append(cmd)

        def wait(self, timeout=None):
            return 1

    monkeypatch.setattr(launch.subprocess, "Popen", Child)
    assert launch.multirun(["attn=mha,gqa", "hydra/launcher=joblib"], tmp_path / "tune") == 1
    assert seen == [[sys.executable, "-m", "attnbench", "-m", "attn=mha,gqa", "hydra/launcher=joblib",
                     f"hydra.sweep.dir={tmp_path / 'tune'}", "resume=true"]]


def test_an_extension_of_a_preset_variant_overrides_the_presets_grid():
    """experiment=gating_lr sweeps attn.gate, train.lr and seed in hydra.sweeper.params; a variant's
    extension (its own overrides, one lr, the tuning seeds) must run 3 jobs, not the preset's 36."""
    _, jobs = compose_sweep(["experiment=gating_lr", "attn.gate=headwise", "train.lr=0.3", "seed=0,1,2",
                             "logger=none"])
    assert len(jobs) == 3
    assert {value_of(o) for job in jobs for o in job if key_of(o) == "train.lr"} == {"0.3"}


def test_a_slurm_study_is_known_from_the_launcher_and_carries_its_overrides():
    """The launcher's overrides go to every extension and confirmation launch; a SLURM launcher makes a
    re-run ask the queue first (tests/test_study_slurm.py runs it on the local cluster)."""
    from attnbench.study.plan import read_plan

    ov = ["hydra/launcher=slurm_gpu", "hydra.launcher.poll_s=1", "device=cpu", "attn=mha", "train.lr=1e-4,3e-4",
          "seed=0", *TINY[:2]]
    plan = read_plan(ov, "train.lr", 0)
    assert plan.slurm and plan.poll_s == 1.0 and plan.hydra == ov[:2]
    assert not read_plan(ov[2:], "train.lr", 0).slurm
