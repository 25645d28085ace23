"""The simulator's physics, split so the hindsight planner can reuse it on grids of states.

``exogenous`` advances what no policy influences (co-tenant jobs, request bursts, SoC heat
events, battery-saver episodes); ``switch_cost`` prices a change of assignment; ``advance``
turns a step's latency and energy into power, power cap, temperature and battery use.
``aprec.hardware.simulator.step`` is these three around the cost model.

Example:
  >>> import jax
  >>> from aprec import hardware
  >>> from aprec.hardware.fit import dot_op
  >>> from aprec.hardware.scenarios import scenario
  >>> from aprec.hardware.sim_types import init_state
  >>> params = scenario("contention", hardware.edge_npu(), [dot_op(8, 16, 4)])
  >>> float(exogenous(init_state(params), jax.random.key(0), params).pe_availability)
  1.0
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from aprec.hardware.cost import _tensor_bytes, one_hot
from aprec.hardware.sim_types import N_UNIFORMS, ScenarioParams, SimState


def _range(u: jax.Array, lo_hi, integer: bool = False) -> jax.Array:
  lo, hi = lo_hi
  if integer:
    return (lo + jnp.floor(u * (hi - lo + 1))).astype(jnp.int32)
  return lo + u * (hi - lo)


class Exogenous(NamedTuple):
  """What one step brings whatever the policy does: co-tenants, bursts, SoC heat, saver."""

  job_steps_left: jax.Array
  job_pe: jax.Array
  job_buffer: jax.Array
  pe_availability: jax.Array
  free_buffer_bytes: jax.Array
  burst_steps_left: jax.Array
  deadline_s: jax.Array
  heat_steps_left: jax.Array
  saver_steps_left: jax.Array


def _episode_left(left, start_u, prob, length_u, lo_hi):
  left = jnp.maximum(left - 1, 0)
  return jnp.where((start_u < prob) & (left == 0), _range(length_u, lo_hi, True), left)


def exogenous(state: SimState, key: jax.Array, params: ScenarioParams) -> Exogenous:
  """Advances the events no policy influences (they read only their own state and ``key``)."""
  dtype = params.ops.macs.dtype
  u = jax.random.uniform(key, (N_UNIFORMS,), dtype)
  # A separate stream for the later events keeps the draws of the earlier ones unchanged.
  v = jax.random.uniform(jax.random.fold_in(key, 1), (4,), dtype)
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
  buffer_bytes = jnp.asarray(params.spec.buffer_bytes, dtype)
  free_buffer = buffer_bytes * jnp.clip(1.0 - jnp.sum(jnp.where(active, job_buffer, 0.0)), 0.0, 1.0)
  burst_left = _episode_left(
      state.burst_steps_left, u[4], params.burst_start_prob, u[5], params.burst_steps_range
  )
  deadline_s = jnp.where(
      burst_left > 0, jnp.asarray(params.burst_deadline_s, dtype), params.deadline_s
  ).astype(dtype)
  return Exogenous(
      job_steps_left=job_steps_left,
      job_pe=job_pe,
      job_buffer=job_buffer,
      pe_availability=pe_availability,
      free_buffer_bytes=free_buffer,
      burst_steps_left=burst_left,
      deadline_s=deadline_s,
      heat_steps_left=_episode_left(
          state.heat_steps_left, v[0], params.heat_event_prob, v[1], params.heat_steps_range
      ),
      saver_steps_left=_episode_left(
          state.saver_steps_left, v[2], params.saver_start_prob, v[3], params.saver_steps_range
      ),
  )


def clock_scale(params: ScenarioParams, temperature_c: jax.Array) -> jax.Array:
  """Thermal throttling acts on the temperature a step starts at."""
  hot = temperature_c > params.temp_limit_c
  return jnp.where(hot, params.throttled_clock_scale, 1.0).astype(params.ops.macs.dtype)


def switch_cost(
    params: ScenarioParams, prev_modes: jax.Array, probs: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """``(latency_s, energy_j)`` of switching from ``prev_modes`` to ``probs``.

  Every op whose mode changes reloads its weights in the new format from DRAM (bytes over
  the DRAM bandwidth, DRAM and DMA-conversion energy per byte, static power meanwhile) and
  pays one op overhead to reprogram its descriptor; ``prev_modes`` of ``-1`` (nothing ran
  yet) and ``switch_cost_scale = 0`` cost nothing. Every policy pays the same rule.
  """
  spec, dtype = params.spec, probs.dtype
  f = lambda x: jnp.asarray(x, dtype)
  weight_b = _tensor_bytes(params.ops, dtype)[0]  # [n_ops, n_modes]
  stay = jnp.sum(probs * one_hot(jnp.maximum(prev_modes, 0), dtype), axis=-1)
  changed = jnp.where(prev_modes >= 0, 1.0 - stay, 0.0)
  loaded_b = jnp.sum(changed * jnp.sum(probs * weight_b, axis=-1))
  latency = f(params.switch_cost_scale) * (
      loaded_b / f(spec.dram_bandwidth_bytes_per_s) + jnp.sum(changed) * f(spec.op_overhead_s)
  )
  energy = (
      f(params.switch_cost_scale)
      * loaded_b
      * (f(spec.dram_energy_per_byte_j) + f(spec.dma_conversion_energy_per_byte_j))
      + f(spec.static_power_w) * latency
  )
  return latency, energy


class Physics(NamedTuple):
  """The step's policy-dependent outcome (``advance``)."""

  duration_s: jax.Array
  energy_j: jax.Array
  power_w: jax.Array
  power_cap_w: jax.Array
  temperature_c: jax.Array  # at the end of the step
  window_energy_j: jax.Array  # energy used in the battery window, this step included


def advance(
    params: ScenarioParams,
    t: jax.Array,
    temperature_c: jax.Array,
    window_energy_j: jax.Array,
    ex: Exogenous,
    latency_s: jax.Array,
    energy_j: jax.Array,
) -> Physics:
  """Power, cap, temperature and battery of a step that ran ``latency_s``, ``energy_j`` (the
  batch and its switch) from ``temperature_c`` and ``window_energy_j``; pure and
  elementwise, so ``aprec.rpm.hindsight`` runs it over grids of states."""
  dtype = params.ops.macs.dtype
  f = lambda x: jnp.asarray(x, dtype)
  duration_s = jnp.maximum(f(params.step_period_s), latency_s)
  energy_j = energy_j + f(params.spec.static_power_w) * (duration_s - latency_s)
  power_w = energy_j / duration_s  # average over the step, idle time included

  hot = temperature_c > params.temp_limit_c
  throttled = jnp.where(
      params.throttled_power_cap_w > 0, params.throttled_power_cap_w, params.power_cap_w
  )
  power_cap_w = jnp.where(hot, f(throttled), f(params.power_cap_w))
  saver_cap = jnp.where(params.saver_power_cap_w > 0, params.saver_power_cap_w, jnp.inf)
  power_cap_w = jnp.where(ex.saver_steps_left > 0, jnp.minimum(power_cap_w, saver_cap), power_cap_w)
  # Battery: the cap is what is left of this window's budget over the time left in it.
  window = jnp.maximum(params.battery_window_steps, 1)
  phase = t % window
  used_j = jnp.where(phase == 0, 0.0, window_energy_j)
  decay = params.battery_budget_decay ** (t // window)
  budget_j = jnp.maximum(params.battery_budget_j * decay, params.battery_min_budget_j)
  battery_cap_w = jnp.maximum(budget_j - used_j, 0.0) / ((window - phase) * params.step_period_s)
  power_cap_w = jnp.where(
      params.battery_window_steps > 0, jnp.minimum(power_cap_w, battery_cap_w), power_cap_w
  )

  alpha = 1.0 - jnp.exp(-duration_s / f(params.thermal_time_constant_s))
  ambient_c = params.ambient_c + jnp.where(ex.heat_steps_left > 0, params.heat_event_c, 0.0)
  target_c = ambient_c + params.thermal_resistance_c_per_w * power_w
  return Physics(
      duration_s=duration_s,
      energy_j=energy_j,
      power_w=power_w,
      power_cap_w=power_cap_w.astype(dtype),
      temperature_c=(temperature_c + alpha * (target_c - temperature_c)).astype(dtype),
      window_energy_j=(used_j + energy_j).astype(dtype),
  )
