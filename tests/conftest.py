"""Shared fixtures. Every test runs with W&B offline into a temp folder and runs/ redirected."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.mktemp("env")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(base / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("ATTNBENCH_RUNS", str(base / "runs"))
    monkeypatch.setenv("ATTNBENCH_CACHE", str(base / "cache"))
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: a second intra-op thread only adds synchronisation, and on a shared, loaded box
    it can make loops of small calls many times slower. Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def make_cfg():
    """make_cfg(*overrides) -> validated DictConfig (composed exactly as the CLI does)."""
    from attnbench import load_config

    def _make(*overrides: str):
        return load_config(list(overrides))

    return _make


@pytest.fixture
def cli(tmp_path):
    """Run `python -m attnbench ...` in a subprocess; returns CompletedProcess."""
    import subprocess

    def _run(*args: str, timeout: float = 300, env_extra: dict | None = None, cwd: Path | None = None):
        env = dict(os.environ)
        env.update(env_extra or {})
        return subprocess.run([sys.executable, "-m", "attnbench", *args], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=cwd or tmp_path)

    return _run


@pytest.fixture
def shakespeare_path() -> Path:
    if not SHARED_DATA.is_file():
        pytest.skip("../shared/data/tinyshakespeare.txt not present")
    return SHARED_DATA
