"""Tests for aprec/rpm/loop.py: the closed loop reacts to readings and survives faults."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from aprec.hardware import simulator
from aprec.rpm.greedy import Greedy
from aprec.rpm.fault_guard import guard
from aprec.rpm.loop import run_episode, summarize
from aprec.rpm.oracle import Oracle
from aprec.rpm.static import Static
from rpm_helpers import deployment

FP16, INT8 = 2, 5


def test_loop_survives_sensor_faults(cnn_ops, spec):
  params, ctx = deployment("contention", cnn_ops, spec)
  heavy = simulator.FaultParams(dropout_prob=0.2, stuck_prob=0.05, spike_prob=0.2)
  params = params.replace(faults=jax.tree.map(lambda x: np.asarray(x, type(x)), heavy))
  n = len(cnn_ops)
  for policy in (guard(Greedy()), guard(Greedy(restore=True))):
    trace = run_episode(params, ctx, policy, np.full(n, FP16), jax.random.key(3), 120)
    a = np.asarray(trace.assignments)
    fb = np.asarray(trace.fallback)
    assert a.shape == (120, n) and np.all((a >= 0) & (a < 7))
    assert fb.sum() > 10  # faults were seen and logged ...
    assert np.all(a[1:][fb[1:]] == INT8)  # ... and each one ran the safe assignment
    metrics = jax.tree.map(np.asarray, trace.metrics)
    assert np.isnan(metrics.power_w).any()  # NaN readings really were injected
    row = summarize(trace, np.full(120, 32), 32, ctx)
    assert all(np.isfinite(v) for v in row.values())


def test_static_and_oracle_need_no_guard(cnn_ops, spec):
  params, ctx = deployment("thermal", cnn_ops, spec, faults="severe")
  n = len(cnn_ops)
  for policy in (Static(), Oracle(grid=64)):
    trace = run_episode(params, ctx, policy, np.full(n, FP16), jax.random.key(0), 50)
    assert not np.asarray(trace.fallback).any()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Threshold:
  """int8 everywhere while the power reading is over 90 % of the cap, else fp16."""

  name: str = "threshold"
  reads_true_state: bool = False

  def init(self, ctx, assignment):
    return ()

  def __call__(self, state, metrics, key):
    over = metrics.power_w > 0.9 * metrics.power_cap_w
    return state, jnp.where(over, INT8, FP16) * jnp.ones(4, jnp.int32)


def test_loop_policy_reacts_to_power(cnn_ops, spec):
  params, ctx = deployment("thermal", cnn_ops, spec)
  n = len(cnn_ops)
  react = run_episode(params, ctx, Threshold(), np.full(n, FP16), jax.random.key(0), 200)
  static = run_episode(params, ctx, Static(), np.full(n, FP16), jax.random.key(0), 200)
  used = np.asarray(react.assignments[:, 0])
  assert (used == INT8).any() and (used == FP16).any()
  over = lambda t: np.mean(np.asarray(t.metrics.true_power_w > t.metrics.power_cap_w))
  assert over(react) < over(static)
