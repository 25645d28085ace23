"""Tests for aprec/rpm/lookup.py: cells hold the oracle's plan at their lower edges."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np

from aprec.hardware.cost import HardwareState
from aprec.rpm.context import make_context, tables
from aprec.rpm.greedy import Greedy
from aprec.rpm.lookup import Lookup, build_table, planned_candidates
from aprec.rpm.oracle import best_assignment
from op_tables import dot
from rpm_helpers import toy_table


def _ctx(spec):
  ops = [dot(32, 64, 64, "a"), dot(32, 64, 128, "b")]
  return make_context(ops, spec, toy_table(2, seed=1), step_period_s=2e-6)


def test_lookup_rounds_readings_down_to_the_cell_plan(spec):
  ctx = _ctx(spec)
  caps, pes, deadlines = np.array([0.06, 0.1, 0.3]), np.array([0.3, 1.0]), np.array([1e-6, 2e-6])
  table = build_table(ctx, caps, pes, deadlines, margin=0.0)
  buffer = jnp.float32(spec.buffer_bytes)
  for i, j, k in [(0, 0, 0), (1, 1, 0), (2, 1, 1)]:
    t = tables(ctx, HardwareState(jnp.float32(pes[j]), buffer, jnp.float32(1.0)))
    want, _ = best_assignment(ctx, t, jnp.float32(caps[i]), jnp.float32(deadlines[k]), buffer)
    np.testing.assert_array_equal(np.asarray(table.plans[i, j, k]), np.asarray(want))
    # a reading just above the edges looks up the same cell
    reading = types.SimpleNamespace(
        power_cap_w=caps[i] * 1.01, pe_availability=pes[j] + 1e-3, deadline_s=deadlines[k] * 1.01
    )
    policy = Lookup(table=table)
    _, got = policy(policy.init(ctx, np.zeros(2, np.int32)), reading, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_candidates_are_sorted_by_predicted_loss_and_include_the_uniform_modes(spec):
  ctx = _ctx(spec)
  cands = planned_candidates(ctx)
  dl = np.asarray(ctx.delta_loss)[np.arange(2)[None], cands].sum(1)
  assert np.all(np.diff(dl) >= 0)
  for mode in (5, 6):  # int8, int4
    assert any(np.all(c == mode) for c in cands)


def test_deadline_aware_greedy_lowers_on_latency_alone(spec):
  ctx = _ctx(spec)
  calm_power = dict(power_w=0.1, power_cap_w=1.0, buffer_occupancy=0.1)
  late = types.SimpleNamespace(**calm_power, latency_s=1.0, deadline_s=1.0)
  modes = jnp.array([5, 5], jnp.int32)
  for policy, lowers in ((Greedy(), False), (Greedy(restore=True, deadline_threshold=0.95), True)):
    _, new = policy(policy.init(ctx, modes), late, jax.random.key(0))
    assert bool(np.any(np.asarray(new) != np.asarray(modes))) == lowers
