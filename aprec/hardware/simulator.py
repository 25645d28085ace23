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
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from aprec.hardware.cost import HardwareState, OpArrays, cost, one_hot
from aprec.hardware.specs import NNPSpec

SENSORS = ("power_w", "temperature_c", "buffer_occupancy", "pe_availability")
N_UNIFORMS = 6 + 3 * len(SENSORS)  # random numbers one step draws


@flax.struct.dataclass(kw_only=True)
class FaultParams:
  """Sensor faults, each an independent per-sensor, per-step event.

  Attributes:
    dropout_prob: the reading is NaN.
    stuck_prob: the sensor freezes at its last reading for ``stuck_steps`` steps.
    stuck_steps: length of a stuck episode.
    spike_prob: the reading is multiplied by ``spike_scale``.
    spike_scale: factor of a spike.
  """

  dropout_prob: float = 0.0
  stuck_prob: float = 0.0
  stuck_steps: int = 20
  spike_prob: float = 0.0
  spike_scale: float = 5.0


@flax.struct.dataclass(kw_only=True)
class ScenarioParams:
  """Everything a scenario fixes (a pytree; build with ``scenarios.scenario``).

  Times in seconds, powers in W, energies in J, temperatures in C; ``*_steps`` count steps.
  A knob at its neutral value (probability 0, throttled cap = cap, window 0) is off.
  """

  name: str = flax.struct.field(pytree_node=False)
  max_jobs: int = flax.struct.field(pytree_node=False, default=2)  # co-tenant slots
  spec: NNPSpec
  ops: OpArrays
  step_period_s: float  # a batch arrives every period; the chip idles the rest
  deadline_s: float
  power_cap_w: float
  # contention
  job_arrival_prob: float = 0.0
  job_pe_range: tuple[float, float] = (0.1, 0.4)
  job_buffer_range: tuple[float, float] = (0.1, 0.5)
  job_steps_range: tuple[int, int] = (10, 60)
  min_pe_availability: float = 0.05
  # thermal
  ambient_c: float = 25.0
  initial_temperature_c: float = 25.0
  thermal_resistance_c_per_w: float = 0.0
  thermal_time_constant_s: float = 1.0
  temp_limit_c: float = 85.0
  throttled_power_cap_w: float = 0.0  # cap above the limit; 0: same as power_cap_w
  throttled_clock_scale: float = 1.0
  # battery
  battery_window_steps: int = 0
  battery_budget_j: float = 0.0
  battery_budget_decay: float = 1.0
  battery_min_budget_j: float = 0.0
  # burst
  burst_start_prob: float = 0.0
  burst_steps_range: tuple[int, int] = (5, 20)
  burst_deadline_s: float = 0.0
  faults: FaultParams = FaultParams()


class SimState(NamedTuple):
  """The simulator's carried state."""

  t: jax.Array
  temperature_c: jax.Array
  job_steps_left: jax.Array  # [max_jobs] int32; 0 = free slot
  job_pe: jax.Array
  job_buffer: jax.Array
  burst_steps_left: jax.Array
  window_energy_j: jax.Array
  stuck_steps_left: jax.Array  # [n_sensors] int32
  held_reading: jax.Array  # [n_sensors] last reading, repeated by a stuck sensor


class Metrics(NamedTuple):
  """One step's readings. Units in the names; occupancy and availability are fractions."""

  power_w: jax.Array  # sensor reading (may be NaN / stuck / spiked)
  power_cap_w: jax.Array
  buffer_occupancy: jax.Array  # sensor: (co-tenant bytes + our peak working set) / buffer
  pe_availability: jax.Array  # sensor
  latency_s: jax.Array
  deadline_s: jax.Array
  temperature_c: jax.Array  # sensor
  energy_j: jax.Array
  sensor_ok: jax.Array  # ground truth: no sensor faulted this step (not for the policy)
  true_power_w: jax.Array
  true_buffer_occupancy: jax.Array
  true_pe_availability: jax.Array
  true_temperature_c: jax.Array
  clock_scale: jax.Array
  free_buffer_bytes: jax.Array
  dram_bytes: jax.Array


def init_state(params: ScenarioParams) -> SimState:
  """The state at step 0: no co-tenants, no burst, sensors healthy."""
  f = lambda x: jnp.asarray(x, params.ops.macs.dtype)
  zeros_i = lambda n: jnp.zeros((n,), jnp.int32)
  return SimState(
      t=jnp.int32(0),
      temperature_c=f(params.initial_temperature_c),
      job_steps_left=zeros_i(params.max_jobs),
      job_pe=jnp.zeros((params.max_jobs,), f(0).dtype),
      job_buffer=jnp.zeros((params.max_jobs,), f(0).dtype),
      burst_steps_left=jnp.int32(0),
      window_energy_j=f(0.0),
      stuck_steps_left=zeros_i(len(SENSORS)),
      held_reading=f(jnp.array([0.0, params.initial_temperature_c, 0.0, 1.0])),
  )


def _as_probs(assignment, n_ops: int, dtype) -> jax.Array:
  a = jnp.asarray(assignment)
  if jnp.issubdtype(a.dtype, jnp.integer):
    return one_hot(a, dtype)
  return a.astype(dtype)


def _range(u: jax.Array, lo_hi, integer: bool = False) -> jax.Array:
  lo, hi = lo_hi
  if integer:
    return (lo + jnp.floor(u * (hi - lo + 1))).astype(jnp.int32)
  return lo + u * (hi - lo)


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
  f = lambda x: jnp.asarray(x, dtype)
  probs = _as_probs(assignment, params.ops.n_ops, dtype)
  u = jax.random.uniform(key, (N_UNIFORMS,), dtype)
  u_fault = u[6:].reshape(3, len(SENSORS))

  # Co-tenant jobs: running ones count down, one may arrive into a free slot.
  left = jnp.maximum(state.job_steps_left - 1, 0)
  free_slot = jnp.argmin(left > 0)
  arrive = (u[0] < params.job_arrival_prob) & (left[free_slot] == 0)
  new = arrive & (jnp.arange(params.max_jobs) == free_slot)
  job_steps_left = jnp.where(new, _range(u[3], params.job_steps_range, True), left)
  job_pe = jnp.where(new, _range(u[1], params.job_pe_range), state.job_pe)
  job_buffer = jnp.where(new, _range(u[2], params.job_buffer_range), state.job_buffer)
  active = job_steps_left > 0
  pe_availability = jnp.clip(
      1.0 - jnp.sum(jnp.where(active, job_pe, 0.0)), params.min_pe_availability, 1.0
  )
  buffer_bytes = f(spec.buffer_bytes)
  free_buffer = buffer_bytes * jnp.clip(1.0 - jnp.sum(jnp.where(active, job_buffer, 0.0)), 0.0, 1.0)

  # Thermal throttling acts on the temperature the step starts at.
  hot = state.temperature_c > params.temp_limit_c
  clock_scale = jnp.where(hot, f(params.throttled_clock_scale), 1.0)
  c = cost(params.ops, probs, spec, HardwareState(pe_availability, free_buffer, clock_scale))
  duration_s = jnp.maximum(f(params.step_period_s), c.latency_s)
  energy_j = c.energy_j + f(spec.static_power_w) * (duration_s - c.latency_s)
  power_w = energy_j / duration_s  # average over the step, idle time included

  throttled = jnp.where(
      params.throttled_power_cap_w > 0, params.throttled_power_cap_w, params.power_cap_w
  )
  power_cap_w = jnp.where(hot, f(throttled), f(params.power_cap_w))
  # Battery: the cap is what is left of this window's budget over the time left in it.
  window = jnp.maximum(params.battery_window_steps, 1)
  phase = state.t % window
  used_j = jnp.where(phase == 0, 0.0, state.window_energy_j)
  decay = params.battery_budget_decay ** (state.t // window)
  budget_j = jnp.maximum(params.battery_budget_j * decay, params.battery_min_budget_j)
  battery_cap_w = jnp.maximum(budget_j - used_j, 0.0) / ((window - phase) * params.step_period_s)
  power_cap_w = jnp.where(
      params.battery_window_steps > 0, jnp.minimum(power_cap_w, battery_cap_w), power_cap_w
  )

  alpha = 1.0 - jnp.exp(-duration_s / f(params.thermal_time_constant_s))
  target_c = params.ambient_c + params.thermal_resistance_c_per_w * power_w
  temperature_c = state.temperature_c + alpha * (target_c - state.temperature_c)

  burst_left = jnp.maximum(state.burst_steps_left - 1, 0)
  burst_left = jnp.where(
      (u[4] < params.burst_start_prob) & (burst_left == 0),
      _range(u[5], params.burst_steps_range, True),
      burst_left,
  )
  deadline_s = jnp.where(burst_left > 0, f(params.burst_deadline_s), f(params.deadline_s))

  occupancy = (buffer_bytes - free_buffer + c.peak_buffer_bytes) / buffer_bytes
  true = jnp.stack([power_w, temperature_c, occupancy, pe_availability]).astype(dtype)
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
      temperature_c=temperature_c,
      job_steps_left=job_steps_left,
      job_pe=job_pe,
      job_buffer=job_buffer,
      burst_steps_left=burst_left,
      window_energy_j=used_j + energy_j,
      stuck_steps_left=stuck_left,
      held_reading=jnp.where(stuck, state.held_reading, true),
  )
  metrics = Metrics(
      power_w=reading[0],
      power_cap_w=power_cap_w,
      buffer_occupancy=reading[2],
      pe_availability=reading[3],
      latency_s=c.latency_s,
      deadline_s=deadline_s,
      temperature_c=reading[1],
      energy_j=energy_j,
      sensor_ok=~jnp.any(dropout | spike | stuck),
      true_power_w=power_w,
      true_buffer_occupancy=occupancy,
      true_pe_availability=pe_availability,
      true_temperature_c=temperature_c,
      clock_scale=clock_scale,
      free_buffer_bytes=free_buffer,
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
