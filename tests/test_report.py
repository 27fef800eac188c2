"""The comparison report: synthetic results in the results.json schema, and one small real sweep (slow)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from attnbench import report
from attnbench.report.plots import pareto_front
from attnbench.track.results import check_results

PNGS = ["latency_vs_seq_len.png", "memory_vs_seq_len.png", "training_curves.png", "val_loss_vs_len.png",
        "quality_vs_throughput.png"]


def _bench(scale: float, lens=(16, 32, 64), oom_at: int | None = None) -> list[dict]:
    rows = []
    for mode, factor in (("forward", 1.0), ("train_step", 3.0)):
        for t in lens:
            ok = not (mode == "train_step" and t == oom_at)
            ms = scale * factor * t / 10
            rows.append({"mode": mode, "batch_size": 2, "seq_len": t, "status": "ok" if ok else "oom",
                         "median_ms": ms if ok else None, "p10_ms": 0.9 * ms if ok else None,
                         "p90_ms": 1.1 * ms if ok else None, "repeats": 3,
                         "tokens_per_s": 2 * t / ms * 1e3 if ok else None,
                         "peak_mem_bytes": int(1000 * t * scale) if ok else None, "mfu": 0.01 if ok else None})
    return rows


def _result(variant: str, scale: float, val_loss: float, by_len: dict, **extra) -> dict:
    return {
        "schema": 1, "status": "ok", "error": None, "variant": variant,
        "config": {"attn": {"impl": extra.pop("impl", "sdpa")}, "train": {"seq_len": 64}},
        "env": {"device": "cpu", "device_name": "x86_64", "torch": "2.13.0", "threads": 2, "dtype": "float32",
                "peak_flops": 1e11},
        "model": {"params": int(100_000 * scale), "non_embedding_params": 90_000, "flops_per_token_fwd": 2e5,
                  "flops_per_token_train": 6e5, "kv_cache_bytes_per_token": int(1024 * scale)},
        "bench": _bench(scale, **extra),
        "train": {"status": "ok", "steps": 4, "tokens": 512, "wall_s": 1.0, "tokens_per_s": 1000 / scale,
                  "train_loss": val_loss + 0.1, "val_loss": val_loss, "val_loss_by_len": by_len,
                  "metric_name": "recall_acc", "metric": 0.5 / val_loss},
    }


def _write_run(run_dir: Path, res: dict, overrides: list[str], curve: list | None = None) -> None:
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run_dir / "results.json").write_text(json.dumps(res))
    if curve is not None:
        (run_dir / "metrics.jsonl").write_text("\n".join(curve) + "\n")


def _curve(loss0: float) -> list[str]:
    rows = [json.dumps({"step": s, "train_loss": loss0 - 0.1 * s, "lr": 1e-3, "tokens_per_s": 1e3, "grad_norm": 1.0})
            for s in range(1, 5)]
    rows[1] = rows[1][:20]  # a torn line is skipped
    rows.append(json.dumps({"step": 4, "train_loss": loss0 - 0.4, "val_loss": loss0 - 0.3, "val_recall_acc": 0.2}))
    rows.append(json.dumps({"step": 5}))  # a row without figures is tolerated
    return rows


FAILED = {"schema": 1, "status": "failed", "error": "attn.impl=flex: needs torch>=2.5 | not here",
          "variant": "gqa-alibi-layernorm-gelu-L2-D64", "config": {}, "env": {}, "model": {}, "bench": []}


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A sweep dir as Hydra lays it out: two runs share a variant and differ in attn.impl, one uses learned
    positions (val loss n/a past its context), one job failed at validation, job 10 sorts after job 3."""
    root = tmp_path / "multirun" / "2026-01-02" / "03-04-05"
    common = ["stages=[bench,train]", "train.steps=4"]
    _write_run(root / "0", _result("mha-rope-layernorm-gelu-L2-D64", 1.0, 3.0, {"64": 3.0, "128": 3.2}),
               ["attn=mha", "pos=rope", "attn.impl=sdpa", *common], _curve(4.0))
    _write_run(root / "1", _result("mha-rope-layernorm-gelu-L2-D64", 2.0, 3.0, {"64": 3.0, "128": 3.3}, impl="manual"),
               ["attn=mha", "pos=rope", "attn.impl=manual", *common], _curve(4.1))
    _write_run(root / "2", _result("mqa-learned-layernorm-gelu-L2-D64", 0.5, 3.5, {"64": 3.5, "128": None},
                                   oom_at=64), ["attn=mqa", "pos=learned", *common], _curve(4.2))
    _write_run(root / "3", FAILED, ["attn=gqa", "pos=alibi", "attn.impl=flex", *common])
    _write_run(root / "10", _result("gqa-rope-layernorm-gelu-L2-D64", 0.8, 3.4, {"64": 3.4}),
               ["attn=gqa", "pos=rope", *common], _curve(4.3))
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fixture_follows_the_results_schema(sweep):
    for path in sorted(sweep.rglob("results.json")):
        assert check_results(json.loads(path.read_text())) == [], path


def test_report_table_and_csv(sweep):
    rep = report.build_report([sweep])
    out = sweep / "report"
    assert set(rep.files) == {"report.md", "results.csv", "variants.csv", "bench.csv"}
    md = (out / "report.md").read_text()
    assert md.index("## Variants (5)") < md.index("## Jobs")  # the variant table comes first
    md = md.split("## Jobs")[1]
    for variant in ("mha-rope", "mqa-learned", "gqa-alibi", "gqa-rope"):
        assert md.count(f"| {variant}-layernorm-gelu-L2-D64 |") == (2 if variant == "mha-rope" else 1)
    assert "| forward ms (T=64) |" in md  # every run's largest forward T: said once, in the header
    assert "| 6.4 |" in md  # run 0: forward at T=64 = 64 / 10 ms
    assert "| train step ms |" in md and "| 4.8 (T=32) |" in md  # run 2: oom at 64, so its largest ok T
    assert "| attn.impl=sdpa |" in md and "| attn.impl=manual |" in md  # only where the variant is ambiguous
    assert "needs torch>=2.5 \\| not here" in md  # the failed job: status and escaped error
    assert "ok (1 bench oom)" in md
    rows = _csv(out / "results.csv")
    assert [r["run_dir"].rsplit("/", 1)[-1] for r in rows] == ["0", "1", "2", "3", "10"]
    assert len({r["label"] for r in rows}) == 5
    assert float(rows[0]["forward_median_ms"]) == pytest.approx(6.4)
    assert rows[2]["train_step_seq_len"] == "32" and rows[2]["bench_points_not_ok"] == "1"
    assert rows[2]["val_loss_T128"] == "" and float(rows[1]["val_loss_T128"]) == pytest.approx(3.3)
    assert rows[3]["status"] == "failed" and rows[3]["error"] == FAILED["error"] and rows[3]["params"] == ""
    assert rows[1]["overrides"].startswith("attn=mha pos=rope attn.impl=manual")
    assert len(_csv(out / "bench.csv")) == 4 * 6


def test_report_plots_are_real_images(sweep):
    from matplotlib.image import imread

    rep = report.build_report([sweep], out=sweep / "elsewhere")
    assert sorted(p.name for p in rep.images.values()) == sorted(PNGS)
    for name in PNGS:
        img = imread(sweep / "elsewhere" / name)  # (H, W, 4)
        assert img.shape[0] > 300 and img.shape[1] > 600 and img.std() > 0.05, name
        assert f"]({name})" in (sweep / "elsewhere" / "report.md").read_text()


def test_plots_skip_what_runs_lack(tmp_path):
    _write_run(tmp_path / "failed", FAILED, [])
    rep = report.build_report([tmp_path / "failed"], out=tmp_path / "r1")
    assert rep.images == {} and "| failed |" in (tmp_path / "r1" / "report.md").read_text()
    assert "bench.csv" not in rep.files
    bench_only = _result("mha-rope-layernorm-gelu-L2-D64", 1.0, 3.0, {})
    del bench_only["train"]
    _write_run(tmp_path / "bench_only", bench_only, [])
    rep = report.build_report([tmp_path / "bench_only"], out=tmp_path / "r2")
    assert set(rep.images) == {"latency", "memory"}
    md = (tmp_path / "r2" / "report.md").read_text()
    assert "| val loss |" not in md and "| forward tok/s (T=64) |" in md


def test_labels_drop_shared_parts_and_stay_unique(tmp_path):
    res = _result("mha-rope-layernorm-gelu-L2-D64", 1.0, 3.0, {})
    for name in ("a", "b"):  # the same config twice, no overrides.yaml: the directory tells them apart
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(res))
    other = dict(res, variant="mqa-rope-layernorm-gelu-L2-D64")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "results.json").write_text(json.dumps(other))
    runs = report.collect([tmp_path])
    assert report.name_runs(runs) == "*-rope-layernorm-gelu-L2-D64"
    assert [r.short for r in runs] == ["mha (tmp_path/a)".replace("tmp_path", tmp_path.name),
                                       "mha (tmp_path/b)".replace("tmp_path", tmp_path.name), "mqa"]
    assert len({r.label for r in runs}) == 3


def test_config_tells_same_variant_apart_without_overrides(tmp_path):
    for name, impl in (("x", "sdpa"), ("y", "manual")):
        (tmp_path / name).mkdir()
        res = _result("mha-rope-layernorm-gelu-L2-D64", 1.0, 3.0, {}, impl=impl)
        (tmp_path / name / "results.json").write_text(json.dumps(res))
    runs = report.collect([tmp_path])
    report.name_runs(runs)
    assert [r.distinct for r in runs] == ["attn.impl=sdpa", "attn.impl=manual"]


def test_pareto_front():
    # (tokens/s, loss): 0 fastest; 2 best loss; 1 between them on both; 3 is beaten by 1
    pts = [(1000.0, 3.5), (500.0, 3.2), (100.0, 3.0), (400.0, 3.3), (1000.0, 3.6)]
    assert pareto_front(pts) == [2, 1, 0]
    assert pareto_front([(1.0, 1.0)]) == [0]


def test_main_writes_and_prints(sweep, tmp_path, capsys):
    assert report.main([str(sweep), str(sweep / "0"), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "5 runs (4 ok, 1 failed)" in printed  # job 0 given twice: counted once
    assert f"wrote {tmp_path / 'out' / 'report.md'}" in printed and "quality_vs_throughput.png" in printed
    assert report.main([str(tmp_path / "empty_or_missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 2
    assert "no results.json under" in capsys.readouterr().err


def test_wandb_trouble_never_fails_the_report(sweep, capsys, monkeypatch):
    import wandb

    assert report.main([str(sweep), "--wandb", "--wandb-mode", "disabled"]) == 0
    assert "W&B report run: not logged" in capsys.readouterr().out

    def broken_init(**kwargs):
        raise TimeoutError("init timed out")

    monkeypatch.setattr(wandb, "init", broken_init)
    assert report.main([str(sweep), "--wandb", "--out", str(sweep / "r2")]) == 0
    assert "W&B report run: not logged" in capsys.readouterr().out
    assert (sweep / "r2" / "report.md").is_file() and not (sweep / "r2" / "wandb").exists()


@pytest.mark.slow
def test_wandb_report_run_offline(sweep):
    from attnbench.track.wandb_reader import read_run

    assert report.main([str(sweep), "--wandb"]) == 0
    run = read_run(sweep / "report")  # the report run lives in <out>/wandb
    assert run.job_type == "report" and run.exit_code == 0
    assert run.group == "multirun/2026-01-02/03-04-05"  # what the jobs' sink would have used
    assert run.summary["n_runs"] == 5 and run.summary["n_failed"] == 1
    assert {"report/table", "report/latency", "report/pareto"} <= set(run.history[0])


@pytest.mark.slow
def test_report_from_a_real_sweep(cli, tmp_path):
    """A tiny real multirun (bench + train, W&B offline), then `attnbench report` on it."""
    import subprocess
    import sys

    from attnbench.track.wandb_reader import read_run

    sweep = tmp_path / "sweep"
    proc = cli("-m", "attn=mha,mqa", "stages=[bench,train]", "bench.seq_lens=[16,32]", "bench.repeats=2",
               "bench.modes=[forward]", "train.steps=6", "train.batch_size=4", "train.eval_every=3",
               "train.eval_batches=1", "train.eval_seq_lens=[32]", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = subprocess.run([sys.executable, "-m", "attnbench", "report", str(sweep), "--wandb"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    files = {p.name for p in (sweep / "report").iterdir()}
    assert {"report.md", "results.csv", "bench.csv", *PNGS} <= files
    md = (sweep / "report" / "report.md").read_text()
    rows = _csv(sweep / "report" / "results.csv")
    for variant in ("mha-learned-layernorm-gelu-L2-D64", "mqa-learned-layernorm-gelu-L2-D64"):
        assert f"| {variant} |" in md
        row = next(r for r in rows if r["variant"] == variant)
        assert row["status"] == "ok" and float(row["forward_median_ms"]) > 0 and row["forward_seq_len"] == "32"
        assert float(row["val_loss"]) > 0 and float(row["train_steps"]) == 6
    assert read_run(sweep / "report").group == read_run(sweep / "0").group
