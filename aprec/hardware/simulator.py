"""The NNP runtime simulator: a time-stepped hardware state that produces what the RPM reads.

One step is one inference batch. A pure ``step(state, assignment, key, params)`` prices the
batch with the cost model under the live hardware state, advances co-tenant jobs,
temperature, the power cap, the deadline and the sensors, and returns ``Metrics``.
It runs inside ``lax.scan`` (``rollout``; with a policy, ``aprec.rpm.loop.run_episode``)
and under ``vmap``.

Scenarios (``aprec.hardware.scenarios``) set the ``ScenarioParams``.

Sensor faults (``FaultParams``) apply to any scenario: dropouts read NaN, stuck sensors
repeat their last value, spikes multiply the reading. NaN readings are emitted on
purpose; the ``true_*`` fields and ``sensor_ok`` are ground truth for evaluation only.

Example:
  >>> import jax
  >>> from aprec import hardware
  >>> from aprec.hardware import scenarios
  >>> from aprec.hardware.fit import dot_op
  >>> params = scenarios.scenario("thermal", hardware.edge_npu(), [dot_op(64, 256, 256)])
  >>> state, metrics = rollout(params, init_state(params), [2], jax.random.key(0), n_steps=8)
  >>> metrics.power_w.shape
  (8,)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from aprec.hardware.cost import HardwareState, cost, one_hot
from aprec.hardware.dynamics import Exogenous as Exogenous
from aprec.hardware.dynamics import Physics as Physics
from aprec.hardware.dynamics import advance as advance
from aprec.hardware.dynamics import clock_scale as clock_scale
from aprec.hardware.dynamics import exogenous as exogenous
from aprec.hardware.dynamics import switch_cost as switch_cost
from aprec.hardware.sim_types import N_UNIFORMS as N_UNIFORMS
from aprec.hardware.sim_types import SENSORS as SENSORS
from aprec.hardware.sim_types import FaultParams as FaultParams
from aprec.hardware.sim_types import Metrics as Metrics
from aprec.hardware.sim_types import ScenarioParams as ScenarioParams
from aprec.hardware.sim_types import SimState as SimState
from aprec.hardware.sim_types import init_state as init_state


def _as_probs(assignment, n_ops: int, dtype) -> jax.Array:
  a = jnp.asarray(assignment)
  if jnp.issubdtype(a.dtype, jnp.integer):
    return one_hot(a, dtype)
  return a.astype(dtype)


def step(
    state: SimState, assignment: jax.Array, key: jax.Array, params: ScenarioParams
) -> tuple[SimState, Metrics]:
  """Advances the hardware by one batch run under ``assignment``.

  Args:
    state: the carried ``SimState``.
    assignment: ``[n_ops]`` int modes or ``[n_ops, n_modes]`` mode probabilities.
    key: a PRNG key for this step.
    params: the scenario.

  Returns:
    ``(next_state, metrics)``.

  Example:
    >>> import jax
    >>> from aprec import hardware
    >>> from aprec.hardware.fit import dot_op
    >>> from aprec.hardware.scenarios import scenario
    >>> params = scenario("steady", hardware.edge_npu(), [dot_op(64, 256, 256)])
    >>> _, m = step(init_state(params), jax.numpy.array([5]), jax.random.key(0), params)
    >>> bool(m.power_w <= m.power_cap_w)
    True
  """
  spec, dtype = params.spec, params.ops.macs.dtype
  probs = _as_probs(assignment, params.ops.n_ops, dtype)
  u_fault = jax.random.uniform(key, (N_UNIFORMS,), dtype)[6:].reshape(3, len(SENSORS))
  ex = exogenous(state, key, params)
  clock = clock_scale(params, state.temperature_c)
  c = cost(params.ops, probs, spec, HardwareState(ex.pe_availability, ex.free_buffer_bytes, clock))
  switch_latency_s, switch_energy_j = switch_cost(params, state.modes, probs)
  latency_s = c.latency_s + switch_latency_s
  phys = advance(
      params,
      state.t,
      state.temperature_c,
      state.window_energy_j,
      ex,
      latency_s,
      c.energy_j + switch_energy_j,
  )
  power_w, buffer_bytes = phys.power_w, jnp.asarray(spec.buffer_bytes, dtype)
  occupancy = (buffer_bytes - ex.free_buffer_bytes + c.peak_buffer_bytes) / buffer_bytes
  true = jnp.stack([power_w, phys.temperature_c, occupancy, ex.pe_availability]).astype(dtype)
  fp = params.faults
  dropout, spike = u_fault[0] < fp.dropout_prob, u_fault[1] < fp.spike_prob
  stuck_left = jnp.maximum(state.stuck_steps_left - 1, 0)
  stuck_left = jnp.where(
      (u_fault[2] < fp.stuck_prob) & (stuck_left == 0),
      jnp.asarray(fp.stuck_steps, jnp.int32),
      stuck_left,
  )
  stuck = stuck_left > 0
  reading = jnp.where(spike, true * fp.spike_scale, true)
  reading = jnp.where(stuck, state.held_reading, reading)
  reading = jnp.where(dropout, jnp.nan, reading)

  next_state = SimState(
      t=state.t + 1,
      temperature_c=phys.temperature_c,
      job_steps_left=ex.job_steps_left,
      job_pe=ex.job_pe,
      job_buffer=ex.job_buffer,
      burst_steps_left=ex.burst_steps_left,
      window_energy_j=phys.window_energy_j,
      stuck_steps_left=stuck_left,
      held_reading=jnp.where(stuck, state.held_reading, true),
      heat_steps_left=ex.heat_steps_left,
      saver_steps_left=ex.saver_steps_left,
      modes=jnp.argmax(probs, axis=-1).astype(jnp.int32),
  )
  metrics = Metrics(
      power_w=reading[0],
      power_cap_w=phys.power_cap_w,
      buffer_occupancy=reading[2],
      pe_availability=reading[3],
      latency_s=latency_s,
      deadline_s=ex.deadline_s,
      temperature_c=reading[1],
      energy_j=phys.energy_j,
      sensor_ok=~jnp.any(dropout | spike | stuck),
      true_power_w=power_w,
      true_buffer_occupancy=occupancy,
      true_pe_availability=ex.pe_availability,
      true_temperature_c=phys.temperature_c,
      clock_scale=clock,
      free_buffer_bytes=ex.free_buffer_bytes,
      dram_bytes=c.dram_bytes,
  )
  return next_state, metrics


def _anonymous(params: ScenarioParams) -> ScenarioParams:
  """The params without their (static) name, so every scenario shares one compilation."""
  return params.replace(name="")


def rollout(
    params: ScenarioParams, init: SimState, assignment, key: jax.Array, n_steps: int
) -> tuple[SimState, Metrics]:
  """Runs ``n_steps`` steps in one jitted ``lax.scan``.

  Args:
    params, init: the scenario and its starting state (``init_state(params)``).
    assignment: one assignment for every step (``[n_ops]`` int modes or ``[n_ops,
      n_modes]`` probabilities) or one per step (``[n_steps, n_ops]`` or ``[n_steps,
      n_ops, n_modes]``).
    key: split into one key per step (``jax.random.split(key, n_steps)``), so a Python
      loop of ``step`` with those keys gives the same trace.
    n_steps: episode length (static).

  Returns:
    ``(final_state, metrics)`` with every metric stacked along a leading step axis.
  """
  return _rollout(_anonymous(params), init, jnp.asarray(assignment), key, n_steps)


@functools.partial(jax.jit, static_argnames=("n_steps",))
def _rollout(
    params: ScenarioParams, init: SimState, a: jax.Array, key: jax.Array, n_steps: int
) -> tuple[SimState, Metrics]:
  per_step = a.ndim == (2 if jnp.issubdtype(a.dtype, jnp.integer) else 3)
  keys = jax.random.split(key, n_steps)

  def body(s, xs):
    k, a_t = xs
    return step(s, a if a_t is None else a_t, k, params)

  return jax.lax.scan(body, init, (keys, a if per_step else None))


def summarize(metrics: Metrics) -> dict[str, float]:
  """Headline numbers of a trace (ground truth, not sensor readings).

  Example:
    >>> import jax
    >>> from aprec import hardware
    >>> from aprec.hardware.fit import dot_op
    >>> from aprec.hardware.scenarios import scenario
    >>> params = scenario("steady", hardware.edge_npu(), [dot_op(64, 256, 256)])
    >>> _, m = rollout(params, init_state(params), [2], jax.random.key(0), n_steps=4)
    >>> summarize(m)["over_cap_frac"]
    0.0
  """
  m = jax.tree.map(np.asarray, metrics)
  return {
      "steps": int(m.latency_s.shape[0]),
      "over_cap_frac": float(np.mean(m.true_power_w > m.power_cap_w)),
      "deadline_miss_frac": float(np.mean(m.latency_s > m.deadline_s)),
      "mean_power_w": float(np.mean(m.true_power_w)),
      "energy_j": float(np.sum(m.energy_j)),
      "mean_latency_s": float(np.mean(m.latency_s)),
      "max_temperature_c": float(np.max(m.true_temperature_c)),
      "sensor_fault_frac": float(1.0 - np.mean(m.sensor_ok)),
  }
