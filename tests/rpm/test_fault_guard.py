"""aprec/rpm/guard.py: faulty readings (implausible or stuck) make any policy fall back."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aprec.hardware import scenarios, simulator
from aprec.rpm.greedy import Greedy
from aprec.rpm.fault_guard import guard
from aprec.rpm.loop import run_episode, summarize
from aprec.rpm.policy import Policy
from aprec.rpm.static import Static
from rpm_helpers import deployment

FP16, INT8 = 2, 5


@dataclasses.dataclass(frozen=True, kw_only=True)
class Random:
  """Switches to a random assignment every step: the hardest case for the stuck rule."""

  name: str = "random"
  reads_true_state: bool = False

  def init(self, ctx, assignment):
    return jnp.asarray(assignment, jnp.int32)

  def __call__(self, state, metrics, key):
    modes = jax.random.randint(key, state.shape, 0, 7).astype(jnp.int32)
    return modes, modes


def _power_stuck(params, prob, steps):
  """Only the power sensor (the first of ``simulator.SENSORS``) gets stuck."""
  faults = simulator.FaultParams(
      stuck_prob=np.array([prob, 0, 0, 0], np.float32), stuck_steps=np.int32(steps)
  )
  return params.replace(faults=faults)


def test_policies_satisfy_the_contract():
  for policy in (Static(), Greedy(), guard(Greedy()), Random()):
    assert isinstance(policy, Policy)
  assert guard(Greedy(restore=True)).name == "greedy_restore"
  with pytest.raises(ValueError, match="unknown precision mode 'int2'"):
    guard(Greedy(), "int2")


def test_power_sensor_stuck_for_the_whole_run_falls_back(cnn_ops, spec):
  params, ctx = deployment("thermal", cnn_ops, spec)
  n, steps = len(cnn_ops), 300
  key = jax.random.key(0)
  healthy = run_episode(params, ctx, guard(Greedy()), np.full(n, FP16), key, steps)
  stuck_params = _power_stuck(params, 1.0, 10**6)
  blind = run_episode(stuck_params, ctx, Greedy(), np.full(n, FP16), key, steps)
  guarded = run_episode(stuck_params, ctx, guard(Greedy()), np.full(n, FP16), key, steps)
  over = lambda t: summarize(t, np.zeros(steps), 1, ctx)["power_violation_frac"]
  # Unguarded, the stuck reading hides the pressure: greedy never acts.
  assert over(blind) > over(healthy) + 0.3
  # Guarded, every step after the first runs the safe assignment, and the cap holds as
  # well as with a healthy sensor.
  fb = np.asarray(guarded.fallback)
  assert fb[1:].all() and np.all(np.asarray(guarded.assignments)[1:] == INT8)
  assert over(guarded) <= over(healthy)


def test_stuck_rule_fires_only_on_a_stuck_sensor(cnn_ops, spec):
  params, ctx = deployment("contention", cnn_ops, spec)
  n = len(cnn_ops)
  trace = run_episode(
      _power_stuck(params, 0.02, 30), ctx, guard(Random()), np.full(n, FP16), jax.random.key(1), 400
  )
  stuck = np.asarray(trace.stuck_sensor)
  truly = ~np.asarray(trace.metrics.sensor_ok)  # only the power sensor can fault here
  assert truly.sum() > 50 and stuck.sum() > 0.5 * truly.sum()
  # stuck_sensor[t] is decided from step t - 1's reading.
  assert np.all(truly[:-1][stuck[1:]])
  assert np.all(np.asarray(trace.assignments)[stuck] == INT8)


@pytest.mark.parametrize("name", scenarios.SCENARIOS)
def test_no_false_fallbacks_without_faults(name, cnn_ops, spec):
  params, ctx = deployment(name, cnn_ops, spec)
  n = len(cnn_ops)
  for policy in (guard(Greedy()), guard(Greedy(restore=True)), guard(Random())):
    trace = run_episode(params, ctx, policy, np.full(n, FP16), jax.random.key(2), 300)
    assert np.asarray(trace.metrics.sensor_ok).all()
    assert not np.asarray(trace.fallback).any(), (name, policy.name)
