"""Shared small deployments for the RPM tests: the digits CNN's op table at batch 32."""

from __future__ import annotations

import numpy as np
import pytest

from aprec import hardware, simulator
from aprec.rpm.context import make_context
from op_tables import digits_ops

N_MODES = 7


def toy_table(n_ops: int, seed: int = 0) -> np.ndarray:
  """A made-up sensitivity table: 0 at fp32, growing as bits shrink, per-op scale."""
  rng = np.random.default_rng(seed)
  base = np.array([0.0, 0.002, 0.001, 0.01, 0.02, 0.005, 0.08])
  return base[None, :] * rng.uniform(0.2, 3.0, (n_ops, 1))


@pytest.fixture(scope="session")
def cnn_ops():
  return digits_ops(32)


@pytest.fixture(scope="session")
def spec():
  return hardware.edge_npu()


def deployment(name, ops, spec, faults="none"):
  params = simulator.scenario(name, spec, ops, faults=faults)
  ctx = make_context(ops, spec, toy_table(len(ops)), float(params.step_period_s))
  return params, ctx
