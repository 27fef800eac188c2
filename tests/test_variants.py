"""Grouping jobs into variants: replicates, a tuned key, the baseline, failed and unreadable jobs, scale."""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import pytest

from attnbench import report
from attnbench.errors import ConfigError
from attnbench.report import stats
from attnbench.report.variants import grid_edge, group, variant_rows
from attnbench.sweep import main as sweep_main
from attnbench.sweep.summary import collect as summary_collect

T2 = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025))  # exact t(0.975) with 2 degrees of freedom


def _res(attn: str, seed: int, lr: float, val_loss: float, tok_s: float = 1000.0, status: str = "ok",
         group_name: str = "g") -> dict:
    ok = status == "ok"
    return {
        "schema": 1, "status": status, "error": None if ok else "diverged at step 3", "variant": f"{attn}-rope",
        "config": {"attn": {"name": attn, "n_heads": 4}, "seed": seed, "train": {"lr": lr, "seq_len": 64},
                   "logger": {"group": group_name}, "resume": False},
        "env": {"device": "cpu", "device_name": "x", "torch": "2", "threads": 2, "dtype": "float32"},
        "model": {"params": 1000 if attn == "mha" else 800},
        "bench": [{"mode": "forward", "batch_size": 2, "seq_len": 64, "status": "ok", "median_ms": 2.0 + seed,
                   "p10_ms": 1.0, "p90_ms": 3.0, "tokens_per_s": 1e4}] if ok else [],
        "train": {"status": status, "tokens_per_s": tok_s, "val_loss": val_loss if ok else None,
                  "metric_name": "recall_acc", "metric": 1.0 / val_loss if ok else None},
    }


def _write(root: Path, num: int, res, overrides: list[str], text: str | None = None) -> Path:
    d = root / str(num)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (d / "results.json").write_text(text if text is not None else json.dumps(res))
    (d / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "train_loss": 3.0 - 0.1 * s})
                                               for s in range(1, 6)) + "\n")
    return d


# val loss by (attn, lr, seed): gqa prefers lr 3e-3, mha prefers 1e-3
LOSS = {("mha", 1e-3): [2.0, 2.1, 2.3], ("mha", 3e-3): [2.2, 2.4, 2.5],
        ("gqa", 1e-3): [2.4, 2.5, 2.6], ("gqa", 3e-3): [1.9, 2.0, 2.4]}


@pytest.fixture
def lr_sweep(tmp_path) -> Path:
    root = tmp_path / "sweep"
    n = 0
    for (attn, lr), losses in LOSS.items():
        for seed, loss in enumerate(losses):
            _write(root, n, _res(attn, seed, lr, loss, group_name=f"g{n}"),  # logger keys never split variants
                   [f"attn={attn}", f"seed={seed}", f"train.lr={lr}"])
            n += 1
    _write(root, n, _res("gqa", 0, 1e-2, 0.0, status="diverged"), ["attn=gqa", "seed=0", "train.lr=1e-2"])
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_replicates_group_and_lr_values_stay_apart(lr_sweep):
    comp = group(report.collect([lr_sweep]))
    assert len(comp.variants) == 5  # 2 attn x 2 lr, plus gqa at lr 1e-2 (only failed)
    v = comp.variants[0]
    assert v.label == "mha-rope [train.lr=0.001]" and v.n == 3
    assert v.stats["val_loss"].mean == pytest.approx(6.4 / 3)
    assert comp.variants[-1].n == 0 and comp.variants[-1].n_failed == 1


def test_tune_chooses_the_best_lr_per_variant_and_baseline_pairs_by_seed(lr_sweep):
    comp = group(report.collect([lr_sweep]), tune="train.lr", baseline=["attn=mha"])
    mha, gqa = comp.variants
    assert (mha.label, gqa.label) == ("mha-rope", "gqa-rope")
    assert (mha.tuned_value, gqa.tuned_value) == (1e-3, 3e-3)
    assert gqa.tuned_over == [1e-3, 3e-3, 1e-2] and gqa.n_failed == 1 and gqa.n == 3
    e = gqa.stats["val_loss"]  # 1.9, 2.0, 2.4: mean 2.1, var ((.2)^2 + (.1)^2 + (.3)^2) / 2 = 0.07
    assert e.mean == pytest.approx(2.1) and e.std == pytest.approx(math.sqrt(0.07))
    assert e.ci95 == pytest.approx(T2 * math.sqrt(0.07) / math.sqrt(3))
    # paired by seed: gqa - mha = -0.1, -0.1, +0.1 -> mean -1/30, sd sqrt(((1/15)^2 * 2 + (2/15)^2) / 2)
    d = gqa.diffs["val_loss"]
    sd = math.sqrt(((1 / 15) ** 2 * 2 + (2 / 15) ** 2) / 2)
    assert gqa.diff_method == "paired" and d.diff == pytest.approx(-1 / 30)
    assert d.ci95 == pytest.approx(T2 * sd / math.sqrt(3))
    assert (mha.verdict, gqa.verdict) == ("baseline", "within noise")
    rows = variant_rows(comp)
    assert rows[1]["train.lr"] == 3e-3 and rows[1]["tuned_over"] == "0.001,0.003,0.01"
    # mha's best is the lowest lr it tried: flagged; gqa's 3e-3 has 1e-2 (diverged) above it: not flagged
    assert (rows[0]["tuned_at_edge"], rows[1]["tuned_at_edge"]) == ("lowest", "")
    assert rows[1]["replicates"] == "seed=0,1,2" and rows[1]["n_failed"] == 1
    assert rows[1]["val_loss_diff"] == pytest.approx(-1 / 30) and rows[0]["verdict"] == "baseline"
    assert rows[0]["val_loss_diff"] is None and rows[0]["diff_method"] == ""  # no difference to itself
    assert rows[1]["forward_median_ms_mean"] == pytest.approx(3.0)


@pytest.mark.parametrize("value,values,edge", [
    (1e-3, [1e-3, 3e-3, 1e-2], "lowest"), (1e-2, [1e-3, 3e-3, 1e-2], "highest"), (3e-3, [1e-3, 3e-3, 1e-2], ""),
    (1e-3, [1e-3], ""), (None, [1e-3, 1e-2], ""), ("adamw", ["adamw", "sgd"], ""),
])
def test_grid_edge(value, values, edge):
    assert grid_edge(value, values) == edge


def test_objective_direction_follows_the_metric(lr_sweep):
    comp = group(report.collect([lr_sweep]), tune="train.lr", objective="metric")  # recall acc: higher
    assert not comp.lower_is_better and comp.variants[1].tuned_value == 3e-3
    comp = group(report.collect([lr_sweep]), tune="train.lr", objective="train_tokens_per_s")
    assert not comp.lower_is_better


def test_welch_when_the_replicates_differ(tmp_path):
    root = tmp_path / "s"
    for n, (attn, seed, loss) in enumerate([("mha", 0, 1.0), ("mha", 1, 2.0), ("mha", 2, 3.0),
                                            ("gqa", 5, 2.0), ("gqa", 6, 4.0), ("gqa", 7, 6.0), ("gqa", 8, 8.0)]):
        _write(root, n, _res(attn, seed, 1e-3, loss), [f"attn={attn}", f"seed={seed}"])
    comp = group(report.collect([root]), baseline=["attn.name=mha"])
    gqa = comp.variants[1]
    assert gqa.diff_method == "welch"
    expect = stats.welch_diff([2.0, 4.0, 6.0, 8.0], [1.0, 2.0, 3.0])
    assert gqa.diffs["val_loss"].diff == pytest.approx(3.0)
    assert gqa.diffs["val_loss"].ci95 == pytest.approx(expect.ci95)
    assert gqa.diffs["val_loss"].ci95 == pytest.approx(2.7562848743595714 * math.sqrt(2), rel=1e-9)
    assert gqa.verdict == "within noise"  # 3.0 < 2.756 * sqrt(2) = 3.90


def test_n_1_has_no_interval_and_no_verdict(tmp_path):
    _write(tmp_path / "s", 0, _res("mha", 0, 1e-3, 2.0), ["attn=mha"])
    _write(tmp_path / "s", 1, _res("gqa", 0, 1e-3, 1.5), ["attn=gqa"])
    rep = report.build_report([tmp_path / "s"], baseline=["attn=mha"])
    rows = list(csv.DictReader(open(rep.files["variants.csv"])))
    assert [r["n"] for r in rows] == ["1", "1"]
    assert rows[1]["val_loss_ci95"] == "" and rows[1]["val_loss_std"] == "" and rows[1]["verdict"] == ""
    assert float(rows[1]["val_loss_diff"]) == pytest.approx(-0.5)


@pytest.mark.parametrize("kwargs,message", [
    ({"tune": "train.nope"}, "--tune train.nope: not a key of any job's config"),
    ({"objective": "nope"}, "--objective nope: not a numeric figure of results.csv"),
    ({"baseline": ["attn=flash"]}, "--baseline attn=flash: matches no variant"),
    ({"baseline": ["pos=rope"]}, "--baseline pos=rope: no job's config has pos"),
    ({"baseline": ["seed=0"]}, "--baseline seed=0: no job's config has seed"),
    ({"replicates": ["data.seed"]}, "--replicates data.seed: not a key"),
])
def test_bad_options_are_one_line_config_errors(lr_sweep, kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        group(report.collect([lr_sweep]), **kwargs)


def test_ambiguous_baseline(lr_sweep):
    with pytest.raises(ConfigError, match="matches 2 variants; add one of train.lr"):
        group(report.collect([lr_sweep]), baseline=["attn=mha"])
    comp = group(report.collect([lr_sweep]), baseline=["attn=mha", "train.lr=1e-3"])
    assert comp.baseline.label == "mha-rope [train.lr=0.001]"


def test_cli_tune_and_baseline(lr_sweep, capsys):
    assert report.main([str(lr_sweep), "--tune", "train.lr", "--baseline", "attn=mha"]) == 0
    out = capsys.readouterr().out
    assert "13 runs (12 ok, 1 diverged), 2 variants" in out
    md = (lr_sweep / "report" / "report.md").read_text()
    assert "| variant | n | train.lr (chosen of) | val loss (lower is better) | Δ vs baseline (paired) | verdict |" in md
    assert ("| gqa-rope | 3 (+1 not ok) | 0.003 (0.001, 0.003, 0.01); not complete, ranked last: 0.01 (seed=0 "
            "diverged) | 2.100 ± 0.657 | -0.033 ± 0.287 | within noise |") in md
    assert "| mha-rope (baseline) | 3 | 0.001 (0.001, 0.003), lowest tried |" in md
    note = ("For 1 of 2 variants the chosen train.lr is the lowest or highest value tried: mha-rope (lowest). "
            "The best value may lie outside the grid")
    assert f"**Grid edge.** {note}" in md and f"note: {note}" in out
    results = list(csv.DictReader(open(lr_sweep / "report" / "results.csv")))
    assert len(results) == 13 and {r["compare_variant"] for r in results} == {"mha-rope", "gqa-rope"}
    assert sum(r["at_chosen_train.lr"] == "True" for r in results) == 6
    assert report.main([str(lr_sweep), "--tune", "nope"]) == 2
    assert "--tune nope: not a key" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad job directories
def test_unreadable_results_are_rows_not_crashes(tmp_path, capsys):
    root = tmp_path / "sweep"
    root.mkdir()
    (root / "multirun.yaml").write_text("{}\n")  # before the jobs, as Hydra writes it
    _write(root, 0, _res("mha", 0, 1e-3, 2.0), ["attn=mha", "seed=0"])
    _write(root, 1, _res("mha", 1, 1e-3, 2.2), ["attn=mha", "seed=1"])
    _write(root, 2, None, ["attn=gqa"], text='{"status": "ok", "variant": "gq')  # truncated
    _write(root, 3, None, ["attn=mqa"], text="[1, 2, 3]")  # not an object
    _write(root, 4, None, ["attn=local"], text='{"status": "ok", "train": 5}')  # a section of the wrong type
    (root / "5").mkdir()
    (root / "5" / "results.json").write_text("")  # no .hydra at all, empty file
    rows = summary_collect(root)
    assert [r["status"] for r in rows] == ["ok", "ok", "unreadable", "unreadable", "unreadable", "unreadable"]
    assert "truncated or not JSON" in rows[2]["error"] and "JSON list, not an object" in rows[3]["error"]
    assert "'train' is a int" in rows[4]["error"]
    assert sweep_main([str(root)]) == 1
    out = capsys.readouterr().out
    assert "mha-rope" in out and "jobs not ok:" in out and out.count("unreadable") >= 4
    md = (root / "summary.md").read_text()
    assert "## Variants" in md and "| mha-rope | 2 |" in md  # two seeds of one variant: grouped
    assert len(list(csv.DictReader(open(root / "summary.csv")))) == 6  # summary.csv keeps every job
    rep = report.build_report([root])
    assert [r.status for r in rep.runs].count("unreadable") == 4
    assert "| unreadable |" in (root / "report" / "report.md").read_text()


def test_summary_without_any_job_does_not_crash(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert sweep_main([str(tmp_path / "empty")]) == 1
    assert "(no job directories found)" in capsys.readouterr().out


def test_variant_name_never_holds_the_seed(make_cfg):
    from attnbench.track.wandb_sink import flat_config

    a, b = flat_config(make_cfg("seed=0")), flat_config(make_cfg("seed=7"))
    assert a["variant"] == b["variant"] and "7" not in b["variant"]


# ----------------------------------------------------------------------------- scale
def test_400_jobs_one_series_per_variant(tmp_path):
    """4 variants x 100 seeds: 4 legend entries (not 400) and a bounded time (generous: shared CPUs)."""
    root = tmp_path / "big"
    n = 0
    for attn in ("mha", "gqa", "mqa", "local"):
        for seed in range(100):
            _write(root, n, _res(attn, seed, 1e-3, 2.0 + 0.01 * (seed % 7) + 0.1 * (attn == "mqa")),
                   [f"attn={attn}", f"seed={seed}"])
            n += 1
    t0 = time.perf_counter()
    rep = report.build_report([root], baseline=["attn=mha"])
    elapsed = time.perf_counter() - t0
    assert len(rep.comparison.variants) == 4 and all(v.n == 100 for v in rep.comparison.variants)
    assert rep.legends and all(n <= 4 + 1 for n in rep.legends.values())  # + the "Pareto front" line
    assert rep.legends["training_curves.png"] == 4
    md = (root / "report" / "report.md").read_text()
    assert "400 jobs: too many for a table here" in md and "results.csv" in md
    assert elapsed < 240, elapsed


def test_many_variants_label_only_the_best(tmp_path):
    root = tmp_path / "many"
    for n in range(15):
        _write(root, n, _res(f"a{n}", 0, 1e-3, 3.0 - 0.1 * n), [f"attn=a{n}"])
    rep = report.build_report([root], legend_limit=5)
    assert rep.legends["training_curves.png"] == 5
    assert "best 5 of 15 variants by mean val loss" in rep.legend_note
    assert rep.legend_note in (root / "report" / "report.md").read_text()
