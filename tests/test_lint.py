"""The code base stays ruff-clean (rules in pyproject.toml)."""
import shutil
import subprocess
import sys
from pathlib import Path


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([ruff, "check", "peft3d", "tests", "benchmarks"], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
