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


def scenario(
    name: str,
    spec: NNPSpec,
    ops: Sequence[Op] | OpArrays,
    *,
    faults: FaultParams | str = "none",
    reference_modes: tuple[str, str] = ("fp16", "int8"),
    **overrides,
) -> ScenarioParams:
  """The named scenario, anchored to the costs of ``ops`` on ``spec``.

  The model's uniform ``reference_modes`` (high, low) costs on an idle chip anchor every
  threshold: the deadline is 1.5x the high-precision latency (one batch per deadline), caps
  sit between the two modes' average powers. ``overrides`` replace any field.

  Example:
    >>> from aprec import hardware
    >>> from aprec.hardware.fit import dot_op
    >>> scenario("burst", hardware.edge_npu(), [dot_op(64, 256, 256)]).name
    'burst'
  """
  if name not in SCENARIOS:
    raise ValueError(f"unknown scenario {name!r}; known scenarios: {', '.join(SCENARIOS)}")
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
