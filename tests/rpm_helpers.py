"""Shared small RPM deployments: a made-up sensitivity table and a scenario context."""

from __future__ import annotations

import numpy as np

from aprec.hardware import scenarios
from aprec.rpm.context import make_context


def toy_table(n_ops: int, seed: int = 0) -> np.ndarray:
  """A made-up sensitivity table: 0 at fp32, growing as bits shrink, per-op scale."""
  rng = np.random.default_rng(seed)
  base = np.array([0.0, 0.002, 0.001, 0.01, 0.02, 0.005, 0.08])
  return base[None, :] * rng.uniform(0.2, 3.0, (n_ops, 1))


def deployment(name, ops, spec, faults="none"):
  params = scenarios.scenario(name, spec, ops, faults=faults)
  ctx = make_context(ops, spec, toy_table(len(ops)), float(params.step_period_s))
  return params, ctx
