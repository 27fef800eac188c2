"""Held-out selection under --tune, by hand computation on planted sweeps (issue 21 item 1)."""
from __future__ import annotations

import csv
import json
import math
import shlex
from pathlib import Path

import pytest
from test_variants import _res, _write

from attnbench import report
from attnbench.report import heldout
from attnbench.report.variants import group, variant_rows

T1 = 12.706204736174707  # t(0.975) with 1 degree of freedom


def _sweep(root: Path, jobs: list[tuple[str, float, int, float]]) -> Path:
    """jobs: (attn, lr, seed, val loss); one Hydra multirun folder."""
    for n, (attn, lr, seed, loss) in enumerate(jobs):
        _write(root, n, _res(attn, seed, lr, loss), ["experiment=x", f"attn={attn}", f"train.lr={lr}",
                                                     f"seed={seed}", "logger=none"])
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


# The case: lr 1e-3 at seeds 0-3, lr 3e-3 at seeds 0, 1 only.
PLANTED = [("mha", 1e-3, 0, 2.0), ("mha", 1e-3, 1, 2.1), ("mha", 1e-3, 2, 3.0), ("mha", 1e-3, 3, 3.2),
           ("mha", 3e-3, 0, 2.5), ("mha", 3e-3, 1, 2.6)]


def test_planted_case_chooses_on_shared_seeds_and_reports_the_held_out_ones(tmp_path):
    comp = group(report.collect([_sweep(tmp_path / "s", PLANTED)]), tune="train.lr")
    (v,) = comp.variants
    # naive rule: mean over every seed at each lr, 1e-3: (2.0+2.1+3.0+3.2)/4 = 2.575 > 3e-3: 2.55 -> 3e-3.
    # held-out rule: on seeds 0, 1 (at both lrs): 1e-3: 2.05 < 3e-3: 2.55 -> 1e-3; report seeds 2, 3.
    assert v.tuning_reps == [(("seed", 0),), (("seed", 1),)]
    assert v.tuned_means[1e-3].mean == pytest.approx(2.05) and v.tuned_means[1e-3].n == 2
    assert v.tuned_means[3e-3].mean == pytest.approx(2.55)
    assert v.tuned_value == 1e-3 and v.selection == heldout.HELD_OUT
    assert v.n == 2 and sorted(dict(r)["seed"] for r in v.reps) == [2, 3]
    e = v.stats["val_loss"]
    assert e.mean == pytest.approx(3.1)
    std = math.sqrt(((3.0 - 3.1) ** 2 + (3.2 - 3.1) ** 2) / 1)  # sample std of 3.0, 3.2
    assert e.std == pytest.approx(std) and e.ci95 == pytest.approx(T1 * std / math.sqrt(2))
    (row,) = variant_rows(comp)
    assert row["selection"] == "held_out" and row["tuning_replicates"] == "seed=0,1"
    assert row["replicates"] == "seed=2,3" and row["n"] == 2


def test_held_out_baseline_pairs_by_the_fresh_seeds(tmp_path):
    """Both variants tuned on seeds 0, 1 over two lrs, confirmed at their chosen lr with seeds 2, 3 in a second
    folder: Δ and the verdict come from seeds 2, 3 alone, paired."""
    tune = [("mha", 1e-3, 0, 2.0), ("mha", 1e-3, 1, 2.2), ("mha", 3e-3, 0, 2.4), ("mha", 3e-3, 1, 2.5),
            ("gqa", 1e-3, 0, 2.6), ("gqa", 1e-3, 1, 2.7), ("gqa", 3e-3, 0, 1.5), ("gqa", 3e-3, 1, 1.6)]
    confirm = [("mha", 1e-3, 2, 2.1), ("mha", 1e-3, 3, 2.3), ("gqa", 3e-3, 2, 2.15), ("gqa", 3e-3, 3, 2.351)]
    a, b = _sweep(tmp_path / "tune", tune), _sweep(tmp_path / "tune_confirm", confirm)
    comp = group(report.collect([a, b]), tune="train.lr", baseline=["attn=mha"])
    mha, gqa = comp.variants
    assert (mha.tuned_value, gqa.tuned_value) == (1e-3, 3e-3)
    assert mha.selection == gqa.selection == heldout.HELD_OUT
    assert gqa.stats["val_loss"].mean == pytest.approx(2.2505)  # (2.15 + 2.351) / 2, not the tuning 1.55
    d = gqa.diffs["val_loss"]  # paired by seed: 2.15 - 2.1 = 0.05, 2.351 - 2.3 = 0.051
    assert gqa.diff_method == "paired" and d.diff == pytest.approx(0.0505)
    assert d.ci95 == pytest.approx(T1 * math.sqrt(2 * 0.0005 ** 2) / math.sqrt(2))
    assert gqa.verdict == "worse"  # on the tuning seeds it looked 0.55 nats better
    rep = report.build_report([a, b], out=tmp_path / "r", tune="train.lr", baseline=["attn=mha"])
    assert rep.confirm == []
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| held-out runs |" in md and "Selected and reported on the same runs" not in md
    rows = list(csv.DictReader(open(tmp_path / "r" / "results.csv")))
    assert sum(r["held_out"] == "True" for r in rows) == 4 and sum(r["reported"] == "True" for r in rows) == 4
    assert sum(r["at_chosen_train.lr"] == "True" for r in rows) == 8


def test_without_held_out_runs_the_report_says_so_and_prints_the_commands(tmp_path, capsys):
    jobs = [(attn, lr, seed, loss + 0.01 * seed) for attn, base in (("mha", 2.0), ("gqa", 2.1))
            for lr, loss in ((1e-3, base), (3e-3, base - 0.2 if attn == "gqa" else base + 0.1))
            for seed in (0, 1, 2)]
    sweep = _sweep(tmp_path / "sweep", jobs)
    assert report.main([str(sweep), "--tune", "train.lr", "--baseline", "attn=mha"]) == 0
    printed = capsys.readouterr().out
    comp = group(report.collect([sweep]), tune="train.lr", baseline=["attn=mha"])
    assert [v.selection for v in comp.variants] == [heldout.SAME_RUNS] * 2
    assert [v.n for v in comp.variants] == [3, 3]  # the figures stay the tuning runs'
    rows = list(csv.DictReader(open(sweep / "report" / "variants.csv")))
    assert [r["selection"] for r in rows] == ["same_runs (optimistic)"] * 2
    md = (sweep / "report" / "report.md").read_text()
    assert md.count("| same runs (optimistic) |") == 2
    assert "**Selected and reported on the same runs.** 2 of 2 variants are reported on the same runs" in md
    # the commands: one per chosen lr (mha 1e-3, gqa 3e-3), fresh seeds 3,4,5 for both, then the report
    dest = f"{sweep}_confirm"
    want = [f"python -m attnbench -m experiment=x attn=mha logger=none train.lr=0.001 seed=3,4,5 "
            f"hydra.sweep.dir={dest}/c1",
            f"python -m attnbench -m experiment=x attn=gqa logger=none train.lr=0.003 seed=3,4,5 "
            f"hydra.sweep.dir={dest}/c2",
            f"python -m attnbench.report {sweep} {dest} --tune train.lr --baseline attn=mha"]
    assert "## Confirmation runs" in md and all(w in md for w in want)
    assert "note: 2 of 2 variants are reported on the same runs" in printed and all(w in printed for w in want)
    assert all(shlex.split(c) == c.split() for c in want)  # nothing needed quoting


def test_variants_at_the_same_value_share_one_command(tmp_path):
    jobs = [(attn, lr, seed, 2.0 + (0.3 if lr == 3e-3 else 0)) for attn in ("mha", "gqa", "mqa")
            for lr in (1e-3, 3e-3) for seed in (0, 1)]
    comp = group(report.collect([_sweep(tmp_path / "s", jobs)]), tune="train.lr")
    cmds = heldout.confirm_commands(comp, [tmp_path / "s"], report.variants.show)
    assert len(cmds) == 2 and "attn=mha,gqa,mqa logger=none train.lr=0.001 seed=2,3,4 " in cmds[0]


def test_one_value_is_not_a_choice(tmp_path):
    comp = group(report.collect([_sweep(tmp_path / "s", PLANTED[:4])]), tune="train.lr")
    (v,) = comp.variants
    assert v.selection == heldout.ONE_VALUE and v.n == 4
    assert heldout.confirm_commands(comp, [tmp_path / "s"], report.variants.show) == []


def test_a_seed_at_some_values_is_neither_tuning_nor_held_out(tmp_path):
    """Seed 2 runs at 1e-3 and 1e-2 but not 3e-3: the choice (on seeds 0, 1) never used it, yet it is no
    confirmation run, so there is nothing held out and every job at the chosen lr is reported."""
    jobs = [("mha", lr, s, loss) for lr, loss in ((1e-3, 2.0), (3e-3, 2.2), (1e-2, 2.4)) for s in (0, 1)]
    jobs += [("mha", 1e-3, 2, 2.9), ("mha", 1e-2, 2, 2.1)]
    comp = group(report.collect([_sweep(tmp_path / "s", jobs)]), tune="train.lr")
    (v,) = comp.variants
    assert v.tuned_value == 1e-3 and v.tuned_means[1e-3].n == 2 and v.selection == heldout.SAME_RUNS
    assert v.n == 3


def test_fresh_values():
    assert heldout.fresh_values([0, 1, 2, 1], 3) == [3, 4, 5]
    assert heldout.fresh_values([], 2) == [0, 1]
    assert heldout.fresh_values(["a"], 2) is None


def test_a_config_field_added_between_the_sweeps_does_not_split_the_variant(tmp_path):
    """The confirmation jobs ran on newer code whose config has a field at its default (attn.gate: none) that
    the tuning jobs' configs lack: still one variant, reported on the held-out seeds."""
    a = _sweep(tmp_path / "tune", PLANTED[:2] + PLANTED[4:])  # seeds 0, 1 at both lrs
    b = _sweep(tmp_path / "confirm", PLANTED[2:4])  # seeds 2, 3 at 1e-3
    for res_file in (tmp_path / "confirm").glob("*/results.json"):
        res = json.loads(res_file.read_text())
        res["config"]["attn"]["gate"] = "none"
        res_file.write_text(json.dumps(res))
    comp = group(report.collect([a, b]), tune="train.lr")
    (v,) = comp.variants
    assert v.selection == heldout.HELD_OUT and v.n == 2 and v.stats["val_loss"].mean == pytest.approx(3.1)
    # a field with two values among the jobs that have it still tells variants apart
    res_file = next((tmp_path / "confirm").glob("*/results.json"))
    res = json.loads(res_file.read_text())
    res["config"]["attn"]["gate"] = "headwise"
    res_file.write_text(json.dumps(res))
    assert len(group(report.collect([a, b]), tune="train.lr").variants) == 3
