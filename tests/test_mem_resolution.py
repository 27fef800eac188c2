"""Issue 25 item 14: a peak-memory reading below the instrument's resolution (decode's 0 on CPU) is
reported as such, never as a measured 0."""
from __future__ import annotations

from pathlib import Path

from attnbench.bench.memory import MMAP_THRESHOLD, reading
from attnbench.bench.suite import merge_worker_memory
from attnbench.report.console import format_results
from attnbench.report.runs import Run
from attnbench.report.tables import csv_row


def _row(mode: str, peak) -> dict:
    return {"mode": mode, "batch_size": 2, "seq_len": 64, "status": "ok", "median_ms": 1.0, "p10_ms": 1.0,
            "p90_ms": 1.0, "repeats": 3, "tokens_per_s": 2000.0, "peak_mem_bytes": peak, "mfu": None}


def test_a_reading_below_resolution_is_no_figure():
    assert reading(0, "subprocess") == {"peak_mem_bytes": None, "peak_mem_below_bytes": MMAP_THRESHOLD}
    assert reading(MMAP_THRESHOLD - 4096, "subprocess")["peak_mem_bytes"] is None
    assert reading(5 * 2**20, "subprocess") == {"peak_mem_bytes": 5 * 2**20}
    assert reading(0, "cuda") == {"peak_mem_bytes": None, "peak_mem_below_bytes": 512}
    assert reading(1024, "cuda") == {"peak_mem_bytes": 1024}
    row = _row("decode", None)
    merge_worker_memory(row, {"mode": "decode", "batch_size": 2, "seq_len": 64, "peak_mem_bytes": 0})
    assert row["peak_mem_bytes"] is None and row["peak_mem_below_bytes"] == 65536  # what results.json gets


def test_the_bench_table_and_results_csv_say_below_resolution():
    below = {**_row("decode", None), "peak_mem_below_bytes": MMAP_THRESHOLD}
    res = {"variant": "v", "status": "ok", "env": {}, "model": {},
           "bench": [_row("forward", 3 * 2**20), below, _row("prefill", 0)]}  # prefill: an older file's 0
    lines = format_results(res).splitlines()
    decode = next(line for line in lines if line.lstrip().startswith("decode"))
    prefill = next(line for line in lines if line.lstrip().startswith("prefill"))
    assert "<64 KiB" in decode and "<res" in prefill
    assert " 0 " not in decode + " " and " 0 " not in prefill + " "
    row = csv_row(Run(dir=Path("j"), res=res))
    assert row["forward_peak_mem_bytes"] == 3 * 2**20
    assert row["decode_peak_mem_bytes"] is None and row["prefill_peak_mem_bytes"] is None


def test_the_report_job_table_says_below_resolution():
    from attnbench.report.markdown import _bench_column

    runs = [Run(dir=Path("a"), res={"bench": [_row("forward", 0)]}),  # an older results.json's 0
            Run(dir=Path("b"), res={"bench": [{**_row("forward", None), "peak_mem_below_bytes": MMAP_THRESHOLD}]}),
            Run(dir=Path("c"), res={"bench": [_row("forward", 3 * 2**20)]})]
    from attnbench.report.format import fmt_bytes

    header, cells = _bench_column(runs, "forward", "peak_mem_bytes", "forward peak mem", fmt_bytes)
    assert header == "forward peak mem (T=64)" and cells == ["<res", "<64 KiB", "3.0 MiB"]
