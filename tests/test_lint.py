"""The code passes the formatter and the linter configured in pyproject.toml (pyink, ruff)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PATHS = ("aprec", "tests", "scripts")


def _run(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, "-m", *args, *PATHS], cwd=ROOT, capture_output=True, text=True, check=False
  )


def test_ruff_finds_nothing():
  result = _run("ruff", "check", "--no-cache")
  assert result.returncode == 0, result.stdout + result.stderr


def test_pyink_would_change_nothing():
  result = _run("pyink", "--check", "--diff")
  assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
