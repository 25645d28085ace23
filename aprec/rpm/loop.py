"""The closed loop: sensors → policy → PAK switch → real batch through the emulator → log.

Each step ``t`` the simulator prices the batch under the assignment the policy chose after
step ``t - 1`` and returns the readings; the policy reads them and picks step ``t + 1``'s
assignment. Deployable policies run behind a guard: an implausible reading
(``observe.plausible``: NaN, spikes, out-of-range) makes the RPM run ``safe_assignment`` for
the next step, logged in ``Trace.fallback``, and leaves the policy's own state as it was.

The simulator and policy run together jitted in one ``lax.scan`` (``run_episode``); then
``measure_accuracy`` runs every step's real test batch through the one jitted emulator in
the assignment that step ran (each distinct assignment once over all batches), so
accuracy is measured, not predicted.

Example:
  >>> # trace = run_episode(params, ctx, Greedy(), emu.assignment("fp16"), safe, key, 200)
  >>> # correct = measure_accuracy(batches, trace.assignments)
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aprec.hardware import simulator
from aprec.rpm.context import Context
from aprec.rpm.observe import expected_power_w, metrics_plausible, plausible


class Trace(NamedTuple):
  """One episode: ``metrics`` and ``assignments`` (what step ``t`` ran) stacked over steps;
  ``fallback[t]``: step ``t`` ran the safe assignment because of a faulty reading."""

  metrics: simulator.Metrics
  assignments: jax.Array
  fallback: jax.Array


def _guarded_step(policy, guard: bool, ctx, ran, state, metrics, key, safe):
  new_state, proposal = policy(state, metrics, key)
  if not guard:
    return new_state, proposal, jnp.bool_(False)
  ok = plausible(metrics.power_w, metrics.power_cap_w, metrics.buffer_occupancy,
                 metrics.pe_availability, metrics.temperature_c, expected_power_w(ctx, ran))
  new_state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_state, state)
  return new_state, jnp.where(ok, proposal, safe), ~ok


@functools.partial(jax.jit, static_argnames=("policy", "guard", "n_steps"))
def _episode(params, ctx, policy_state, assignment, safe, key, policy, guard: bool, n_steps: int):
  keys = jax.random.split(key, (n_steps, 2))

  def body(carry, k):
    s, ps, a, fell_back = carry
    s, m = simulator.step(s, a, k[0], params)
    ps, a_next, fb = _guarded_step(policy, guard, ctx, a, ps, m, k[1], safe)
    return (s, ps, a_next, fb), (m, a, fell_back)

  init = (simulator.init_state(params), policy_state, assignment, jnp.bool_(False))
  _, (metrics, assignments, fallback) = jax.lax.scan(body, init, keys)
  return Trace(metrics, assignments, fallback)


def run_episode(params: simulator.ScenarioParams, ctx: Context, policy: Any,
                assignment: jax.Array, safe_assignment: jax.Array, key: jax.Array,
                n_steps: int) -> Trace:
  """Runs ``policy`` in the loop for ``n_steps`` (jitted; one compile per policy type).

  Args:
    params: the scenario (``simulator.scenario``) for the same op table as ``ctx``.
    ctx: the deployment context.
    policy: a policy object (``Static``, ``Greedy``, ``Oracle``, ``Learned``).
    assignment: what step 0 runs (the default mode everywhere, e.g. fp16).
    safe_assignment: what runs after a faulty reading.
    key: PRNG key of the scenario and the policy.
    n_steps: episode length.

  Example:
    >>> # trace = run_episode(params, ctx, Static(), fp16, int8, jax.random.key(0), 100)
  """
  if n_steps <= 0:
    raise ValueError(f"n_steps = {n_steps}; expected a positive number of steps")
  assignment = jnp.asarray(assignment, jnp.int32)
  if assignment.shape != (ctx.n_ops,):
    raise ValueError(f"assignment has shape {assignment.shape}; expected ({ctx.n_ops},)")
  guard = not getattr(policy, "reads_truth", False) and policy.name != "static"
  return _episode(params.replace(name=""), ctx, policy.init(ctx, assignment), assignment,
                  jnp.asarray(safe_assignment, jnp.int32), key, policy, guard, n_steps)


def decision_time_us(policy: Any, ctx: Context, trace: Trace, repeats: int = 3) -> float:
  """Jitted time of one decision, µs: the policy alone scanned over the episode's metrics."""
  state0 = policy.init(ctx, trace.assignments[0])
  n = trace.assignments.shape[0]

  @jax.jit
  def scan(state, metrics, keys):
    def body(s, xs):
      m, k = xs
      s, a = policy(s, m, k)
      return s, a
    return jax.lax.scan(body, state, (metrics, keys))[1]

  keys = jax.random.split(jax.random.key(0), n)
  jax.block_until_ready(scan(state0, trace.metrics, keys))
  best = np.inf
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(scan(state0, trace.metrics, keys))
    best = min(best, time.perf_counter() - start)
  return float(best / n * 1e6)


class Batches(NamedTuple):
  """Test data cut into equal batches, ``x [n_batches, batch, ...]``, ``y [n_batches, batch]``."""

  x: np.ndarray
  y: np.ndarray


def make_batches(x: np.ndarray, y: np.ndarray, batch_size: int) -> Batches:
  """Cuts a split into ``len(x) // batch_size`` batches (the remainder is dropped)."""
  n = len(x) // batch_size
  if n == 0:
    raise ValueError(f"batch_size {batch_size} is larger than the split ({len(x)} examples)")
  return Batches(np.asarray(x[:n * batch_size]).reshape(n, batch_size, *x.shape[1:]),
                 np.asarray(y[:n * batch_size]).reshape(n, batch_size))


def batch_scorer(emulator, params) -> Callable[[np.ndarray, Batches], np.ndarray]:
  """A jitted ``(modes, batches) -> correct count per batch`` (one compile for all modes)."""
  @jax.jit
  def score(modes, x, y):
    logits = jax.vmap(lambda xb: emulator(params, xb, modes))(x)
    return jnp.sum(jnp.argmax(logits, -1) == y, axis=-1)

  return lambda modes, b: np.asarray(score(jnp.asarray(modes, jnp.int32), b.x, b.y))


def measure_accuracy(scorer: Callable, batches: Batches, assignments, *,
                     cache: dict | None = None) -> np.ndarray:
  """Correct predictions of every step: step ``t`` runs batch ``t % n_batches`` in
  ``assignments[t]``. ``cache`` (assignment bytes → per-batch counts) is shared across runs."""
  assignments = np.asarray(assignments, np.int32)
  cache = {} if cache is None else cache
  out = np.zeros(len(assignments), np.int64)
  n_batches = batches.x.shape[0]
  for t, a in enumerate(assignments):
    k = a.tobytes()
    if k not in cache:
      cache[k] = scorer(a, batches)
    out[t] = cache[k][t % n_batches]
  return out


def summarize(trace: Trace, correct: np.ndarray, batch_size: int, ctx: Context | None = None
              ) -> dict[str, float]:
  """The evaluation row of one episode (ground truth, not sensor readings)."""
  m = jax.tree.map(np.asarray, trace.metrics)
  expected = (0.0 if ctx is None else
              jax.vmap(lambda a: expected_power_w(ctx, a))(jnp.asarray(trace.assignments)))
  a = np.asarray(trace.assignments)
  switches = np.sum(a[1:] != a[:-1], axis=1) if len(a) > 1 else np.zeros(1)
  return {
      "accuracy": float(np.sum(correct) / (len(correct) * batch_size)),
      "energy_per_inference_j": float(np.mean(m.energy_j) / batch_size),
      "power_violation_frac": float(np.mean(m.true_power_w > m.power_cap_w)),
      "buffer_violation_frac": float(np.mean(m.true_buffer_occupancy > 1.0)),
      "deadline_miss_frac": float(np.mean(m.latency_s > m.deadline_s)),
      "switches_per_step": float(np.mean(switches)),
      "fallback_frac": float(np.mean(np.asarray(trace.fallback))),
      "sensor_fault_frac": float(1.0 - np.mean(m.sensor_ok)),
      "implausible_reading_frac": float(1.0 - np.mean(np.asarray(metrics_plausible(m, expected)))),
      "mean_power_w": float(np.mean(m.true_power_w)),
  }
