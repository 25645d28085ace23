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
