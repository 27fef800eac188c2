"""benchmarks/gpu_check.py on a machine without a GPU: it imports, parses its arguments, decides
PASS/FAIL and prints its table; without CUDA it exits 2 with one line; `--device cpu` runs the
checks' own logic (a dry run, not a GPU check)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check as gc

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@no_cuda
def test_without_cuda_exits_2_with_one_line(capsys):
    assert gc.main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("gpu_check: CUDA is not available on this machine")


def test_arguments():
    args = gc.parse_args(["--only", "kernels, memory", "--kernels", "sdpa,flex"])
    assert args.only == ["kernels", "memory"] and args.kernels == "sdpa,flex" and args.device == "cuda"
    assert gc.parse_args([]).only == list(gc.CHECKS)
    with pytest.raises(SystemExit) as exc:
        gc.parse_args(["--only", "kernels,nope"])
    assert exc.value.code == 2


def test_table_and_exit_code():
    rows = [gc.Result("kernels", "sdpa mha float32", "PASS", "max 1e-6"),
            gc.Result("memory", "all", "SKIP", "needs the CUDA peak-memory counter")]
    table = gc.format_table(rows)
    lines = table.splitlines()
    assert lines[0].split() == ["check", "case", "status", "detail"] and set(lines[1]) == {"-"}
    assert "sdpa mha float32" in lines[2] and lines[2].split()[4] == "PASS"
    assert gc.exit_code(rows) == 0
    assert gc.exit_code(rows + [gc.Result("sweep", "2 jobs", "FAIL", "exit 1")]) == 1


def test_memory_physics_verdict():
    quadratic = gc.doubling_ratios([1, 4, 16, 64])
    linear = gc.doubling_ratios([10, 20, 40, 80])
    assert quadratic == [4.0, 4.0, 4.0] and linear == [2.0, 2.0, 2.0]
    assert gc.memory_verdict("manual", quadratic) and not gc.memory_verdict("manual", linear)
    assert gc.memory_verdict("sdpa_flash", linear) and not gc.memory_verdict("sdpa_flash", quadratic)
    # manual at small T: the linear parts still weigh; only the last doubling must show the T² term
    assert gc.memory_verdict("manual", [2.4, 3.3, 3.7])


def test_grad_error_names_the_worst_parameter():
    ref = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([4.0])}
    got = {"a": torch.tensor([1.0, -2.02]), "b": torch.tensor([4.4])}
    err, name = gc.grad_error(got, ref)
    assert name == "b" and err == pytest.approx(0.1)


@pytest.mark.slow
def test_dry_run_on_cpu(capsys, monkeypatch):
    """The kernels check (two kernels, two variants, bf16) and the CUDA-only checks' SKIP rows, end to end on CPU."""
    monkeypatch.setattr(gc, "VARIANTS", {k: gc.VARIANTS[k] for k in ("gqa+window+rope", "alibi")})
    monkeypatch.setattr(gc, "DTYPES", ("bfloat16",))
    rc = gc.main(["--device", "cpu", "--only", "kernels,memory,flex", "--kernels", "sdpa,torch_mha"])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = {tuple(line.split()[:3]): line for line in out.split("\n\n")[-2].splitlines()[2:]}
    assert rows[("kernels", "sdpa", "gqa+window+rope")].split()[4] == "PASS"
    assert "rejected by config" in rows[("kernels", "torch_mha", "gqa+window+rope")]  # no RoPE inside nn.MHA
    assert "no KV cache" in rows[("kernels", "torch_mha", "alibi")]  # the full forward is still compared
    assert rows[("memory", "all", "SKIP")] and rows[("flex", "all", "SKIP")]
    assert out.strip().splitlines()[-1].endswith("-> PASS")


@pytest.mark.slow
@no_cuda
def test_script_entry_points():
    for cmd in ([sys.executable, "-m", "benchmarks.gpu_check"], [sys.executable, "benchmarks/gpu_check.py"]):
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and res.stdout == "", cmd
        assert len(res.stderr.strip().splitlines()) == 1 and "CUDA is not available" in res.stderr
