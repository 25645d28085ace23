"""Every docstring example in the package runs as written (no +SKIP, no commented-out >>>)."""

from __future__ import annotations

import doctest
import importlib
import pathlib
import pkgutil
import re

import pytest

import aprec

PACKAGE_DIR = pathlib.Path(aprec.__file__).parent
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages([str(PACKAGE_DIR)], "aprec.")
    if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
  module = importlib.import_module(name)
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert result.failed == 0


def test_no_skipped_or_commented_examples():
  offenders = []
  for path in PACKAGE_DIR.rglob("*.py"):
    for number, line in enumerate(path.read_text().splitlines(), 1):
      if re.search(r"#\s*>>>|>>>\s*#|\+SKIP", line):
        offenders.append(f"{path.relative_to(PACKAGE_DIR)}:{number}: {line.strip()}")
  assert not offenders, "\n".join(offenders)
