"""The code's own checks, run by the suite: ruff, mypy --strict on the packages, and the
import-linter contracts (pyproject.toml) that keep the doors between rooms one way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_is_clean() -> None:
    res = run(str(BIN / "ruff"), "check", "router", "promote", "replication", "hotspare", "tests", "bench")
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.timeout(300)
def test_mypy_strict_is_clean() -> None:
    res = run(str(BIN / "mypy"))  # packages and strictness from [tool.mypy]
    assert res.returncode == 0, res.stdout + res.stderr


def test_import_contracts_are_kept() -> None:
    res = run(str(BIN / "lint-imports"), "--no-cache")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout
