"""Issue 25 items 3 and 4: the variant table compares bench figures at one length, and `--tune`
never chooses a value on its survivors."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
from test_variants import _res, _write

from attnbench import report
from attnbench.report import heldout
from attnbench.report.variants import group, variant_rows


def _bench(ms_by_len: dict[int, float], oom: tuple[int, ...] = ()) -> list[dict]:
    rows = [{"mode": "forward", "batch_size": 2, "seq_len": t, "status": "ok", "median_ms": ms, "p10_ms": ms,
             "p90_ms": ms, "tokens_per_s": 2 * t / ms * 1e3, "peak_mem_bytes": 1000 * t, "mfu": None}
            for t, ms in ms_by_len.items()]
    return rows + [{"mode": "forward", "batch_size": 2, "seq_len": t, "status": "oom", "median_ms": None} for t in oom]


def _latency_sweep(root: Path, mqa: dict[int, float], mha: dict[int, float], mha_oom=(8192,)) -> Path:
    """mha runs out of memory at 8192, mqa does not; 3 seeds each (the same latency: a CI of 0)."""
    n = 0
    for attn, ms, oom in (("mha", mha, mha_oom), ("mqa", mqa, ())):
        for seed in range(3):
            res = _res(attn, seed, 1e-3, 2.0 + 0.01 * seed)
            res["bench"] = _bench({t: m + 0.001 * seed for t, m in ms.items()}, oom)
            _write(root, n, res, [f"attn={attn}", f"seed={seed}"])
            n += 1
    return root


def test_latency_is_compared_at_the_largest_length_every_variant_completed(tmp_path):
    # mqa is faster at every length, but its 8192 figure (40 ms) is slower than mha's 4096 one (20 ms):
    # compared at each run's own largest length, mqa would be `worse`.
    root = _latency_sweep(tmp_path / "s", mqa={1024: 5.0, 4096: 10.0, 8192: 40.0}, mha={1024: 6.0, 4096: 20.0})
    comp = group(report.collect([root]), objective="forward_median_ms", baseline=["attn=mha"])
    assert comp.lengths == {"forward": 4096}
    mqa = next(v for v in comp.variants if v.name.startswith("mqa"))
    assert mqa.stats["forward_median_ms"].mean == pytest.approx(10.001)
    assert mqa.diffs["forward_median_ms"].diff == pytest.approx(-10.0) and mqa.verdict == "better"
    rows = {r["name"]: r for r in variant_rows(comp)}
    assert rows["mqa-rope"]["forward_seq_len"] == 4096 and rows["mha-rope"]["forward_seq_len"] == 4096
    assert rows["mqa-rope"]["forward_seq_len_mean"] == 4096  # the existing column stays, now at the common T
    out = tmp_path / "out"
    assert report.main([str(root), "--objective", "forward_median_ms", "--baseline", "attn=mha", "--out", str(out)]) == 0
    with open(out / "variants.csv", newline="") as f:
        assert {r["forward_seq_len"] for r in csv.DictReader(f)} == {"4096"}
    md = (out / "report.md").read_text()
    assert "forward ms (T=4096) (lower is better)" in md and "| better |" in md


def test_no_common_length_gives_no_verdict_only_a_note(tmp_path, capsys):
    root = _latency_sweep(tmp_path / "s", mqa={8192: 40.0}, mha={1024: 6.0, 4096: 20.0})
    comp = group(report.collect([root]), objective="forward_median_ms", baseline=["attn=mha"])
    assert comp.lengths == {"forward": None}
    mqa = next(v for v in comp.variants if v.name.startswith("mqa"))
    assert mqa.verdict == "" and "forward_median_ms" not in mqa.diffs
    assert comp.notes and "no sequence length in common" in comp.notes[0] and "8192" in comp.notes[0]
    out = tmp_path / "out"
    assert report.main([str(root), "--objective", "forward_median_ms", "--baseline", "attn=mha", "--out", str(out)]) == 0
    assert "no sequence length in common" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert "- (no common T)" in md and "(T=8192)" in md and "**Not compared.**" in md
    with open(out / "variants.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["forward_seq_len"] for r in rows} == {""} and {r["verdict"] for r in rows} == {"baseline", ""}


# ----------------------------------------------------------------------------- item 4: --tune on complete values
def _lr_sweep(root: Path) -> Path:
    """The issue's case: lr 3e-2 diverged on seeds 1 and 2, its survivor (1.40) beats lr 1e-3's mean (1.51)."""
    jobs = [(1e-3, 0, 1.50, "ok"), (1e-3, 1, 1.51, "ok"), (1e-3, 2, 1.52, "ok"),
            (3e-2, 0, 1.40, "ok"), (3e-2, 1, 0.0, "diverged"), (3e-2, 2, 0.0, "diverged")]
    for n, (lr, seed, loss, status) in enumerate(jobs):
        _write(root, n, _res("mha", seed, lr, loss, status=status), ["attn=mha", f"seed={seed}", f"train.lr={lr}"])
    return root


def test_tune_never_chooses_a_value_on_its_survivors(tmp_path):
    root = _lr_sweep(tmp_path / "s")
    comp = group(report.collect([root]), tune="train.lr")
    (v,) = comp.variants
    assert v.tuned_means[3e-2].mean == pytest.approx(1.40)  # the survivor's mean is still shown ...
    assert v.tuned_value == 1e-3  # ... but 3e-2 is not complete, so it ranks below 1e-3
    assert heldout.complete_values(v) == {1e-3: True, 3e-2: False}
    assert v.tuned_incomplete == {3e-2: "seed=1 diverged, seed=2 diverged"}
    (row,) = variant_rows(comp)
    assert row["tuned_incomplete"] == "0.03 (seed=1 diverged, seed=2 diverged)"
    out = tmp_path / "out"
    assert report.main([str(root), "--tune", "train.lr", "--out", str(out)]) == 0
    assert "not complete, ranked last: 0.03 (seed=1 diverged, seed=2 diverged)" in (out / "report.md").read_text()


def test_without_a_complete_value_nothing_is_chosen(tmp_path):
    root = tmp_path / "s"
    for n, (lr, seed, status) in enumerate([(1e-3, 0, "ok"), (1e-3, 1, "oom"), (3e-2, 0, "diverged"),
                                            (3e-2, 1, "ok")]):
        _write(root, n, _res("mha", seed, lr, 1.5, status=status), ["attn=mha", f"seed={seed}", f"train.lr={lr}"])
    comp = group(report.collect([root]), tune="train.lr")
    (v,) = comp.variants
    assert v.tuned_value is None and v.n == 0
    assert heldout.complete_values(v) == {1e-3: False, 3e-2: False}
    assert comp.notes == ["mha-rope: no train.lr value ended ok on every tuning replicate (0.001 (seed=1 oom); "
                          "0.03 (seed=0 diverged)); nothing chosen, so the variant has no figures"]


def test_completeness_is_per_value():
    class J:
        def __init__(self, seed, status):
            self.seed, self.status, self.ok = seed, status, status == "ok"

    at = {1: [J(0, "ok"), J(1, "ok"), J(5, "failed")], 2: [J(0, "ok"), J(1, "oom")]}
    tuning = {(("seed", 0),), (("seed", 1),)}
    why = heldout.completeness(at, lambda j: (("seed", j.seed),), tuning)
    assert why == {1: "", 2: "seed=1 oom"}  # seed 5 is not a tuning replicate: it does not decide
