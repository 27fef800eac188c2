"""Issue 25 item 12: the W&B dashboard takes each job's W&B run by the id its results.json records,
so a job re-run without resume does not average its failed earlier run into the panels."""
from __future__ import annotations

from types import SimpleNamespace

from attnbench import report
from attnbench.job import run_job
from attnbench.report.dashboard import ok_jobs, run_ids
from attnbench.report.dashboard_save import read_sweep
from attnbench.report.variants import group
from attnbench.track.wandb_reader import find_run_files

BENCH = ["stages=[bench]", "device=cpu", "bench.modes=[forward]", "bench.seq_lens=[16]", "bench.batch_size=1",
         "bench.repeats=2", "bench.warmup=1", "bench.memory=none", "logger=wandb", "logger.mode=offline",
         "logger.group=g"]


def test_a_rerun_without_resume_is_the_only_run_in_the_panels(make_cfg, tmp_path, monkeypatch):
    import attnbench.bench.suite as suite

    job = tmp_path / "sweep" / "0"
    real = suite.run_bench
    monkeypatch.setattr(suite, "run_bench", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("node lost")))
    first = run_job(make_cfg(*BENCH), job)  # fails after its W&B run started
    monkeypatch.setattr(suite, "run_bench", real)
    second = run_job(make_cfg(*BENCH), job)  # the same job again, without resume: a new W&B run
    assert first["status"] == "failed" and second["status"] == "ok"
    assert first["wandb_run_id"] != second["wandb_run_id"]  # results.json records its own run
    files = find_run_files(job)
    assert sorted(f.stem.removeprefix("run-") for f in files) == sorted([first["wandb_run_id"],
                                                                         second["wandb_run_id"]])
    runs = report.collect([tmp_path / "sweep"])
    sweep = read_sweep(SimpleNamespace(runs=runs, comparison=group(runs)), [tmp_path / "sweep"], None, None, "")
    (r,) = runs
    assert [w.run_id for w in sweep.wandb[id(r)]] == [second["wandb_run_id"]]
    assert [w.exit_code for w in sweep.wandb[id(r)]] == [0]  # the failed run is in no panel
    assert run_ids(sweep, ok_jobs(sweep)) == [second["wandb_run_id"]]
    from attnbench.report.dashboard import build_workspace

    view, _ = build_workspace(sweep)  # the saved view filters on the recorded run ids too
    assert second["wandb_run_id"] in str(view.runset_settings.filters)
    assert first["wandb_run_id"] not in str(view.runset_settings.filters)
