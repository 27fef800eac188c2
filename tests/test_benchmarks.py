"""benchmarks/ is a package: every script imports as `benchmarks.<name>` from the repository root."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")


def test_benchmarks_import_without_sys_path_edits():
    assert {"common", "harness_overhead", "kernels", "plain_gpt", "train_shakespeare"} <= set(SCRIPTS)
    for name in SCRIPTS:
        assert "sys.path" not in (ROOT / "benchmarks" / f"{name}.py").read_text(), name
    code = "import " + ", ".join(f"benchmarks.{n}" for n in SCRIPTS)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
