"""The ``greedy`` policy: the seed's RPM rule, and ``greedy_restore`` with hysteresis.

The seed's loop, one iteration per step::

  if power > THRESHOLD or buffer_occupancy > THRESHOLD:
    operation = find_best_operation_to_reduce_precision(profile, metrics)
    if operation is not NULL:
      new = determine_next_lower_precision(operation.current_precision)
      if new != operation.current_precision: switch it

Here ``THRESHOLD`` for power is ``power_threshold * power_cap_w`` (the cap moves with
temperature and battery, so a fixed wattage would be wrong) and for the buffer a fraction of
its capacity. ``find_best_operation_to_reduce_precision`` takes "lowest sensitivity and
highest resource usage" as the largest ratio ``resource / (sensitivity + eps)`` among ops
that can still go lower, where ``resource`` is the op's share of MACs and fp32 bytes
(averaged) times its current bits / 32 and ``sensitivity`` is the profile's Δloss at the
next lower mode. ``determine_next_lower_precision`` steps down ``context.LADDER``.
Ties go to the lower op index. The seed's rule only ever lowers precision.

``greedy_restore`` (``restore=True``) adds the way back: after ``patience_steps``
consecutive calm steps (power under ``restore_power * cap`` and occupancy under
``restore_buffer``, both well under the lowering thresholds: hysteresis) it raises the op
with the largest Δloss saved per resource added by one ladder step, never above
``ceiling``, and starts counting calm steps again.

``greedy_deadline`` (``deadline_threshold`` set; with ``restore``) is the deadline-aware
variant: the seed lists latency among the monitored metrics, so a step slower than
``deadline_threshold * deadline`` counts as pressure too, and a calm step must also be
faster than ``restore_latency * deadline``. (The seed's rule never acts on latency, so
under contention, where co-tenants slow the chip but its power falls, it does nothing.)

Example:
  >>> import jax
  >>> Greedy(restore=True).name, Greedy(restore=True, deadline_threshold=0.95).name
  ('greedy_restore', 'greedy_deadline')
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from aprec.emulator.formats import MODE_BITS, mode_index
from aprec.rpm.context import LADDER_POS, Context, next_higher, next_lower

EPS = 1e-6


class GreedyState(NamedTuple):
  ctx: Context
  assignment: jax.Array
  calm_steps: jax.Array


def resource_use(ctx: Context, modes: jax.Array) -> jax.Array:
  """Each op's resource use in ``modes``: mean of its MAC and byte shares times bits / 32."""
  bits = jnp.asarray(MODE_BITS, jnp.float32)[modes] / 32.0
  return 0.5 * (ctx.macs_share + ctx.bytes_share) * bits


def best_op_to_lower(ctx: Context, modes: jax.Array) -> jax.Array:
  """The op to lower (``-1``: none can go lower): max ``resource / (sensitivity + eps)``."""
  lower = next_lower(modes)
  can = lower != modes
  sens = ctx.delta_loss[jnp.arange(ctx.n_ops), lower]
  score = jnp.where(can, resource_use(ctx, modes) / (sens + EPS), -jnp.inf)
  return jnp.where(jnp.any(can), jnp.argmax(score), -1)


def best_op_to_raise(ctx: Context, modes: jax.Array, ceiling: int) -> jax.Array:
  """The op to raise (``-1``: none): max Δloss saved per resource added, not above ``ceiling``."""
  higher = next_higher(modes)
  pos = jnp.asarray(LADDER_POS)
  can = (higher != modes) & (pos[higher] >= pos[ceiling])
  idx = jnp.arange(ctx.n_ops)
  saved = ctx.delta_loss[idx, modes] - ctx.delta_loss[idx, higher]
  added = resource_use(ctx, higher) - resource_use(ctx, modes)
  score = jnp.where(can, saved / (added + EPS), -jnp.inf)
  return jnp.where(jnp.any(can), jnp.argmax(score), -1)


def _set(modes: jax.Array, op: jax.Array, mode: jax.Array) -> jax.Array:
  return jnp.where((jnp.arange(modes.shape[0]) == op) & (op >= 0), mode, modes)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Greedy:
  """The seed's threshold rule (see module doc); ``restore=True`` for ``greedy_restore``."""

  power_threshold: float = 0.95
  buffer_threshold: float = 0.9
  restore: bool = False
  restore_power: float = 0.7
  restore_buffer: float = 0.6
  patience_steps: int = 10
  ceiling: str = "fp16"
  deadline_threshold: float | None = None
  restore_latency: float = 0.7
  reads_true_state: bool = False

  @property
  def name(self) -> str:
    if self.deadline_threshold is not None:
      return "greedy_deadline"
    return "greedy_restore" if self.restore else "greedy"

  def init(self, ctx: Context, assignment: jax.Array) -> GreedyState:
    return GreedyState(ctx, jnp.asarray(assignment, jnp.int32), jnp.int32(0))

  def __call__(
      self, state: GreedyState, metrics: Any, key: jax.Array
  ) -> tuple[GreedyState, jax.Array]:
    ctx, modes = state.ctx, state.assignment
    power, cap = metrics.power_w, metrics.power_cap_w
    occupancy = metrics.buffer_occupancy
    # NaN readings compare False: the seed's rule does nothing on them.
    pressure = (power > self.power_threshold * cap) | (occupancy > self.buffer_threshold)
    late = jnp.bool_(False)
    if self.deadline_threshold is not None:
      pressure |= metrics.latency_s > self.deadline_threshold * metrics.deadline_s
      late = ~(metrics.latency_s < self.restore_latency * metrics.deadline_s)
    op = best_op_to_lower(ctx, modes)
    lowered = _set(modes, op, next_lower(modes)[jnp.maximum(op, 0)])
    new = jnp.where(pressure, lowered, modes)
    calm_steps = state.calm_steps
    if self.restore:
      calm = (power < self.restore_power * cap) & (occupancy < self.restore_buffer) & ~late
      calm_steps = jnp.where(calm & ~pressure, calm_steps + 1, 0)
      up = best_op_to_raise(ctx, modes, mode_index(self.ceiling))
      raised = _set(modes, up, next_higher(modes)[jnp.maximum(up, 0)])
      go = calm_steps >= self.patience_steps
      new = jnp.where(go, raised, new)
      calm_steps = jnp.where(go, 0, calm_steps)
    return GreedyState(ctx, new, calm_steps.astype(jnp.int32)), new
