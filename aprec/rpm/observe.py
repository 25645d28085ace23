"""What a deployable policy may read, checked: sensor faults detected, hardware state estimated.

Policies read only the sensor readings and the job's own measurements in ``Metrics``
(``power_w``, ``power_cap_w``, ``buffer_occupancy``, ``pe_availability``, ``latency_s``,
``deadline_s``, ``temperature_c``), never the ``true_*`` ground truth or ``sensor_ok``.

A reading is *implausible* (a fault) when any sensor is NaN or infinite, or when it is
outside what the hardware can produce: power above ``3x`` the cap, occupancy above 2.5
(a spiked reading; real occupancy above 1 means spilling, never 2.5x the buffer), PE
availability outside [0, 1], temperature above 150 C. ``plausible`` takes the cap as
``max(power_cap_w, expected_power_w)`` where the RPM passes the power its cost model expects
for what ran, so a cap that a battery drains to nearly nothing does not make every honest
reading look wrong; with ``min_power_w`` (the guard passes half the chip's static power) a
reading no running chip can produce is implausible too. Spikes of 5x (the simulator's)
trip one of these. A stuck sensor is not harmless: stuck at a low power it hides every
over-cap step from a threshold policy (greedy's steps over the cap rise from 1-3 % to
74-87 % under ``thermal`` with the power sensor stuck for the whole run).
``aprec.rpm.fault_guard`` detects it (a reading below static power, or one that does not
move when the cost model predicts it must) and falls back to the safe assignment.

Example:
  >>> import jax.numpy as jnp
  >>> bool(plausible(jnp.nan, 1.0, 0.5, 1.0, 40.0))
  False
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from aprec.hardware.cost import HardwareState, one_hot
from aprec.rpm.context import Context, idle_state, predict, tables

MAX_POWER_OVER_CAP = 3.0
MAX_OCCUPANCY = 2.5
MAX_TEMPERATURE_C = 150.0


def plausible(
    power_w,
    power_cap_w,
    buffer_occupancy,
    pe_availability,
    temperature_c,
    expected_power_w=0.0,
    min_power_w=0.0,
) -> jax.Array:
  """True when every reading is finite and physically possible (see module doc).

  Example:
    >>> bool(plausible(1.0, 2.0, 0.5, 0.9, 40.0)), bool(plausible(9.0, 2.0, 0.5, 0.9, 40.0))
    (True, False)
  """
  readings = jnp.stack(
      [
          jnp.asarray(v, jnp.float32)
          for v in (power_w, power_cap_w, buffer_occupancy, pe_availability, temperature_c)
      ]
  )
  finite = jnp.all(jnp.isfinite(readings))
  power_w, power_cap_w, occupancy, pe, temp = (readings[i] for i in range(5))
  bound = MAX_POWER_OVER_CAP * jnp.maximum(power_cap_w, jnp.asarray(expected_power_w, jnp.float32))
  return (
      finite
      & (power_w >= jnp.asarray(min_power_w, jnp.float32))
      & (power_w >= 0)
      & (power_w <= bound)
      & (occupancy >= 0)
      & (occupancy <= MAX_OCCUPANCY)
      & (pe >= 0)
      & (pe <= 1.0)
      & (temp <= MAX_TEMPERATURE_C)
  )


def metrics_plausible(metrics, expected_power_w=0.0, min_power_w=0.0) -> jax.Array:
  """``plausible`` of a ``simulator.Metrics`` (works on stacked metrics too)."""
  shape = jnp.shape(metrics.power_w)
  expected = jnp.broadcast_to(jnp.asarray(expected_power_w, jnp.float32), shape)
  args = [
      jnp.atleast_1d(jnp.asarray(getattr(metrics, k)))
      for k in ("power_w", "power_cap_w", "buffer_occupancy", "pe_availability", "temperature_c")
  ]
  check = lambda *a: plausible(*a, min_power_w=min_power_w)
  return jax.vmap(check)(*args, jnp.atleast_1d(expected)).reshape(shape)


def expected_power_w(ctx: Context, modes: jax.Array) -> jax.Array:
  """Step power the cost model expects for ``modes`` on an idle chip."""
  return predict(ctx, tables(ctx, idle_state(ctx)), one_hot(modes, jnp.float32)).power_w


def estimate_state(ctx: Context, metrics, assignment_probs: jax.Array) -> HardwareState:
  """The hardware state the last step ran under, inferred from readings.

  PE availability is read directly; the free buffer is what the occupancy reading leaves
  after our own peak working set (known from the assignment that ran); the clock scale is
  the latency the cost model predicts at full clock over the latency measured.
  Unreadable values fall back to nominal.
  """
  buffer_bytes = jnp.asarray(ctx.spec.buffer_bytes, jnp.float32)
  pe = jnp.clip(
      jnp.nan_to_num(jnp.asarray(metrics.pe_availability, jnp.float32), nan=1.0), 1e-3, 1.0
  )
  nominal = HardwareState(pe, buffer_bytes, jnp.float32(1.0))
  t = tables(ctx, nominal)
  own_peak = predict(ctx, t, assignment_probs).peak_bytes
  occupancy = jnp.nan_to_num(jnp.asarray(metrics.buffer_occupancy, jnp.float32), nan=0.0)
  free = jnp.clip(buffer_bytes * (1.0 - occupancy) + own_peak, 0.0, buffer_bytes)
  at_full_clock = predict(
      ctx, tables(ctx, HardwareState(pe, free, jnp.float32(1.0))), assignment_probs
  ).latency_s
  measured = jnp.asarray(metrics.latency_s, jnp.float32)
  clock = jnp.where(
      jnp.isfinite(measured) & (measured > 0), jnp.clip(at_full_clock / measured, 0.05, 1.0), 1.0
  )
  return HardwareState(pe_availability=pe, free_buffer_bytes=free, clock_scale=clock)


def true_state(metrics) -> HardwareState:
  """The ground-truth state of a step (for the oracle, which is not deployable)."""
  return HardwareState(
      pe_availability=jnp.asarray(metrics.true_pe_availability, jnp.float32),
      free_buffer_bytes=jnp.asarray(metrics.free_buffer_bytes, jnp.float32),
      clock_scale=jnp.asarray(metrics.clock_scale, jnp.float32),
  )
