"""The docstring examples of aprec/rpm run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ("context", "observe", "static", "greedy", "knapsack", "oracle", "learned", "train",
           "config", "loop", "policy_io", "deployment", "evaluate", "runner", "demo")


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
  module = importlib.import_module(f"aprec.rpm.{name}")
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
  assert result.failed == 0
