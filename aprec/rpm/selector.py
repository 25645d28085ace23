"""The ``selector`` policy: a Flax network that picks one of the planner's plans each step.

The per-op network (``aprec.rpm.learned``) must discover mixed assignments op by op; the
selector instead chooses among a *bank* of whole per-op plans made ahead of time by the
exact knapsack (``lookup.planned_candidates``: plans for a ladder of power and latency
budgets, so each one is already the least-Δloss assignment for its budget). What is left
to learn is the hard part of running them: which budget the *next* step can afford, from
lagged, noisy readings (a cap that is about to fall, a clock that throttles as the chip
heats, co-tenants holding PEs and buffer), and how far to trust the cost model.

Features, all from what a deployed RPM reads (``features``):

- per plan, under the state estimated from the readings (``observe.estimate_state``):
  predicted power / cap, latency / deadline, peak working set / free buffer, the largest
  of the three, predicted Δloss over the bank's largest, and whether it is the plan that
  ran;
- global: power / cap, buffer occupancy, PE availability, latency / deadline,
  temperature / 100, the estimated clock scale and free-buffer fraction, deadline over
  the batch period, and the measured over the predicted power of what ran (how far the
  cost model is off now: leakage grows with temperature).

``SelectorNet`` is permutation-equivariant over plans (shared per-plan layers and a
mean-pooled summary), so one trained network serves any bank and any model; the decision
is the argmax of its scores. Training: ``aprec.rpm.train_selector``.

Example:
  >>> Selector(net=SelectorNet(hidden=8)).name
  'learned'
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from aprec.hardware.cost import one_hot
from aprec.rpm.context import Context, Tables, predict, step_power_w, tables
from aprec.rpm.learned import finite_or, pooled_mlp, reading_features
from aprec.rpm.observe import estimate_state

N_GLOBAL = 9
N_PER_PLAN = 6


class PlanFeatures(NamedTuple):
  """Network inputs: ``globals [N_GLOBAL]`` and ``per_plan [n_plans, N_PER_PLAN]``."""

  globals: jax.Array
  per_plan: jax.Array


class PlanCosts(NamedTuple):
  """Every plan of a bank priced under one state, ``[n_plans]`` each."""

  power_w: jax.Array
  latency_s: jax.Array
  peak_bytes: jax.Array
  delta_loss: jax.Array


def plan_costs(ctx: Context, t: Tables, plans: jax.Array) -> PlanCosts:
  """Step power, latency, peak working set and Δloss of each plan ``[n_plans, n_ops]``.

  Equal to ``context.predict`` of each plan's one-hot assignment, by gathers and sums.

  Example:
    >>> import numpy as np
    >>> from aprec import hardware
    >>> from aprec.hardware.fit import dot_op
    >>> from aprec.rpm.context import idle_state, make_context
    >>> ctx = make_context([dot_op(8, 16, 4)] * 2, hardware.edge_npu(), np.ones((2, 7)), 1e-6)
    >>> t = tables(ctx, idle_state(ctx))
    >>> plan_costs(ctx, t, jnp.array([[0, 0], [5, 6]])).delta_loss.tolist()
    [2.0, 2.0]
  """
  idx = jnp.arange(ctx.n_ops)[None, :]
  latency = jnp.sum(t.latency_s[idx, plans], axis=1)
  return PlanCosts(
      power_w=step_power_w(ctx, jnp.sum(t.dynamic_energy_j[idx, plans], axis=1), latency),
      latency_s=latency,
      peak_bytes=jnp.max(t.working_set_bytes[idx, plans], axis=1),
      delta_loss=jnp.sum(ctx.delta_loss[idx, plans], axis=1),
  )


def features(ctx: Context, metrics: Any, ran: jax.Array, plans: jax.Array) -> PlanFeatures:
  """Features of one step's readings, ``ran`` the assignment that produced them."""
  probs = one_hot(ran, jnp.float32)
  state = estimate_state(ctx, metrics, probs)
  t = tables(ctx, state)
  costs = plan_costs(ctx, t, plans)
  cap = jnp.maximum(finite_or(metrics.power_cap_w, 1.0), 1e-3)
  deadline = jnp.maximum(finite_or(metrics.deadline_s, ctx.step_period_s), 1e-9)
  free = jnp.maximum(state.free_buffer_bytes, 1.0)
  buffer_bytes = jnp.asarray(ctx.spec.buffer_bytes, jnp.float32)
  predicted_now = predict(ctx, t, probs).power_w
  is_current = jnp.all(plans == ran[None, :], axis=1).astype(jnp.float32)
  ratios = jnp.stack([costs.power_w / cap, costs.latency_s / deadline, costs.peak_bytes / free])
  per_plan = jnp.stack(
      [
          *ratios,
          jnp.max(ratios, axis=0),
          costs.delta_loss / jnp.maximum(jnp.max(costs.delta_loss), 1e-12),
          is_current,
      ],
      axis=1,
  )
  measured_over_predicted = finite_or(metrics.power_w, predicted_now) / jnp.maximum(
      predicted_now, 1e-6
  )
  readings = reading_features(metrics, state, cap, deadline, buffer_bytes)
  g = jnp.stack([*readings, deadline / ctx.step_period_s, measured_over_predicted])
  return PlanFeatures(jnp.clip(g, -10.0, 10.0), jnp.clip(per_plan, -10.0, 10.0))


class SelectorNet(nn.Module):
  """Per-plan MLP with a mean-pooled summary of all plans → ``[n_plans]`` scores."""

  hidden: int = 64

  @nn.compact
  def __call__(self, f: PlanFeatures) -> jax.Array:
    h = pooled_mlp(self.hidden, f.per_plan, f.globals)  # Dense_0..2, then the head: Dense_3
    return nn.Dense(1)(h)[:, 0]


def example_features(n_plans: int) -> PlanFeatures:
  """Zero features of the right shapes (for ``init`` and checkpoint templates)."""
  return PlanFeatures(jnp.zeros(N_GLOBAL, jnp.float32), jnp.zeros((n_plans, N_PER_PLAN)))


class SelectorState(NamedTuple):
  ctx: Context
  params: Any
  plans: jax.Array
  assignment: jax.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class Selector:
  """The trained network's best-scoring plan of ``plans`` (see module doc)."""

  net: SelectorNet = SelectorNet()
  name: str = "learned"
  reads_true_state: bool = False
  params: Any = dataclasses.field(default=None, compare=False, hash=False)
  plans: Any = dataclasses.field(default=None, compare=False, hash=False)

  def init(self, ctx: Context, assignment: jax.Array) -> SelectorState:
    if self.params is None or self.plans is None:
      raise ValueError(
          "the selector needs trained parameters and a plan bank: train one "
          "(aprec.rpm.train_selector) or load it (aprec.rpm.policy_io.load), and pass "
          "plans=lookup.planned_candidates(ctx)"
      )
    plans = jnp.asarray(self.plans, jnp.int32)
    if plans.ndim != 2 or plans.shape[1] != ctx.n_ops or plans.shape[0] == 0:
      raise ValueError(f"plans have shape {plans.shape}; expected (n_plans >= 1, {ctx.n_ops})")
    return SelectorState(ctx, self.params, plans, jnp.asarray(assignment, jnp.int32))

  def decide(self, ctx: Context, params: Any, plans: jax.Array, metrics: Any, ran: jax.Array):
    scores = self.net.apply(params, features(ctx, metrics, ran, plans))
    return plans[jnp.argmax(scores)]

  def __call__(
      self, state: SelectorState, metrics: Any, key: jax.Array
  ) -> tuple[SelectorState, jax.Array]:
    new = self.decide(state.ctx, state.params, state.plans, metrics, state.assignment)
    return SelectorState(state.ctx, state.params, state.plans, new), new
