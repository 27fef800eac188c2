"""The catalogue of figures (track/catalogue.py) reaches results.csv, variants.csv, summary.csv and the dashboard."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from attnbench.bench.modes import BENCH_MODES
from attnbench.report import build_report
from attnbench.report.dashboard_panels import summary_key
from attnbench.report.runs import collect
from attnbench.sweep.summary import collect as summary_rows
from attnbench.sweep.summary import write_summary
from attnbench.track import catalogue
from attnbench.track.catalogue import BENCH, FIGURES, MODEL, PROBES, TRAIN, VAL_LOSS_BY_LEN


def _value(f: catalogue.Figure, seed: int) -> object:
    if f.name == "status":
        return "ok"
    if f.name == "metric_name":
        return "recall_acc"
    return 1.0 + 0.1 * seed + 0.01 * len(f.name)


def _results(seed: int) -> dict:
    """A results.json holding every figure of the catalogue."""
    model = {f.name: _value(f, seed) for f in MODEL}
    train = {f.name: _value(f, seed) for f in (*TRAIN, *PROBES)}
    train["val_loss_by_len"] = {"64": 2.0 + seed, "128": 2.5 + seed}
    bench = [{"mode": m, "batch_size": 1, "status": "ok", **{f.name: _value(f, seed) for f in BENCH},
              "seq_len": t} for m in BENCH_MODES for t in (64, 128)]
    return {"schema": 1, "status": "ok", "variant": "mha-rope-layernorm-gelu-L2-D64", "error": None,
            "config": {"attn": {"name": "mha"}, "seed": seed}, "env": {}, "model": model, "train": train,
            "bench": bench}


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "sweep"
    for seed in range(3):
        d = root / str(seed)
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n")
        (d / "results.json").write_text(json.dumps(_results(seed)))
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def _header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f))


def _results_columns() -> list[str]:
    """Every results.csv column the catalogue promises for a job with every figure (lengths 64, 128)."""
    out = []
    for f in FIGURES:
        if f.per_length:
            out += [f"{m}_{f.name}" for m in BENCH_MODES]
        elif f is VAL_LOSS_BY_LEN:
            out += ["val_loss_T64", "val_loss_T128"]
        else:
            out.append(f.column)
    return out


def test_every_figure_reaches_results_variants_summary_and_dashboard(sweep, tmp_path):
    rep = build_report([sweep], out=tmp_path / "report")
    results, variants = _header(rep.files["results.csv"]), _header(rep.files["variants.csv"])
    missing = [c for c in _results_columns() if c not in results]
    assert not missing, f"catalogue figures missing from results.csv: {missing}"
    numeric = [c for c in _results_columns() if c not in ("train_status", "metric_name")]
    assert not [c for c in numeric if f"{c}_mean" not in variants], "figures missing from variants.csv"
    write_summary(sweep, summary_rows(sweep))
    summary = _header(sweep / "summary.csv")
    assert not [c for c in catalogue.summary_columns() if c not in summary], "figures missing from summary.csv"
    row = next(csv.DictReader(open(sweep / "summary.csv", newline="")))
    assert row["recurrent_state_bytes"] and row["max_attn_logit"]  # filled, not only named
    runs = collect([sweep])
    unmapped = [c for c in numeric if summary_key(c, runs) is None]
    assert not unmapped, f"figures without a W&B summary key (dashboard_panels): {unmapped}"


def test_wandb_keys_are_where_the_sink_writes_them():
    from attnbench.track.wandb_sink import summary_figures

    logged = summary_figures(_results(0))
    assert [f.name for f in FIGURES if not f.wandb_key] == ["seq_len"]  # the length is in each bench key
    for f in (f for f in FIGURES if f.wandb_key):
        key = f.wandb_key.format(mode="forward", T=128) if f.per_length else f.wandb_key
        if f is VAL_LOSS_BY_LEN:
            key += "/128"
        assert key in logged, f"{f.name}: the W&B sink writes no {key}"


def test_direction_of_every_ranked_figure():
    assert catalogue.lower_is_better("val_loss") and not catalogue.lower_is_better("train_tokens_per_s")
    assert not catalogue.lower_is_better("forward_mfu", BENCH_MODES)
    assert catalogue.lower_is_better("decode_median_ms", BENCH_MODES)
    assert not catalogue.lower_is_better("recall_acc")  # outside the catalogue: by its ending
    assert {f.direction for f in FIGURES} <= {catalogue.LOWER, catalogue.HIGHER, catalogue.UNRANKED}
    assert len({f.column for f in FIGURES}) == len(FIGURES)  # one entry per figure
