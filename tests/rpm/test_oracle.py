"""Tests for aprec/rpm/oracle.py against enumeration."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from aprec.hardware.cost import HardwareState
from aprec.hardware.cost import one_hot
from aprec.rpm.context import make_context, predict, tables
from aprec.rpm.oracle import best_assignment
from rpm_helpers import toy_table
from op_tables import dot


def test_oracle_is_feasible_and_optimal_against_enumeration(spec):
  ops = [dot(32, 64, 64, "a"), dot(32, 64, 128, "b"), dot(32, 128, 10, "c")]
  ctx = make_context(ops, spec, toy_table(3, seed=3), step_period_s=2e-6)
  state = HardwareState(jnp.float32(0.7), jnp.float32(spec.buffer_bytes), jnp.float32(1.0))
  t = tables(ctx, state)
  # every assignment's real cost, to enumerate the true optimum
  combos = np.array(list(itertools.product(range(7), repeat=3)), np.int32)
  preds = jax.vmap(lambda a: predict(ctx, t, one_hot(a)))(combos)
  for cap, deadline in ((0.3, 2e-6), (0.2, 1.5e-6), (0.12, 1e-6)):
    feasible = (np.asarray(preds.power_w) <= cap) & (np.asarray(preds.latency_s) <= deadline)
    modes, ok = best_assignment(
        ctx, t, jnp.float32(cap), jnp.float32(deadline), state.free_buffer_bytes, grid=256
    )
    p = predict(ctx, t, one_hot(modes))
    if not feasible.any():
      assert not bool(ok)
      continue
    assert bool(ok)
    assert float(p.power_w) <= cap * (1 + 1e-5) and float(p.latency_s) <= deadline * (1 + 1e-5)
    # Rounding each op's cost up loses < 1 grid unit per op: every assignment that fits
    # budgets shrunk by n_ops / grid fits the grid problem, so the oracle does at least as well.
    shrink = 1 - 3 / 256
    static = float(spec.static_power_w)
    tight = (np.asarray(preds.power_w) <= static + (cap - static) * shrink) & (
        np.asarray(preds.latency_s) <= deadline * shrink
    )
    if tight.any():
      bound = float(np.min(np.where(tight, np.asarray(preds.delta_loss), np.inf)))
      assert float(p.delta_loss) <= bound + 1e-6
    best = float(np.min(np.where(feasible, np.asarray(preds.delta_loss), np.inf)))
    assert float(p.delta_loss) >= best - 1e-6  # and never better than the true optimum
