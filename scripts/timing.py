"""Paired, interleaved timing for the benchmark scripts: ratios measured in one run.

These machines are shared and noisy, so a benchmark times its sides in turns (the order
rotating between repeats, so no side always runs first) and reports the median of the
per-repeat ratios, not a ratio of medians taken minutes apart.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


def interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, calls: int
) -> dict[str, list[float]]:
  """Seconds per call of each side, one sample per repeat of ``calls`` calls."""
  samples = {k: [] for k in fns}
  names = list(fns)
  for r in range(repeats):
    for k in names[r % len(names) :] + names[: r % len(names)]:
      start = time.perf_counter()
      for _ in range(calls):
        out = fns[k]()
      jax.block_until_ready(out)
      samples[k].append((time.perf_counter() - start) / calls)
  return samples


def ratio(num: list[float], den: list[float]) -> float:
  """The median of the paired per-repeat ratios ``num / den``."""
  return statistics.median(a / b for a, b in zip(num, den))
