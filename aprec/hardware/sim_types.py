"""The simulator's types: scenario settings, carried state and one step's readings.

``ScenarioParams`` is a pytree every scenario fills (``aprec.hardware.scenarios``);
``SimState`` is what ``aprec.hardware.simulator.step`` carries from step to step.

Example:
  >>> from aprec import hardware
  >>> from aprec.hardware.fit import dot_op
  >>> from aprec.hardware.scenarios import scenario
  >>> init_state(scenario("steady", hardware.edge_npu(), [dot_op(8, 16, 4)])).modes.tolist()
  [-1]
"""

from __future__ import annotations

from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from aprec.hardware.cost import OpArrays
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
  # SoC heat: other blocks of the chip (CPU, GPU, modem) heat the die the NNP shares
  heat_event_prob: float = 0.0
  heat_steps_range: tuple[int, int] = (20, 80)
  heat_event_c: float = 0.0  # rise of the temperature the die settles to, while active
  # battery saver: the OS lowers the NNP's power limit for a while
  saver_start_prob: float = 0.0
  saver_steps_range: tuple[int, int] = (30, 120)
  saver_power_cap_w: float = 0.0
  # switching: a changed op reloads its weights in the new format (``switch_cost``)
  switch_cost_scale: float = 0.0
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
  heat_steps_left: jax.Array
  saver_steps_left: jax.Array
  modes: jax.Array  # [n_ops] int32 what the last step ran; -1: nothing yet (no switch cost)


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
      heat_steps_left=jnp.int32(0),
      saver_steps_left=jnp.int32(0),
      modes=jnp.full((params.ops.n_ops,), -1, jnp.int32),
  )
