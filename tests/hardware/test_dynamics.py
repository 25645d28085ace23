"""Tests for aprec/hardware/dynamics.py: the switching cost by hand, events off by default."""

from __future__ import annotations

import jax
import numpy as np

from aprec.hardware import scenarios, simulator
from op_tables import dot

INT8, INT4 = 5, 6


def test_switch_cost_reloads_the_changed_weights(spec):
  ops = [dot(64, 256, 256, "a"), dot(64, 256, 128, "b")]
  params = scenarios.scenario(
      "contention_swing", spec, ops, job_arrival_prob=0.0, burst_start_prob=0.0
  )
  params = params.replace(name="")
  state = simulator.init_state(params)
  key = jax.random.key(0)
  step = jax.jit(simulator.step)
  s1, first = step(state, np.array([INT8, INT8]), key, params)
  _, same = step(s1, np.array([INT8, INT8]), key, params)
  _, changed = step(s1, np.array([INT4, INT8]), key, params)
  _, fresh = step(state, np.array([INT4, INT8]), key, params)  # nothing ran before
  # op "a" reloads its int4 weights (half a byte each) and one fp32 scale per channel
  loaded_bytes = 256 * 256 * 0.5 + 256 * 4.0
  switch_s = loaded_bytes / spec.dram_bandwidth_bytes_per_s + spec.op_overhead_s
  np.testing.assert_allclose(float(same.latency_s), float(first.latency_s), rtol=1e-6)
  np.testing.assert_allclose(float(changed.latency_s) - float(fresh.latency_s), switch_s, rtol=1e-3)
  switch_j = loaded_bytes * (spec.dram_energy_per_byte_j + spec.dma_conversion_energy_per_byte_j)
  # the batch fits the period, so the step energy grows by the reload's dynamic energy
  np.testing.assert_allclose(float(changed.energy_j) - float(fresh.energy_j), switch_j, rtol=1e-3)


def test_study_events_are_off_in_the_earlier_scenarios(spec):
  params = scenarios.scenario("thermal", spec, [dot(8, 16, 4)])
  assert float(params.heat_event_prob) == 0.0 and float(params.saver_start_prob) == 0.0
  assert float(params.switch_cost_scale) == 0.0
