"""`attnbench doctor`: the node screen runs on CPU, names every section, never prints a credential,
and a device that cannot run gives exit != 0 with one line and nothing else."""
from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time

import pytest
import torch

from attnbench import doctor

pytestmark = pytest.mark.usefixtures("one_thread")
FAKE_KEY = "fake-wandb-key-0123456789abcdef0123456789abcdef"


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = doctor.main(list(argv))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    """One full run (without the compile probe), shared: the probes are tiny but not free."""
    base = tmp_path_factory.mktemp("doctor")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_DIR", str(base / "wandb"))
        mp.setenv("ATTNBENCH_CACHE", str(base / "cache"))  # empty: the peak FLOP/s probe really runs
        mp.setenv("WANDB_API_KEY", FAKE_KEY)
        return _run("--no-compile", "device=cpu")


def test_screen_on_cpu_names_every_section(screen):
    rc, out, err = screen
    assert rc == 0, err
    for title in doctor.SECTIONS:
        assert f"== {title} ==" in out
    assert out.strip().splitlines()[-1] == "doctor: device=cpu dtype=float32 can run"
    assert "torch" in out and torch.__version__ in out
    assert "measured now" in out  # the peak probe ran (fresh cache)
    assert "skipped (--no-compile)" in out


def test_credential_value_is_never_printed(screen):
    rc, out, err = screen
    assert FAKE_KEY not in out + err
    assert FAKE_KEY[:12] not in out + err
    assert "yes (WANDB_API_KEY set)" in out


def test_sdpa_math_backend_runs_on_cpu(screen):
    _, out, _ = screen
    section = out.split("== sdpa backends ==\n")[1].split("\n==")[0].splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in section[1:] if len(line.split()) == 6}
    assert rows["math"] == ["ok"] * 5  # 3 dtypes, bool mask, enable_gqa
    assert rows["efficient_attention"][0] == "no"  # CUDA-only in torch: rejected, not silently served
    assert "eager forward (float32)" in out and "ok" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this node has CUDA")
def test_cuda_on_a_node_without_cuda_is_one_line():
    rc, out, err = _run("device=cuda")
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "device=cuda" in err and "not available" in err


def test_bad_override_is_one_line():
    rc, out, err = _run("device.dtype=float64")
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "device.dtype" in err


def test_device_that_cannot_run_its_dtype_exits_1(monkeypatch):
    monkeypatch.setattr(doctor, "dtype_probe", lambda device, dtype: "no (RuntimeError: boom)")
    rc, out, err = _run("device=cpu", "device.dtype=bfloat16")
    assert rc == 1 and out == ""
    assert err.strip() == "attnbench doctor: error: device=cpu cannot run device.dtype=bfloat16: RuntimeError: boom"


def test_sdpa_probe_reports_a_rejection_with_its_reason():
    ok = doctor.sdpa_probe(torch.device("cpu"), torch.float32, "MATH", "gqa")
    assert ok == "ok"
    bad = doctor.sdpa_probe(torch.device("cpu"), torch.float32, "EFFICIENT_ATTENTION")
    assert bad.startswith("no (") and len(bad.splitlines()) == 1


def test_wandb_online_without_credentials_says_offline(monkeypatch, make_cfg):
    import attnbench.track.wandb_sink as sink

    for name in doctor.CREDENTIAL_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sink, "has_credentials", lambda: False)
    rows = dict(doctor.wandb_facts(make_cfg("logger.mode=online")))
    assert rows["mode"] == "online" and rows["credentials"] == "no"
    assert "logs offline" in rows["note"]


def test_launchers_listed():
    rows = dict(doctor.launcher_facts())
    assert rows["hydra/launcher=joblib"].startswith("installed")  # a dependency of attnbench
    assert rows["hydra/launcher=submitit"].startswith("installed")


@pytest.mark.slow
def test_compile_probe_is_bounded():
    """The compiled-flex probe runs in a child process group that is killed at the timeout."""
    t0 = time.perf_counter()
    res = doctor.flex_compile_probe(torch.device("cpu"), torch.float32, timeout_s=1)
    assert res.startswith("timed out after 1 s")
    assert time.perf_counter() - t0 < 30


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this node has CUDA")
def test_attnbench_doctor_subcommand(tmp_path):
    res = subprocess.run([sys.executable, "-m", "attnbench", "doctor", "device=cuda"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("attnbench doctor: error: device=cuda")
