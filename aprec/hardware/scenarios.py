"""Scenarios: ``ScenarioParams`` for the simulator, anchored to the model's own costs.

All are anchored to the model's uniform FP16 and INT8 costs so that pressure binds
at FP16 and is (mostly) met at INT8:

- ``steady``: nothing changes; FP16 meets the cap and the deadline.
- ``contention``: co-tenant jobs arrive (Bernoulli per step), each holding a random share
  of the PEs and of the buffer for a random number of steps.
- ``thermal``: temperature follows an RC model driven by the average power; above the
  limit the power cap drops to between the INT8 and FP16 power.
- ``battery``: an energy budget per window that shrinks window by window; the cap is the
  remaining budget over the remaining time of the window.
- ``burst``: request spikes tighten the deadline to between the INT8 and FP16 latency.

``STUDY_SCENARIOS`` swing the available power, PEs and deadline the way a phone's NPU sees
them, and charge every policy for switching (``dynamics.switch_cost``). They anchor to
``STUDY_REFERENCE`` = (INT8, INT4) by default: pressure binds between the two, so at times
some ops must drop to INT4 (on MiniLM-L6 uniform INT8 costs the task nothing and INT4 a
lot). Time is compressed: one step is one batch (~0.27 s for MiniLM-L6 on ``edge_npu``),
so events that last seconds to minutes on a phone last tens of steps here.

- ``thermal_swing``: the NNP shares the die with the CPU and GPU. A heat event (a game
  scene, a camera burst: Bernoulli 2 % per step, 40-120 steps) raises the temperature the
  die settles to by 20 C; above 85 C the governor lowers the NNP's power limit to 30 % of
  the way from the INT4 to the INT8 power, until the die cools below 85 C. Without an event
  uniform INT8 settles 5 C under the limit (ambient 35 C, RC time constant 20 steps).
- ``contention_swing``: a co-tenant model (a camera or audio pipeline) arrives with
  probability 2 % per step into one of two slots, holds 15-40 % of the PEs and 10-40 % of
  the buffer for 20-80 steps; request bursts (1 % per step, 10-30 steps) tighten the
  deadline to 70 % of the way from the INT4 to the INT8 latency.
- ``battery_saver``: the OS enters a power-saving mode (1 % per step, 50-150 steps) that
  lowers the NNP's power limit to 35 % of the way from the INT4 to the INT8 power.

Sensor faults come as presets (``FAULT_PRESETS``) or any ``simulator.FaultParams``.

Example:
  >>> from aprec import hardware
  >>> from aprec.hardware.fit import dot_op
  >>> params = scenario("thermal", hardware.edge_npu(), [dot_op(64, 256, 256)])
  >>> params.name, float(params.faults.stuck_prob)
  ('thermal', 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from aprec.emulator.formats import mode_index
from aprec.emulator.ops import Op
from aprec.hardware.cost import OpArrays, checked_cost, op_arrays
from aprec.hardware.simulator import FaultParams, ScenarioParams
from aprec.hardware.specs import NNPSpec, validate

FAULT_PRESETS = {
    "none": FaultParams(),
    "mild": FaultParams(dropout_prob=0.01, stuck_prob=0.002, spike_prob=0.005),
    "severe": FaultParams(dropout_prob=0.05, stuck_prob=0.005, spike_prob=0.03),
}


SCENARIOS = ("steady", "contention", "thermal", "battery", "burst")
STUDY_SCENARIOS = ("thermal_swing", "contention_swing", "battery_saver")
STUDY_REFERENCE = ("int8", "int4")


def scenario(
    name: str,
    spec: NNPSpec,
    ops: Sequence[Op] | OpArrays,
    *,
    faults: FaultParams | str = "none",
    reference_modes: tuple[str, str] | None = None,
    **overrides,
) -> ScenarioParams:
  """The named scenario, anchored to the costs of ``ops`` on ``spec``.

  The model's uniform ``reference_modes`` (high, low) costs on an idle chip anchor every
  threshold: the deadline is 1.5x the high-precision latency (one batch per deadline), caps
  sit between the two modes' average powers. ``reference_modes`` defaults to (FP16, INT8),
  and to ``STUDY_REFERENCE`` for ``STUDY_SCENARIOS``. ``overrides`` replace any field.

  Example:
    >>> from aprec import hardware
    >>> from aprec.hardware.fit import dot_op
    >>> scenario("burst", hardware.edge_npu(), [dot_op(64, 256, 256)]).name
    'burst'
  """
  if name not in SCENARIOS + STUDY_SCENARIOS:
    raise ValueError(
        f"unknown scenario {name!r}; known scenarios: {', '.join(SCENARIOS + STUDY_SCENARIOS)}"
    )
  if reference_modes is None:
    reference_modes = STUDY_REFERENCE if name in STUDY_SCENARIOS else ("fp16", "int8")
  if isinstance(faults, str):
    if faults not in FAULT_PRESETS:
      raise ValueError(
          f"unknown fault preset {faults!r}; known: {', '.join(FAULT_PRESETS)} "
          f"(or pass a FaultParams)"
      )
    faults = FAULT_PRESETS[faults]
  validate(spec)
  arrays = ops if isinstance(ops, OpArrays) else op_arrays(ops)
  hi, lo = (
      checked_cost(arrays, np.full(arrays.n_ops, mode_index(m), np.int32), spec)
      for m in reference_modes
  )
  latency_hi, latency_lo = float(hi.latency_s), float(lo.latency_s)
  period_s = 1.5 * latency_hi
  avg_power = (
      lambda c: (float(c.energy_j) + spec.static_power_w * (period_s - float(c.latency_s)))
      / period_s
  )
  power_hi, power_lo = avg_power(hi), avg_power(lo)
  between = lambda frac: power_lo + frac * (power_hi - power_lo)
  base = dict(
      name=name,
      spec=spec,
      ops=arrays,
      step_period_s=period_s,
      deadline_s=period_s,
      power_cap_w=1.15 * power_hi,
      faults=faults,
  )
  window = 50
  knobs = {
      "steady": {},
      "contention": dict(job_arrival_prob=0.03),
      # Steady-state temperature ambient + R * P crosses the limit between the two powers.
      "thermal": dict(
          thermal_resistance_c_per_w=60.0 / between(0.6),
          temp_limit_c=85.0,
          thermal_time_constant_s=30 * period_s,
          throttled_power_cap_w=between(0.4),
      ),
      "battery": dict(
          battery_window_steps=window,
          battery_budget_decay=0.85,
          battery_budget_j=power_hi * 1.1 * window * period_s,
          battery_min_budget_j=between(0.25) * window * period_s,
      ),
      "burst": dict(
          burst_start_prob=0.04, burst_deadline_s=latency_lo + 0.5 * (latency_hi - latency_lo)
      ),
      "thermal_swing": dict(
          ambient_c=35.0,
          initial_temperature_c=35.0,
          thermal_resistance_c_per_w=(85.0 - 5.0 - 35.0) / power_hi,
          thermal_time_constant_s=20 * period_s,
          temp_limit_c=85.0,
          throttled_power_cap_w=between(0.3),
          heat_event_prob=0.02,
          heat_steps_range=(40, 120),
          heat_event_c=20.0,
          switch_cost_scale=1.0,
      ),
      "contention_swing": dict(
          job_arrival_prob=0.02,
          job_pe_range=(0.15, 0.4),
          job_buffer_range=(0.1, 0.4),
          job_steps_range=(20, 80),
          burst_start_prob=0.01,
          burst_steps_range=(10, 30),
          burst_deadline_s=latency_lo + 0.7 * (latency_hi - latency_lo),
          switch_cost_scale=1.0,
      ),
      "battery_saver": dict(
          saver_start_prob=0.01,
          saver_steps_range=(50, 150),
          saver_power_cap_w=between(0.35),
          switch_cost_scale=1.0,
      ),
  }[name]
  fields = {**base, **knobs, **overrides}
  unknown = set(fields) - set(ScenarioParams.__dataclass_fields__)
  if unknown:
    raise ValueError(
        f"unknown scenario settings {sorted(unknown)}; settable: "
        f"{sorted(ScenarioParams.__dataclass_fields__)}"
    )
  # Uniform leaf types (strong float32/int32 arrays), so every scenario and override
  # reuses one compiled rollout.
  params = ScenarioParams(**fields)
  return params.replace(
      **{
          k: jax.tree.map(_leaf, getattr(params, k))
          for k in ScenarioParams.__dataclass_fields__
          if k not in ("name", "max_jobs", "spec", "ops")
      }
  )


def _leaf(x) -> jax.Array:
  integer = isinstance(x, (int, np.integer)) or (
      hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.integer)
  )
  return jnp.asarray(x, jnp.int32 if integer else jnp.float32)
