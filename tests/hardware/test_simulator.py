"""Tests for aprec/simulator.py: determinism, scan = loop, scenario behaviour, faults."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aprec.hardware import cost
from aprec.hardware import specs as hardware
from aprec.hardware import scenarios, simulator
from op_tables import digits_ops

FP16, INT8, INT4 = 2, 5, 6
N_STEPS = 400  # one episode length everywhere: every rollout shares one compilation


OPS = digits_ops(360)
SPEC = hardware.edge_npu()


def uniform(mode):
  return np.full(len(OPS), mode, np.int32)


@functools.cache
def _run(name, mode, key, faults):
  params = scenarios.scenario(name, SPEC, OPS, faults=faults)
  _, m = simulator.rollout(
      params, simulator.init_state(params), uniform(mode), jax.random.key(key), n_steps=N_STEPS
  )
  return params, jax.tree.map(np.asarray, m)


def run(name, mode, key=0, faults="none"):
  """A cached uniform-``mode`` episode of ``N_STEPS`` steps."""
  return _run(name, mode, key, faults)


def test_deterministic_for_a_key():
  _, a = run("contention", FP16, key=3, faults="mild")
  _, b = run("contention", FP16, key=3, faults="mild")
  _, c = run("contention", FP16, key=4, faults="mild")
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a.true_pe_availability, c.true_pe_availability)


def test_scan_equals_python_loop_of_step():
  params = scenarios.scenario("contention", SPEC, OPS, faults="severe", job_arrival_prob=0.3)
  key = jax.random.key(7)
  final, scanned = simulator.rollout(
      params, simulator.init_state(params), uniform(FP16), key, n_steps=N_STEPS
  )
  step = jax.jit(simulator.step)
  state, looped = simulator.init_state(params), []
  for k in jax.random.split(key, N_STEPS):
    state, m = step(state, jnp.asarray(uniform(FP16)), k, params)
    looped.append(m)
  looped = jax.tree.map(lambda *xs: np.stack(xs), *looped)
  for field, x, y in zip(simulator.Metrics._fields, scanned, looped):
    np.testing.assert_allclose(
        np.asarray(x, np.float64),
        np.asarray(y, np.float64),
        rtol=1e-6,
        equal_nan=True,
        err_msg=field,
    )
  for x, y in zip(final, state):
    np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=1e-6)


def test_lowering_precision_lowers_power_and_occupancy():
  steady = [run("steady", mode)[1] for mode in (FP16, INT8, INT4)]
  powers = [m.true_power_w[-1] for m in steady]
  occupancy = [m.true_buffer_occupancy[-1] for m in steady]
  assert powers[0] > powers[1] > powers[2]
  assert occupancy[0] > occupancy[1] > occupancy[2]
  for name in scenarios.SCENARIOS:
    _, hi = run(name, FP16)
    _, lo = run(name, INT8)
    assert np.all(lo.true_power_w < hi.true_power_w), name


def test_per_step_soft_assignments():
  params = scenarios.scenario("steady", SPEC, OPS)
  cycle = np.array([FP16, INT8, INT4])[np.arange(N_STEPS) % 3]
  probs = cost.one_hot(np.repeat(cycle[:, None], len(OPS), axis=1))  # [steps, ops, modes]
  _, seq = simulator.rollout(
      params, simulator.init_state(params), probs, jax.random.key(0), n_steps=N_STEPS
  )
  for mode in (FP16, INT8, INT4):
    expected = run("steady", mode)[1].true_power_w[cycle == mode]
    np.testing.assert_allclose(np.asarray(seq.true_power_w)[cycle == mode], expected, rtol=1e-6)


def test_vmap_over_keys_matches_single_rollouts():
  params = scenarios.scenario("burst", SPEC, OPS)
  init = simulator.init_state(params)
  keys = jax.random.split(jax.random.key(0), 3)
  batched = jax.vmap(
      lambda k: simulator.rollout(params, init, uniform(FP16), k, n_steps=N_STEPS)[1]
  )(keys)
  for i in range(3):
    _, single = simulator.rollout(params, init, uniform(FP16), keys[i], n_steps=N_STEPS)
    np.testing.assert_allclose(batched.deadline_s[i], single.deadline_s, rtol=1e-6)
    np.testing.assert_allclose(batched.true_power_w[i], single.true_power_w, rtol=1e-6)


def test_steady_meets_cap_and_deadline_at_fp16():
  _, m = run("steady", FP16)
  assert np.all(m.true_power_w <= m.power_cap_w) and np.all(m.latency_s <= m.deadline_s)
  assert np.all(m.sensor_ok) and np.all(m.pe_availability == 1.0)


def test_contention_takes_pes_and_buffer_at_some_steps():
  _, m = run("contention", FP16)
  busy = m.true_pe_availability < 1.0
  assert 0.1 < busy.mean() < 0.9
  assert np.all(m.free_buffer_bytes[busy] < float(SPEC.buffer_bytes))
  assert np.all(m.true_pe_availability >= 0.05)
  # Fewer PEs -> longer batches.
  assert m.latency_s[busy].mean() > m.latency_s[~busy].mean()


def test_thermal_lowers_the_cap_when_hot():
  params, m = run("thermal", FP16)
  started_hot = np.concatenate([[False], m.true_temperature_c[:-1] > params.temp_limit_c])
  assert started_hot.any() and not started_hot[:10].any()  # heats up, then throttles
  np.testing.assert_allclose(m.power_cap_w[started_hot], params.throttled_power_cap_w, rtol=1e-6)
  np.testing.assert_allclose(m.power_cap_w[~started_hot], params.power_cap_w, rtol=1e-6)
  assert np.all(np.diff(m.true_temperature_c) >= 0)  # a constant load warms monotonically
  _, cool = run("thermal", INT8)
  assert cool.true_temperature_c.max() < params.temp_limit_c


def test_battery_cap_shrinks_window_by_window():
  params, m = run("battery", INT8)
  window = int(params.battery_window_steps)
  at_window_start = m.power_cap_w[::window]  # the whole budget over the whole window
  assert np.all(np.diff(at_window_start) <= 0) and at_window_start[-1] < at_window_start[0]
  # Within a window the cap is what is left over the time left: spending below it raises it.
  assert m.power_cap_w[window - 1] > m.power_cap_w[0]


def test_burst_tightens_the_deadline():
  params, m = run("burst", FP16)
  tight = m.deadline_s < params.deadline_s
  assert 0.05 < tight.mean() < 0.9
  np.testing.assert_allclose(m.deadline_s[tight], params.burst_deadline_s, rtol=1e-6)


@pytest.mark.parametrize("name", ["contention", "thermal", "battery", "burst"])
def test_pressure_binds_at_fp16_and_is_met_at_int8(name):
  def violated(m):
    return (m.true_power_w > m.power_cap_w) | (m.latency_s > m.deadline_s)

  _, hi = run(name, FP16)
  _, lo = run(name, INT8)
  assert 0.05 < violated(hi).mean() < 1.0, name  # binds sometimes, not from the start
  assert not violated(hi)[0]
  assert violated(lo).mean() < 0.05, name


def test_sensor_faults():
  _, clean = run("thermal", FP16, key=2)
  _, drop = run("thermal", FP16, key=2, faults=simulator.FaultParams(dropout_prob=0.1))
  nan = np.isnan(drop.power_w)
  assert 0.03 < nan.mean() < 0.2
  assert not drop.sensor_ok[nan].any()
  # Faults touch readings only: the ground truth is the clean run's.
  np.testing.assert_allclose(drop.true_power_w, clean.true_power_w, rtol=1e-6)
  np.testing.assert_allclose(drop.power_w[~nan], clean.true_power_w[~nan], rtol=1e-6)

  _, stuck = run(
      "thermal", FP16, key=2, faults=simulator.FaultParams(stuck_prob=0.02, stuck_steps=10)
  )
  frozen = stuck.temperature_c != stuck.true_temperature_c
  assert frozen.any() and not stuck.sensor_ok[frozen].any()
  idx = np.flatnonzero(frozen)
  idx = idx[idx > 0]
  np.testing.assert_array_equal(stuck.temperature_c[idx], stuck.temperature_c[idx - 1])

  _, spiky = run(
      "thermal", FP16, key=2, faults=simulator.FaultParams(spike_prob=0.05, spike_scale=5.0)
  )
  spiked = ~np.isclose(spiky.power_w, spiky.true_power_w)
  assert spiked.any()
  np.testing.assert_allclose(spiky.power_w[spiked], 5.0 * spiky.true_power_w[spiked], rtol=1e-6)


def test_scenario_errors():
  with pytest.raises(ValueError, match="known scenarios: steady, contention, thermal"):
    scenarios.scenario("meltdown", SPEC, OPS)
  with pytest.raises(ValueError, match=r"unknown scenario settings \['fan_speed'\]"):
    scenarios.scenario("steady", SPEC, OPS, fan_speed=3)
  with pytest.raises(ValueError, match="known: none, mild, severe"):
    scenarios.scenario("steady", SPEC, OPS, faults="apocalyptic")


def test_plot_trace_writes_png(tmp_path):
  _, m = run("contention", FP16, faults="mild")
  from aprec.app import figures

  path = figures.sim_trace(m, tmp_path / "trace.png", title="contention")
  data = (tmp_path / "trace.png").read_bytes()
  assert str(path).endswith("trace.png") and data[:8] == b"\x89PNG\r\n\x1a\n"
