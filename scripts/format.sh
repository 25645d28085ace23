#!/usr/bin/env bash
# Formats the whole code base once: pyink (Google style, 2-space indentation; settings in
# pyproject.toml) then ruff's safe fixes, then checks both and lists what is left by hand.
# `make lint` (and tests/test_lint.py) must pass afterwards.
#
#   scripts/format.sh            # format aprec/, tests/, scripts/
#   PYTHON=/path/to/python scripts/format.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
paths=(aprec tests scripts)
"$PYTHON" -m pyink --quiet "${paths[@]}"
"$PYTHON" -m ruff check --quiet --fix "${paths[@]}" || true
"$PYTHON" -m pyink --quiet "${paths[@]}"  # ruff's fixes may leave lines pyink would change
status=0
"$PYTHON" -m pyink --check --quiet "${paths[@]}" || status=1
"$PYTHON" -m ruff check "${paths[@]}" || { status=1; echo "fix the findings above by hand"; }
exit $status
