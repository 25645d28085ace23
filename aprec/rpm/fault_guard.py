"""The sensor-fault guard: a wrapper that makes any deployable policy fall back on faults.

``guard(policy)`` is itself a ``Policy`` (the shape of optax's ``apply_if_finite``): each
step it asks the wrapped policy for the next assignment, then checks the readings. On a
fault it runs ``safe_mode`` everywhere for the next step instead, and keeps the wrapped
policy's state as it was (a faulty reading never enters it). Faults:

- an *implausible* reading (``observe.plausible``): NaN or infinite, out of physical
  range, a spike, or power below half the chip's static power (a chip that runs draws at
  least its static power, so a reading of ~0 W is a dead or stuck sensor);
- a *stuck* power sensor: the reading is bit-for-bit the previous one although what ran
  changed enough that the cost model predicts a different power (by more than
  ``MOVE_RTOL``). It stays judged stuck, and the guard keeps falling back, until the
  reading moves again. A healthy reading may well be constant (``steady``: nothing
  changes, so neither does the power); only a reading that ignores a change the cost
  model predicts counts.

What the guard cannot see: a sensor stuck at a plausible value while the policy never
changes the assignment (nothing predicts a move). Each fallback is logged per step in
``Trace.fallback`` (and ``Trace.stuck_sensor`` when the stuck rule caused it).

Example:
  >>> from aprec.rpm.greedy import Greedy
  >>> g = guard(Greedy())
  >>> g.name, g.reads_true_state
  ('greedy', False)
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from aprec.emulator.formats import mode_index
from aprec.rpm.context import Context
from aprec.rpm.observe import expected_power_w, plausible
from aprec.rpm.policy import Policy, PolicyState
from aprec.typing import Array, Modes

MOVE_RTOL = 0.01  # a predicted power change this large must show in a healthy reading
MIN_POWER_OVER_STATIC = 0.5  # readings below this share of static power are impossible


class GuardState(NamedTuple):
  """The wrapped policy's state and what the guard remembers of the last reading.

  Attributes:
    ran: what the step whose metrics arrive next runs.
    last_power_w: the previous power reading; ``last_expected_w``: the power the cost
      model expected for what ran then.
    stuck: the power sensor is judged stuck.
    fell_back: the next step runs the safe assignment.
  """

  ctx: Context
  inner: PolicyState
  ran: Modes
  last_power_w: Array
  last_expected_w: Array
  stuck: Array
  fell_back: Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class Guarded:
  """``policy`` behind the sensor-fault guard (see module doc); build with ``guard``."""

  policy: Policy
  safe_mode: str = "int8"

  @property
  def name(self) -> str:
    return self.policy.name

  @property
  def reads_true_state(self) -> bool:
    return self.policy.reads_true_state

  def init(self, ctx: Context, assignment: Modes) -> GuardState:
    nan = jnp.float32(jnp.nan)
    return GuardState(
        ctx,
        self.policy.init(ctx, assignment),
        jnp.asarray(assignment, jnp.int32),
        nan,
        nan,
        jnp.bool_(False),
        jnp.bool_(False),
    )

  def __call__(self, state: GuardState, metrics: Any, key: Array) -> tuple[GuardState, Modes]:
    ctx = state.ctx
    inner, proposal = self.policy(state.inner, metrics, key)
    expected = expected_power_w(ctx, state.ran)
    power = jnp.asarray(metrics.power_w, jnp.float32)
    ok = plausible(
        power,
        metrics.power_cap_w,
        metrics.buffer_occupancy,
        metrics.pe_availability,
        metrics.temperature_c,
        expected,
        min_power_w=MIN_POWER_OVER_STATIC * ctx.spec.static_power_w,
    )
    predicted_move = jnp.abs(expected - state.last_expected_w) > MOVE_RTOL * jnp.maximum(
        expected, state.last_expected_w
    )
    stuck = (power == state.last_power_w) & (state.stuck | predicted_move)
    fault = ~ok | stuck
    inner = jax.tree.map(lambda new, old: jnp.where(fault, old, new), inner, state.inner)
    safe = jnp.full_like(proposal, mode_index(self.safe_mode))
    chosen = jnp.where(fault, safe, proposal).astype(jnp.int32)
    return GuardState(ctx, inner, chosen, power, expected, stuck, fault), chosen


def guard(policy: Policy, safe_mode: str = "int8") -> Guarded:
  """``policy`` falling back to ``safe_mode`` on every op after a faulty reading."""
  mode_index(safe_mode)  # unknown modes fail here, naming the known ones
  return Guarded(policy=policy, safe_mode=safe_mode)


def status(state: PolicyState) -> tuple[Array, Array]:
  """``(fell_back, stuck_sensor)`` of a policy state: whether the next step runs the safe
  assignment, and whether because of a stuck sensor (both False for unguarded policies)."""
  if isinstance(state, GuardState):
    return state.fell_back, state.stuck
  return jnp.bool_(False), jnp.bool_(False)
