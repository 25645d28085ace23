"""Tests for aprec/rpm/context.py: the ladder and the per-op tables against the simulator."""

from __future__ import annotations

import jax
import numpy as np

from aprec.hardware import simulator
from aprec.emulator.formats import MODES
from aprec.rpm.context import LADDER, idle_state, next_higher, next_lower, predict, tables
from aprec.hardware.cost import one_hot
from rpm_helpers import deployment


def test_ladder_order_and_steps():
  assert [MODES[m] for m in LADDER] == ["fp32", "fp16", "bf16", "fp8_e4m3", "int8", "int4"]
  modes = np.array(LADDER)
  assert np.asarray(next_lower(modes)).tolist() == list(LADDER[1:]) + [LADDER[-1]]
  assert np.asarray(next_higher(modes)).tolist() == [LADDER[0]] + list(LADDER[:-1])


def test_predicted_power_matches_simulator(cnn_ops, spec):
  params, ctx = deployment("steady", cnn_ops, spec)
  for mode in (1, 2, 5, 6):
    a = np.full(len(cnn_ops), mode, np.int32)
    _, m = simulator.step(simulator.init_state(params), a, jax.random.key(0), params)
    p = predict(ctx, tables(ctx, idle_state(ctx)), one_hot(a))
    np.testing.assert_allclose(float(p.power_w), float(m.true_power_w), rtol=1e-4)
    np.testing.assert_allclose(float(p.latency_s), float(m.latency_s), rtol=1e-4)


def test_tables_are_the_cost_of_each_uniform_assignment(cnn_ops, spec):
  """``tables`` reads the cost model's per-mode tables once; each column must equal the
  cost model run on the one-hot assignment of that mode (how it was computed before)."""
  from aprec.hardware.cost import HardwareState, cost

  _, ctx = deployment("steady", cnn_ops, spec)
  state = HardwareState(np.float32(0.6), np.float32(spec.buffer_bytes * 0.3), np.float32(0.8))
  t = tables(ctx, state)
  for mode in range(len(MODES)):
    c = cost(ctx.ops, one_hot(np.full(len(cnn_ops), mode)), ctx.spec, state)
    np.testing.assert_array_equal(np.asarray(t.latency_s[:, mode]), np.asarray(c.op_latency_s))
    np.testing.assert_array_equal(
        np.asarray(t.working_set_bytes[:, mode]), np.asarray(c.op_working_set_bytes)
    )
    dynamic = c.op_energy_j - np.float32(spec.static_power_w) * c.op_latency_s
    np.testing.assert_allclose(np.asarray(t.dynamic_energy_j[:, mode]), dynamic, rtol=1e-6)
