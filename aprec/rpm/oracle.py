"""The ``oracle`` policy: the exact best assignment for the true current state (a yardstick).

Under the additive sensitivity model the best assignment minimises ``sum_i Δloss[i, m_i]``
subject to the cost model's constraints for the next step:

- latency ``sum_i L[i, m_i] <= deadline`` (and so within the batch period);
- power: with the batch done within the period, step power is
  ``(sum_i E_dyn[i, m_i] + P_static * period) / period``, so
  ``sum_i E_dyn[i, m_i] <= (cap - P_static) * period``;
- buffer: every op's working set fits in the free buffer (the peak is a max over ops, so
  this rules modes out op by op).

Both sums are rounded *up* to a grid of ``grid`` units per budget, so the answer is
exact on the grid and always feasible in the real constraints (it may give up a sliver of
budget, at most ``n_ops / grid`` of each). ``aprec.planning.knapsack.solve`` does the DP. Exact
ties in Δloss (a noisy profile clipped at 0 for several modes) go to the mode with more
bits. The
oracle reads the ground truth of the step just run (``true_pe_availability``,
``free_buffer_bytes``, ``clock_scale``) — not deployable — and, like every policy, cannot
see what the next step brings. When nothing fits it runs the least-energy assignment.

Example:
  >>> Oracle().name
  'oracle'
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from aprec.hardware.cost import HardwareState
from aprec.emulator.formats import MODE_BITS
from aprec.rpm.context import Context, Tables, tables
from aprec.planning import knapsack
from aprec.rpm.observe import true_state

TIE_BREAK = 1e-7  # far below any profile entry that means something (~1e-4 and up)


class OracleState(NamedTuple):
  ctx: Context
  assignment: jax.Array


def best_assignment(
    ctx: Context,
    t: Tables,
    power_cap_w: jax.Array,
    deadline_s: jax.Array,
    free_buffer_bytes: jax.Array,
    *,
    grid: int = 128,
    margin: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
  """``(assignment, feasible)``: least Δloss within cap, deadline and buffer (module doc)."""
  period = ctx.step_period_s
  static = jnp.asarray(ctx.spec.static_power_w, jnp.float32)
  latency_budget = jnp.minimum(deadline_s, period) * (1.0 - margin)
  energy_budget = (power_cap_w * (1.0 - margin) - static) * period

  def units(x, budget):
    u = jnp.ceil(x / jnp.maximum(budget, 1e-30) * grid)
    return jnp.where(budget > 0, jnp.clip(u, 0, grid + 1), grid + 1).astype(jnp.int32)

  ca = units(t.latency_s, latency_budget)
  cb = units(jnp.maximum(t.dynamic_energy_j, 0.0), energy_budget)
  allowed = t.working_set_bytes <= free_buffer_bytes * (1.0 - margin)
  # Exact ties (a profile clipped at 0 for several modes) go to the mode with more bits.
  tie_break = TIE_BREAK * (1.0 - jnp.asarray(MODE_BITS, jnp.float32) / 32.0)[None, :]
  modes, feasible = knapsack.solve(
      ctx.delta_loss + tie_break,
      jnp.stack([ca, cb]),
      jnp.array([grid, grid]),
      grid=(grid, grid),
      allowed=allowed,
  )
  cheapest = jnp.argmin(t.dynamic_energy_j, axis=1).astype(jnp.int32)
  return jnp.where(feasible, modes, cheapest), feasible


@dataclasses.dataclass(frozen=True, kw_only=True)
class Oracle:
  """Exact per-step optimum under the true state (see module doc)."""

  grid: int = 128
  margin: float = 0.0
  name: str = "oracle"
  reads_true_state: bool = True

  def init(self, ctx: Context, assignment: jax.Array) -> OracleState:
    return OracleState(ctx, jnp.asarray(assignment, jnp.int32))

  def __call__(
      self, state: OracleState, metrics: Any, key: jax.Array
  ) -> tuple[OracleState, jax.Array]:
    ctx = state.ctx
    hw: HardwareState = true_state(metrics)
    t = tables(ctx, hw)
    modes, _ = best_assignment(
        ctx,
        t,
        jnp.asarray(metrics.power_cap_w, jnp.float32),
        jnp.asarray(metrics.deadline_s, jnp.float32),
        hw.free_buffer_bytes,
        grid=self.grid,
        margin=self.margin,
    )
    return OracleState(ctx, modes), modes
