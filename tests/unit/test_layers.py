"""The architecture is enforced: import-linter's contracts in pyproject.toml hold (layers, intake and delivery apart,
no I/O in the pure core and the vendor modules). `make lint` runs the same command; this makes `make test` see it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_imports_follow_the_layers_in_pyproject() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([lint_imports, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:]
