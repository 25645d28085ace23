"""The closed loop: sensors → policy → PAK switch → real batch through the emulator → log.

Each step ``t`` the simulator prices the batch under the assignment the policy chose after
step ``t - 1`` and returns the readings; the policy reads them and picks step ``t + 1``'s
assignment. Deployable policies run behind ``aprec.rpm.fault_guard``: a faulty reading
(implausible, or a stuck power sensor) makes them run the safe assignment for the next
step, logged in ``Trace.fallback``, and leaves the wrapped policy's state as it was.

The simulator and policy run together jitted in one ``lax.scan`` (``run_episode``); then
``measure_accuracy`` runs every step's real test batch through the emulator in the
assignment that step ran (each distinct assignment once over all batches, in
``aprec.emulator.batching.sweep``), so accuracy is measured, not predicted.

Example:
  Step ``t`` of a trace runs batch ``t % n_batches`` in that step's assignment. A 16 → 10
  dense layer, labelled with its own fp32 predictions, so the fp32 steps count every
  example of their 2-example batch correct:

  >>> import jax, flax.linen as nn, numpy as np
  >>> from aprec import Emulator, mode_indices
  >>> x = np.random.default_rng(0).normal(size=(6, 16)).astype(np.float32)
  >>> model = nn.Dense(10)
  >>> params = model.init(jax.random.key(0), x)
  >>> labels = np.argmax(model.apply(params, x), -1)
  >>> emu = Emulator(model.apply, params, x[:2])
  >>> steps = [mode_indices(["fp32"]), mode_indices(["int4"]), mode_indices(["fp32"])]
  >>> correct = measure_accuracy(emu, params, batching.split(x, labels, 2), steps)
  >>> correct[[0, 2]].tolist(), correct.shape
  ([2, 2], (3,))
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aprec.emulator import batching
from aprec.emulator.batching import Batches
from aprec.hardware import simulator
from aprec.rpm import fault_guard
from aprec.rpm.context import Context
from aprec.rpm.observe import expected_power_w, metrics_plausible
from aprec.rpm.policy import Policy

SWEEP_CHUNK = 32  # distinct assignments per compiled accuracy sweep


class Trace(NamedTuple):
  """One episode: ``metrics`` and ``assignments`` (what step ``t`` ran) stacked over steps;
  ``fallback[t]``: step ``t`` ran the guard's safe assignment because of a faulty reading
  (``stuck_sensor[t]``: because the power sensor was judged stuck)."""

  metrics: simulator.Metrics
  assignments: jax.Array
  fallback: jax.Array
  stuck_sensor: jax.Array


@functools.partial(jax.jit, static_argnames=("policy", "n_steps"))
def _episode(params, ctx, policy_state, assignment, key, policy, n_steps: int):
  keys = jax.random.split(key, (n_steps, 2))

  def body(carry, k):
    s, ps, a, fell_back, stuck = carry
    s, m = simulator.step(s, a, k[0], params)
    ps, a_next = policy(ps, m, k[1])
    return (s, ps, a_next, *fault_guard.status(ps)), (m, a, fell_back, stuck)

  no = jnp.bool_(False)
  init = (simulator.init_state(params), policy_state, assignment, no, no)
  _, (metrics, assignments, fallback, stuck) = jax.lax.scan(body, init, keys)
  return Trace(metrics, assignments, fallback, stuck)


def run_episode(
    params: simulator.ScenarioParams,
    ctx: Context,
    policy: Policy,
    assignment: jax.Array,
    key: jax.Array,
    n_steps: int,
) -> Trace:
  """Runs ``policy`` in the loop for ``n_steps`` (jitted; one compile per policy type).

  Args:
    params: the scenario (``scenarios.scenario``) for the same op table as ``ctx``.
    ctx: the deployment context.
    policy: any ``Policy``; deployable ones usually behind ``fault_guard.guard``.
    assignment: what step 0 runs (the default mode everywhere, e.g. fp16).
    key: PRNG key of the scenario and the policy.
    n_steps: episode length.

  Example:
    >>> import numpy as np
    >>> from aprec import hardware, mode_indices
    >>> from aprec.hardware import scenarios
    >>> from aprec.hardware.fit import dot_op
    >>> from aprec.rpm.context import make_context
    >>> from aprec.rpm.fault_guard import guard
    >>> from aprec.rpm.greedy import Greedy
    >>> ops, spec = [dot_op(8, 16, 4)], hardware.edge_npu()
    >>> params = scenarios.scenario("thermal", spec, ops)
    >>> ctx = make_context(ops, spec, np.zeros((1, 7)), float(params.step_period_s))
    >>> trace = run_episode(params, ctx, guard(Greedy()), mode_indices(["fp16"]),
    ...                     jax.random.key(0), 100)
    >>> trace.assignments.shape, int(trace.fallback.sum())
    ((100, 1), 0)
  """
  if n_steps <= 0:
    raise ValueError(f"n_steps = {n_steps}; expected a positive number of steps")
  assignment = jnp.asarray(assignment, jnp.int32)
  if assignment.shape != (ctx.n_ops,):
    raise ValueError(f"assignment has shape {assignment.shape}; expected ({ctx.n_ops},)")
  return _episode(
      params.replace(name=""), ctx, policy.init(ctx, assignment), assignment, key, policy, n_steps
  )


def decision_time_us(policy: Policy, ctx: Context, trace: Trace, repeats: int = 3) -> float:
  """Jitted time of one decision, µs: the policy alone (without its guard) scanned over
  the episode's metrics."""
  policy = policy.policy if isinstance(policy, fault_guard.Guarded) else policy
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


def _correct_fn(emulator) -> Callable:
  # One function object per emulator so batching.sweep's compile cache hits.
  if emulator not in _CORRECT_FNS:

    def correct(modes, params, batch):
      x, y = batch
      return jnp.sum(jnp.argmax(emulator(params, x, modes), -1) == y)

    _CORRECT_FNS[emulator] = correct
  return _CORRECT_FNS[emulator]


_CORRECT_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def measure_accuracy(
    emulator, params: Any, batches: Batches, assignments, *, cache: dict | None = None
) -> np.ndarray:
  """Correct predictions of every step: step ``t`` runs batch ``t % n_batches`` in
  ``assignments[t]``.

  Each distinct assignment runs once over every batch (``batching.sweep``); ``cache``
  (assignment bytes → per-batch counts) carries the counts across runs.
  """
  assignments = np.asarray(assignments, np.int32)
  cache = {} if cache is None else cache
  keys = [a.tobytes() for a in assignments]
  new = list(dict.fromkeys(k for k in keys if k not in cache))
  if new:
    rows = np.stack([np.frombuffer(k, np.int32) for k in new])
    counts = batching.sweep(
        _correct_fn(emulator), rows, params, batches=tuple(batches), chunk_size=SWEEP_CHUNK
    )
    cache.update(zip(new, np.asarray(counts, np.int64)))
  n_batches = len(batches.y)
  return np.array([cache[k][t % n_batches] for t, k in enumerate(keys)], np.int64)


def summarize(
    trace: Trace, correct: np.ndarray, batch_size: int, ctx: Context | None = None
) -> dict[str, float]:
  """The evaluation row of one episode (ground truth, not sensor readings)."""
  m = jax.tree.map(np.asarray, trace.metrics)
  expected = (
      0.0
      if ctx is None
      else jax.vmap(lambda a: expected_power_w(ctx, a))(jnp.asarray(trace.assignments))
  )
  min_power_w = 0.0 if ctx is None else fault_guard.MIN_POWER_OVER_STATIC * ctx.spec.static_power_w
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
      "stuck_sensor_frac": float(np.mean(np.asarray(trace.stuck_sensor))),
      "implausible_reading_frac": float(
          1.0 - np.mean(np.asarray(metrics_plausible(m, expected, min_power_w)))
      ),
      "mean_power_w": float(np.mean(m.true_power_w)),
  }
