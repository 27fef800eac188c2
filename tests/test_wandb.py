"""W&B mirror: jobs log offline into tmp and we read back what was logged from the `.wandb` file."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from attnbench.job import run_job
from attnbench.track.results import read_results
from attnbench.track.wandb_reader import find_run_files, iter_payloads, read_run
from attnbench.track.wandb_sink import MAX_TAG_LEN, resolve_mode, run_tags, summary_figures

TRAIN = ["stages=[train]", "device=cpu", "train.steps=6", "train.batch_size=2", "train.seq_len=16",
         "train.eval_every=3", "train.eval_batches=1", "train.warmup_steps=1", "train.log_every=2",
         "data.n_pairs=2", "data.n_queries=2"]
BENCH = ["stages=[bench]", "device=cpu", "bench.modes=[forward,decode]", "bench.seq_lens=[16]", "bench.batch_size=1",
         "bench.repeats=2", "bench.warmup=1", "bench.decode_tokens=2", "bench.memory=none"]


@pytest.fixture
def fresh_wandb():
    """wandb reads its environment once per process; tests that change it start and end with a fresh one."""
    import wandb

    wandb.teardown()
    yield
    wandb.teardown()


def test_train_job_history_summary_config_identity(make_cfg, tmp_path):
    cfg = make_cfg(*TRAIN, "attn=gqa", "attn.n_kv_heads=2", "pos=rope", "logger.group=g1",
                   "logger.tags=[mine," + "x" * 80 + "]")
    res = run_job(cfg, tmp_path)
    assert res["status"] == "ok", res["error"]
    run = read_run(tmp_path)
    assert run.path.is_relative_to(tmp_path)  # W&B files live inside the job's run directory
    assert (run.name, run.group, run.job_type) == (res["variant"], "g1", "train")
    assert {"attn=gqa", "pos=rope", "norm=layernorm", "ffn=gelu", "model=tiny", "mine"} <= set(run.tags)
    assert all(len(t) <= MAX_TAG_LEN for t in run.tags) and "x" * MAX_TAG_LEN in run.tags
    assert run.config["attn.n_kv_heads"] == 2 and run.config["pos.name"] == "rope"
    assert run.config["train.steps"] == 6 and run.config["variant"] == res["variant"]
    assert run.exit_code == 0
    # history = what the trainer logged to metrics.jsonl, step for step
    local = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["_step"] for r in run.history] == [r["step"] for r in local] == [2, 3, 4, 6]
    assert run.column("train_loss") == pytest.approx([r["train_loss"] for r in local])
    assert len(run.column("lr")) == len(run.column("tokens_per_s")) == 4
    assert run.column("val_loss") == pytest.approx([r["val_loss"] for r in local if "val_loss" in r])
    s = run.summary
    assert s["status"] == "ok" and s["variant"] == res["variant"]
    assert s["train/train_loss"] == pytest.approx(res["train"]["train_loss"])
    assert s["train/val_loss"] == pytest.approx(res["train"]["val_loss"])
    assert s["model/params"] == res["model"]["params"]
    assert s["model/kv_cache_bytes_per_token"] == res["model"]["kv_cache_bytes_per_token"]


def test_bench_job_summary_and_table(make_cfg, tmp_path):
    res = run_job(make_cfg(*BENCH), tmp_path)
    assert res["status"] == "ok", res["error"]
    run = read_run(tmp_path)
    assert run.job_type == "bench" and run.exit_code == 0
    assert {r["mode"] for r in res["bench"]} == {"forward", "decode"}
    for row in res["bench"]:
        base = f"bench/{row['mode']}/T{row['seq_len']}"
        for key in ("median_ms", "p10_ms", "p90_ms", "tokens_per_s", "peak_mem_bytes", "mfu"):
            if row.get(key) is not None:
                assert run.summary[f"{base}/{key}"] == pytest.approx(row[key]), key
        assert run.summary[f"{base}/median_ms"] > 0
    table = run.summary["bench/table"]
    assert table["nrows"] == len(res["bench"])
    data = json.loads((run.path.parent / "files" / table["path"]).read_text())
    col = data["columns"].index("median_ms")
    assert sorted(r[col] for r in data["data"]) == sorted(r["median_ms"] for r in res["bench"])


def test_failed_job_closes_run_with_nonzero_exit(make_cfg, tmp_path, monkeypatch):
    import attnbench.model

    def broken(cfg):
        raise RuntimeError("boom in build")

    monkeypatch.setattr(attnbench.model, "build_model", broken)
    res = run_job(make_cfg("stages=[]"), tmp_path)
    assert res["status"] == "failed" and "boom in build" in res["error"]
    run = read_run(tmp_path)
    assert run.exit_code == 1
    assert run.summary["status"] == "failed" and "boom" in run.summary["error"]


def test_interrupted_job_still_finishes_its_run(make_cfg, tmp_path, monkeypatch):
    import attnbench.model

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(attnbench.model, "build_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_job(make_cfg("stages=[]"), tmp_path)
    assert read_results(tmp_path / "results.json")["status"] == "interrupted"
    assert read_run(tmp_path).exit_code == 1


def test_sigterm_during_training_keeps_the_logged_history(make_cfg, tmp_path, monkeypatch):
    """The trainer turns SIGTERM into a normal return; the job's finally then finishes the W&B run."""
    import os
    import signal

    from attnbench.track.wandb_sink import WandbSink

    original = WandbSink.log

    def log_then_terminate(self, metrics, step):
        original(self, metrics, step)
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(WandbSink, "log", log_then_terminate)
    res = run_job(make_cfg(*TRAIN, "train.steps=50", "train.log_every=1", "train.eval_every=0"), tmp_path)
    assert res["status"] == "interrupted"
    run = read_run(tmp_path)
    assert run.exit_code == 1 and run.summary["status"] == "interrupted"
    assert [r["_step"] for r in run.history][:4] == [1, 2, 3, 4] and len(run.history) < 50


def test_unfinished_previous_run_is_finished_not_reused(make_cfg, tmp_path):
    import wandb

    stale = wandb.init(mode="offline", dir=str(tmp_path / "stale"), project="stale", name="stale")
    stale.log({"x": 1})  # a crashed job in the same process never called finish()
    res = run_job(make_cfg("stages=[]"), tmp_path / "job")
    run = read_run(tmp_path / "job")
    assert (run.name, run.project, run.exit_code) == (res["variant"], "attnbench", 0)
    assert read_run(tmp_path / "stale").exit_code is not None


@pytest.mark.parametrize("how", [["logger.mode=disabled"], ["logger=none"], ["env:WANDB_MODE=disabled"]])
def test_no_wandb_files_when_off(make_cfg, tmp_path, monkeypatch, how):
    overrides = [h for h in how if not h.startswith("env:")]
    if how[0].startswith("env:"):
        monkeypatch.setenv(*how[0][4:].split("="))
    res = run_job(make_cfg("stages=[]", *overrides), tmp_path)
    assert res["status"] == "ok" and (tmp_path / "results.json").is_file()
    assert not (tmp_path / "wandb").exists()


def _no_credentials(monkeypatch, tmp_path: Path) -> None:
    """No API key anywhere, and a server address that cannot leave this machine."""
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / "wandb-config"))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: refused at once


def test_online_without_api_key_falls_back_to_offline_fast(make_cfg, tmp_path, monkeypatch, fresh_wandb, caplog):
    _no_credentials(monkeypatch, tmp_path)
    t0 = time.monotonic()
    res = run_job(make_cfg("stages=[]", "logger.mode=online"), tmp_path / "job")
    assert time.monotonic() - t0 < 30
    assert res["status"] == "ok" and (tmp_path / "job" / "results.json").is_file()
    [f] = find_run_files(tmp_path / "job")
    assert f.parent.name.startswith("offline-run-") and read_run(f).exit_code == 0
    assert "no W&B API key" in caplog.text


def test_online_unreachable_server_is_bounded_then_offline(make_cfg, tmp_path, monkeypatch, fresh_wandb, caplog):
    import attnbench.track.wandb_sink

    _no_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # a key, but the server cannot be reached
    monkeypatch.setattr(attnbench.track.wandb_sink, "_online_failed", False)
    cfg = make_cfg("stages=[]", "logger.mode=online", "logger.init_timeout_s=2")
    t0 = time.monotonic()
    res = run_job(cfg, tmp_path / "job")
    assert time.monotonic() - t0 < 30
    assert res["status"] == "ok"
    offline = [f for f in find_run_files(tmp_path / "job") if f.parent.name.startswith("offline-run-")]
    assert len(offline) == 1 and read_run(offline[0]).exit_code == 0
    assert "online init failed" in caplog.text  # it did try online, and gave up within the bound
    caplog.clear()
    run_job(cfg, tmp_path / "job2")  # the next job of a sequential sweep does not wait again
    assert "online init failed" not in caplog.text
    assert [f.parent.name[:12] for f in find_run_files(tmp_path / "job2")] == ["offline-run-"]


def test_credentials_found_in_netrc_without_prompting(tmp_path, monkeypatch, fresh_wandb):
    from attnbench.track.wandb_sink import has_credentials

    _no_credentials(monkeypatch, tmp_path)
    assert not has_credentials()
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1:9\n  login user\n  password {'k' * 40}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert has_credentials()  # `wandb login` users go online


def test_mode_resolution(make_cfg, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_mode(make_cfg("stages=[]")) == "offline"  # the default: no account, no network
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode(make_cfg("stages=[]")) == "disabled"
    assert resolve_mode(make_cfg("stages=[]", "logger.mode=offline")) == "offline"  # logger.mode wins
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode(make_cfg("stages=[]")) == "offline"


def test_bad_logger_mode_is_one_line_config_error(make_cfg):
    from attnbench.config import ConfigError

    with pytest.raises(ConfigError, match=r"logger.mode=sometimes.*offline, online, disabled"):
        make_cfg("stages=[]", "logger.mode=sometimes")


def test_tags_name_each_axis(make_cfg):
    tags = run_tags(make_cfg("stages=[]", "attn=mqa", "pos=alibi", "norm=rmsnorm", "ffn=swiglu", "model=small"))
    assert tags == ["attn=mqa", "pos=alibi", "norm=rmsnorm", "ffn=swiglu", "model=small"]


def test_summary_figures_mapping():
    res = {"status": "ok", "error": None, "variant": "v", "config": {"a": 1}, "schema": 1,
           "model": {"params": 10, "params_by_component": {"ffn": 4}},
           "train": {"val_loss": 1.5, "val_loss_by_len": {"64": 1.5}, "sample": None},
           "bench": [{"mode": "forward", "seq_len": 16, "median_ms": 2.0, "peak_mem_bytes": 7, "mfu": None}]}
    assert summary_figures(res) == {
        "status": "ok", "variant": "v", "model/params": 10, "model/params_by_component/ffn": 4,
        "train/val_loss": 1.5, "train/val_loss_by_len/64": 1.5,
        "bench/forward/T16/median_ms": 2.0, "bench/forward/T16/peak_mem_bytes": 7}


def test_reader_spans_blocks_and_stops_at_a_torn_tail(tmp_path):
    import wandb

    run = wandb.init(mode="offline", dir=str(tmp_path), project="p", reinit="finish_previous")
    big = "y" * 100_000  # one record over three 32 KiB blocks: first/middle/last chunks
    run.summary["big"] = big
    for i in range(5):
        run.log({"i": i}, step=i)
    run.finish()
    from attnbench.track.wandb_sink import wait_for_exit_record

    [f] = find_run_files(tmp_path)
    assert wait_for_exit_record(f, 30)
    full = read_run(f)
    assert full.summary["big"] == big and full.column("i") == [0, 1, 2, 3, 4]
    data = f.read_bytes()
    assert len(list(iter_payloads(data[:-3]))) == len(list(iter_payloads(data))) - 1
    with pytest.raises(ValueError):
        list(iter_payloads(b"not a wandb file"))


@pytest.mark.slow
def test_multirun_jobs_share_the_sweep_group(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("-m", "attn=mha,gqa", *BENCH, "bench.modes=[forward]", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = [read_run(sweep / str(i)) for i in (0, 1)]
    assert runs[0].group == runs[1].group and runs[0].group.endswith(sweep.name)
    assert {r.name for r in runs} == {read_results(sweep / str(i) / "results.json")["variant"] for i in (0, 1)}
    assert all(r.exit_code == 0 and r.summary["bench/forward/T16/median_ms"] > 0 for r in runs)


def test_unknown_logger_name_is_a_config_error_listing_the_backends(make_cfg):
    from attnbench.config import ConfigError

    with pytest.raises(ConfigError, match=r"^logger=tensorboard: unknown option; choose from \[none, wandb\]$"):
        make_cfg("stages=[]", "logger.name=tensorboard")  # was silently ignored: no mirror, no error


def test_a_logger_registered_from_outside_mirrors_the_job(make_cfg, tmp_path, monkeypatch):
    """The extension path for a logger backend: one factory in registry.LOGGERS, picked by logger.name."""
    from attnbench.registry import LOGGERS

    calls: list = []

    class ToySink:
        def log(self, metrics, step):
            calls.append(("log", step, sorted(metrics)))

        def summary(self, results):
            calls.append(("summary", results["status"]))

        def close(self, status):
            calls.append(("close", status))

    def toy(cfg, run_dir):
        calls.append(("init", cfg.logger.project, Path(run_dir)))
        return ToySink()

    monkeypatch.setitem(LOGGERS._items, "toy", toy)
    res = run_job(make_cfg(*TRAIN, "logger.name=toy", "logger.project=p1"), tmp_path)
    assert res["status"] == "ok", res["error"]
    assert calls[0] == ("init", "p1", tmp_path)
    assert [c[1] for c in calls if c[0] == "log"] == [2, 3, 4, 6]  # the steps metrics.jsonl holds
    assert ("summary", "ok") in calls and calls[-1] == ("close", "ok")
    assert not (tmp_path / "wandb").exists()


def test_job_sink_and_report_run_share_the_wandb_rules(monkeypatch, tmp_path):
    """One rule set: the report run resolves its mode and its sweep group exactly as the job sink does."""
    from attnbench.report import wandb_run
    from attnbench.track import wandb_rules, wandb_sink

    for env, want in ((None, "offline"), ("disabled", "disabled"), ("dryrun", "offline"), ("bogus", "offline")):
        if env is None:
            monkeypatch.delenv("WANDB_MODE", raising=False)
        else:
            monkeypatch.setenv("WANDB_MODE", env)
        assert wandb_run.resolve_mode(None) == wandb_rules.resolve_mode(None) == want
    _no_credentials(monkeypatch, tmp_path)
    assert wandb_run.resolve_mode("online") == "offline"  # no key: never a prompt
    sweep = tmp_path / "runs" / "multirun" / "2026-11-30" / "10-56-45"
    assert wandb_rules.sweep_group(sweep, None) == "multirun/2026-11-30/10-56-45"
    assert wandb_rules.sweep_group(sweep, "kernels") == "kernels:multirun/2026-11-30/10-56-45"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}")
    assert wandb_run.sweep_group([], [sweep]) == wandb_rules.sweep_group(sweep, None)
    assert wandb_sink.has_credentials is wandb_rules.has_credentials


def test_attempts_started_in_the_same_second_are_read_oldest_first(tmp_path):
    """W&B names a second attempt of the same run id in the same second `...-<id>-1`. Run ids may start
    with a digit, so ordering by the dash-separated field before the last one put the resumed run first
    (CI: the resumed attempt's steps 5..10 were read as the first attempt's)."""
    names = [
        "offline-run-20261207_152944-1abc2def-2",
        "offline-run-20261207_152944-1abc2def",
        "run-20261207_152943-1abc2def",
        "offline-run-20261207_152944-1abc2def-10",
        "offline-run-20261207_152944-1abc2def-1",
    ]
    for name in names:
        (tmp_path / "wandb" / name).mkdir(parents=True)
        (tmp_path / "wandb" / name / "run-1abc2def.wandb").write_bytes(b"")
    got = [p.parent.name for p in find_run_files(tmp_path)]
    assert got == [
        "run-20261207_152943-1abc2def",
        "offline-run-20261207_152944-1abc2def",
        "offline-run-20261207_152944-1abc2def-1",
        "offline-run-20261207_152944-1abc2def-2",
        "offline-run-20261207_152944-1abc2def-10",
    ]


def test_the_resumed_run_id_is_read_from_the_file_not_the_attempt_suffix(tmp_path):
    """A third attempt must resume the same id: the latest folder `...-<id>-1` ends in an attempt number."""
    from attnbench.track.wandb_sink import previous_run_id

    for name in ("offline-run-20261207_152944-k3x9q2ab", "offline-run-20261207_152944-k3x9q2ab-1"):
        (tmp_path / "wandb" / name).mkdir(parents=True)
        (tmp_path / "wandb" / name / "run-k3x9q2ab.wandb").write_bytes(b"")
    assert previous_run_id(tmp_path) == "k3x9q2ab"
