"""Plans made ahead of time: a candidate set, a ``lookup`` policy and a ``Scheduled`` one.

``planned_candidates`` is the candidate set the hindsight yardsticks choose from: the
knapsack plans (``oracle.best_assignment``, the exact multiple-choice knapsack of
``aprec.planning``) on an idle chip for a ladder of (power cap, deadline) pairs spread
between two anchor modes, plus uniform modes, deduplicated.

``Lookup`` is the baseline an engineer writes first: the same plans precomputed for every
cell of a grid of readings (power cap × PE availability × deadline) and looked up at run
time. A reading is rounded *down* to its cell's lower edge (a plan for a lower cap, fewer
PEs or a tighter deadline still fits), readings below the grid use the first cell.

``Scheduled`` replays a fixed sequence of assignments (the hindsight sequence, or one
assignment for ``static*``) through the same loop every policy runs in.

Example:
  >>> import jax.numpy as jnp
  >>> policy = Scheduled()
  >>> state = policy.init(None, jnp.array([[5, 5], [6, 5], [6, 6]]))
  >>> state, a = policy(state, None, None); a.tolist()
  [6, 5]
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aprec.emulator.formats import mode_index
from aprec.hardware.cost import HardwareState, one_hot
from aprec.rpm.context import Context, idle_state, predict, tables
from aprec.rpm.oracle import best_assignment


def _uniform_power_latency(ctx: Context, mode: str) -> tuple[float, float]:
  t = tables(ctx, idle_state(ctx))
  p = predict(ctx, t, one_hot(jnp.full((ctx.n_ops,), mode_index(mode)), jnp.float32))
  return float(p.power_w), float(p.latency_s)


def planned_candidates(
    ctx: Context,
    anchors: tuple[str, str] = ("int8", "int4"),
    fractions=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.6),
    uniform: tuple[str, ...] = ("bf16", "fp8_e4m3", "int8", "int4"),
    states: tuple[tuple[float, float], ...] = ((1.0, 1.0),),
) -> np.ndarray:
  """``[K, n_ops]`` int32: a plan per fraction ``f`` of the way from the low anchor's
  (power, latency) to the high anchor's (both budgets at once), for each hardware state of
  ``states`` (``(PE share, free-buffer share)``; the default: an idle chip), then uniform
  modes; deduplicated, ordered by predicted Δloss.

  The anchors' budgets are always an idle chip's; a busier state prices the same budgets
  with fewer PEs or less buffer, so its plans are the ones that fit there (co-tenants).

  Example:
    >>> import numpy as np
    >>> from aprec import hardware
    >>> from aprec.hardware.fit import dot_op
    >>> from aprec.rpm.context import make_context
    >>> ctx = make_context([dot_op(64, 256, 256)], hardware.edge_npu(), np.zeros((1, 7)), 1e-3)
    >>> planned_candidates(ctx, fractions=(0.5,), uniform=("int4",)).shape
    (1, 1)
  """
  (p_hi, l_hi), (p_lo, l_lo) = (_uniform_power_latency(ctx, m) for m in anchors)
  plans = []
  for pe, buffer_share in states:
    buffer = jnp.float32(ctx.spec.buffer_bytes * buffer_share)
    t = tables(ctx, HardwareState(jnp.float32(pe), buffer, jnp.float32(1.0)))
    for f in fractions:
      cap = jnp.float32(p_lo + f * (p_hi - p_lo))
      deadline = jnp.float32(l_lo + f * (l_hi - l_lo))
      modes, feasible = best_assignment(ctx, t, cap, deadline, buffer)
      if bool(feasible):
        plans.append(np.asarray(modes, np.int32))
  plans += [np.full(ctx.n_ops, mode_index(m), np.int32) for m in uniform]
  plans = np.unique(np.stack(plans), axis=0)
  idx = np.arange(ctx.n_ops)[None]
  return plans[np.argsort(np.asarray(ctx.delta_loss)[idx, plans].sum(1), kind="stable")]


class LookupTable(NamedTuple):
  """Plans per cell: ``plans[cap_bin, pe_bin, deadline_bin]`` ``[n_ops]`` int32, and each
  axis's lower edges."""

  plans: jax.Array
  cap_edges_w: jax.Array
  pe_edges: jax.Array
  deadline_edges_s: jax.Array


def build_table(
    ctx: Context,
    cap_edges_w: np.ndarray,
    pe_edges: np.ndarray,
    deadline_edges_s: np.ndarray,
    *,
    margin: float = 0.02,
    grid: int = 128,
) -> LookupTable:
  """Plans for every cell at its lower edges (full buffer, full clock), least energy where
  nothing fits (as the oracle does).

  Example:
    >>> import numpy as np
    >>> from aprec import hardware
    >>> from aprec.hardware.fit import dot_op
    >>> from aprec.rpm.context import make_context
    >>> ctx = make_context([dot_op(64, 256, 256)], hardware.edge_npu(), np.zeros((1, 7)), 1e-3)
    >>> build_table(ctx, np.array([0.1, 1.0]), np.array([0.5, 1.0]), np.array([1e-3])).plans.shape
    (2, 2, 1, 1)
  """
  buffer = jnp.float32(ctx.spec.buffer_bytes)

  @jax.jit
  def plan(cap, pe, deadline):
    t = tables(ctx, HardwareState(pe, buffer, jnp.float32(1.0)))
    return best_assignment(ctx, t, cap, deadline, buffer, grid=grid, margin=margin)[0]

  c, p, d = np.meshgrid(cap_edges_w, pe_edges, deadline_edges_s, indexing="ij")
  flat = jax.lax.map(
      lambda x: plan(*x), tuple(jnp.asarray(v.ravel(), jnp.float32) for v in (c, p, d))
  )
  return LookupTable(
      plans=flat.reshape(*c.shape, ctx.n_ops),
      cap_edges_w=jnp.asarray(cap_edges_w, jnp.float32),
      pe_edges=jnp.asarray(pe_edges, jnp.float32),
      deadline_edges_s=jnp.asarray(deadline_edges_s, jnp.float32),
  )


def _bin(edges: jax.Array, reading) -> jax.Array:
  x = jnp.nan_to_num(jnp.asarray(reading, jnp.float32), nan=0.0)
  return jnp.clip(jnp.searchsorted(edges, x, side="right") - 1, 0, edges.shape[0] - 1)


class LookupState(NamedTuple):
  table: LookupTable
  assignment: jax.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class Lookup:
  """Looks the readings (cap, PE availability, deadline) up in a ``LookupTable``."""

  name: str = "lookup"
  reads_true_state: bool = False
  table: Any = dataclasses.field(default=None, compare=False, hash=False)

  def init(self, ctx: Any, assignment: jax.Array) -> LookupState:
    if self.table is None:
      raise ValueError("the lookup policy has no table; build one with lookup.build_table")
    return LookupState(self.table, jnp.asarray(assignment, jnp.int32))

  def __call__(self, state: LookupState, metrics: Any, key: jax.Array):
    t = state.table
    plan = t.plans[
        _bin(t.cap_edges_w, metrics.power_cap_w),
        _bin(t.pe_edges, metrics.pe_availability),
        _bin(t.deadline_edges_s, metrics.deadline_s),
    ]
    return LookupState(t, plan), plan


class ScheduledState(NamedTuple):
  t: jax.Array
  schedule: jax.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scheduled:
  """Runs ``schedule[t]`` at step ``t`` (``init`` takes the whole ``[T, n_ops]`` schedule;
  ``loop.run_episode`` runs its row 0 first, so pass that as the starting assignment and
  the schedule through ``with_schedule``)."""

  name: str = "scheduled"
  reads_true_state: bool = True  # it was planned knowing the future
  schedule: Any = dataclasses.field(default=None, compare=False, hash=False)

  def init(self, ctx: Any, assignment: jax.Array) -> ScheduledState:
    schedule = self.schedule if self.schedule is not None else assignment
    schedule = jnp.asarray(schedule, jnp.int32)
    if schedule.ndim == 1:
      schedule = schedule[None]
    return ScheduledState(jnp.int32(0), schedule)

  def __call__(self, state: ScheduledState, metrics: Any, key: Any):
    t = state.t + 1
    a = state.schedule[jnp.minimum(t, state.schedule.shape[0] - 1)]
    return ScheduledState(t, state.schedule), a
