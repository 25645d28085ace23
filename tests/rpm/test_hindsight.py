"""Tests for aprec/rpm/hindsight.py: the DP against brute force, static* against its rule."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aprec.hardware import scenarios, simulator
from aprec.rpm import hindsight
from aprec.rpm.context import make_context
from aprec.rpm.loop import run_episode
from aprec.rpm.static import Static
from op_tables import dot
from rpm_helpers import toy_table

N_STEPS = 5
# int8 everywhere, int4 everywhere, two mixes: the candidate set
CANDIDATES = np.array([[5, 5], [6, 6], [5, 6], [6, 5]], np.int32)


def _ops():
  return [dot(64, 256, 256, "a"), dot(64, 256, 512, "b")]


def _params(name, spec):
  ops = _ops()
  period = float(scenarios.scenario(name, spec, ops).step_period_s)
  # frequent events and a fast die, so six steps see the constraints bind and release
  return scenarios.scenario(
      name,
      spec,
      ops,
      job_arrival_prob=0.5,
      burst_start_prob=0.3,
      burst_steps_range=(1, 2),
      heat_event_prob=0.5,
      heat_steps_range=(1, 3),
      thermal_time_constant_s=1.5 * period,
      switch_cost_scale=50.0,  # large enough to matter on this tiny table
  )


@jax.jit
def _rollouts(params, keys, assignments):
  """Every ``[T, n_ops]`` sequence of ``assignments`` through the simulator."""

  def run(seq):
    def body(s, xs):
      return simulator.step(s, xs[1], xs[0], params)

    return jax.lax.scan(body, simulator.init_state(params), (keys, seq))[1]

  return jax.vmap(run)(assignments)


def _brute_force(params, quality, keys):
  seqs = np.array(list(itertools.product(range(len(CANDIDATES)), repeat=N_STEPS)))
  m = _rollouts(params.replace(name=""), keys, jnp.asarray(CANDIDATES[seqs]))
  violated = (np.asarray(m.true_power_w) > np.asarray(m.power_cap_w)) | (
      np.asarray(m.latency_s) > np.asarray(m.deadline_s)
  )
  value = quality[seqs, np.arange(N_STEPS)].sum(1) - hindsight.VIOLATION_PENALTY * violated.sum(1)
  return seqs, value, violated


@pytest.mark.parametrize("name, seed", [("contention_swing", 0), ("thermal_swing", 3)])
def test_best_sequence_equals_brute_force_and_beats_every_policy(name, seed, spec):
  params = _params(name, spec)
  quality = np.random.default_rng(0).uniform(0.2, 1.0, (len(CANDIDATES), N_STEPS))
  quality[0] += 0.5  # int8 is best, so the constraints decide
  key = jax.random.key(seed)  # a draw where uniform int8 breaks the constraints
  keys = hindsight.episode_keys(key, N_STEPS)
  seqs, value, violated = _brute_force(params, quality, keys)
  # the trace binds somewhere and is satisfiable: the test is not trivial
  assert not violated.any(axis=1).all()
  assert violated[np.all(seqs == 0, axis=1)].any()
  best = hindsight.best_sequence(params, CANDIDATES, quality, keys)
  assert best.exact
  np.testing.assert_allclose(best.value, value.max(), rtol=1e-9)
  chosen = np.flatnonzero(np.all(seqs == best.choice, axis=1))[0]
  np.testing.assert_allclose(value[chosen], value.max(), rtol=1e-9)
  # The brute force holds every sequence any policy restricted to the candidates can run, so
  # the DP is at least as good as each of them; the static candidates are its constant rows.
  for k in range(len(CANDIDATES)):
    assert best.value >= value[np.all(seqs == k, axis=1)][0] - 1e-9


def test_static_star_is_best_among_candidates_meeting_the_constraint(spec):
  params = scenarios.scenario("battery_saver", spec, _ops())
  ctx = make_context(_ops(), spec, toy_table(2), float(params.step_period_s))
  key, n_steps = jax.random.key(5), 200
  quality = np.array([0.9, 0.3, 0.6, 0.7])
  frac = []
  for c in CANDIDATES:
    m = run_episode(params, ctx, Static(), c, key, n_steps).metrics
    over = (np.asarray(m.true_power_w) > np.asarray(m.power_cap_w)) | (
        np.asarray(m.latency_s) > np.asarray(m.deadline_s)
    )
    frac.append(float(np.mean(over)))
  frac = np.array(frac)
  k = hindsight.static_star(quality, frac)
  assert frac[k] <= 0.01
  meeting = frac <= 0.01
  assert meeting.sum() < len(frac)  # the constraint rules something out
  assert quality[k] == quality[meeting].max()
