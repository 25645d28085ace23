"""The ``learned`` policy: a Flax network from readings and per-op features to mode logits.

Features (``features``), all computed from what a deployed RPM may read:

- global: power / cap, buffer occupancy, PE availability, latency / deadline, temperature
  / 100, the estimated clock scale and free-buffer fraction, cap over the model's idle fp16
  power, deadline over the batch period;
- per op: the profile's Δloss per mode (scaled), the op's latency, dynamic energy and
  working set per mode under the *estimated* state relative to the deadline, the energy
  budget and the free buffer, its MAC and byte shares, and its current mode (one-hot).

The network (``PolicyNet``) is permutation-equivariant over ops (shared per-op layers and
a mean-pooled summary), so one architecture fits any op table; logits come out
``[n_ops, n_modes]``. At run time the decision is the argmax, then ``repair`` lowers ops
one ladder step at a time (largest energy and latency saved per Δloss added) while the cost
model still predicts a violation under the estimated state: the hard decision respects
the constraints whenever any ladder assignment does.

Example:
  >>> net = PolicyNet()
  >>> Learned(net=net).name
  'learned'
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from aprec.hardware.cost import one_hot
from aprec.emulator.formats import N_MODES
from aprec.rpm.context import ON_LADDER, Context, Tables, idle_state, next_lower, predict, tables
from aprec.rpm.observe import estimate_state

DELTA_LOSS_SCALE = 100.0  # Δloss in centi-nats: the profile's entries are ~1e-4..1e-1
N_GLOBAL = 9
N_PER_OP = 5 * N_MODES + 2


class Features(NamedTuple):
  """Network inputs: ``globals [n_global]`` and ``per_op [n_ops, n_per_op]``."""

  globals: jax.Array
  per_op: jax.Array


class Limits(NamedTuple):
  """What the next step must meet, as the policy believes it."""

  power_cap_w: jax.Array
  deadline_s: jax.Array
  free_buffer_bytes: jax.Array


def finite_or(x, default) -> jax.Array:
  """``x`` as float32 with NaN and infinite entries replaced by ``default``."""
  x = jnp.asarray(x, jnp.float32)
  return jnp.where(jnp.isfinite(x), x, default)


def reading_features(metrics: Any, state, cap, deadline, buffer_bytes) -> list[jax.Array]:
  """The readings every learned policy sees, normalised (NaN readings as defaults): power /
  cap, buffer occupancy, PE availability, latency / deadline, temperature / 100, and the
  estimated clock scale and free-buffer fraction."""
  return [
      finite_or(metrics.power_w, 0.0) / cap,
      finite_or(metrics.buffer_occupancy, 0.0),
      finite_or(metrics.pe_availability, 1.0),
      finite_or(metrics.latency_s, 0.0) / deadline,
      finite_or(metrics.temperature_c, 25.0) / 100.0,
      state.clock_scale,
      state.free_buffer_bytes / buffer_bytes,
  ]


def features(ctx: Context, metrics: Any, modes: jax.Array) -> tuple[Features, Tables, Limits]:
  """Features of one step's readings with ``modes`` the assignment that ran."""
  probs = one_hot(modes, jnp.float32)
  state = estimate_state(ctx, metrics, probs)
  t = tables(ctx, state)
  cap = finite_or(metrics.power_cap_w, 1.0)
  deadline = finite_or(metrics.deadline_s, ctx.step_period_s)
  static = jnp.asarray(ctx.spec.static_power_w, jnp.float32)
  energy_budget = jnp.maximum((cap - static) * ctx.step_period_s, 1e-12)
  idle_fp16 = predict(
      ctx, tables(ctx, idle_state(ctx)), one_hot(jnp.full((ctx.n_ops,), 2), jnp.float32)
  ).power_w
  buffer_bytes = jnp.asarray(ctx.spec.buffer_bytes, jnp.float32)
  readings = reading_features(metrics, state, cap, deadline, buffer_bytes)
  g = jnp.stack([*readings, cap / idle_fp16, deadline / ctx.step_period_s])
  squash = lambda x: jnp.log1p(jnp.clip(x, 0.0, 1e3))
  per_op = jnp.concatenate(
      [
          squash(ctx.delta_loss * DELTA_LOSS_SCALE),
          squash(t.latency_s / deadline * ctx.n_ops),
          squash(t.dynamic_energy_j / energy_budget * ctx.n_ops),
          squash(t.working_set_bytes / jnp.maximum(state.free_buffer_bytes, 1.0)),
          ctx.macs_share[:, None],
          ctx.bytes_share[:, None],
          probs,
      ],
      axis=1,
  )
  return (
      Features(jnp.clip(g, -10.0, 10.0), per_op),
      t,
      Limits(cap, deadline, state.free_buffer_bytes),
  )


def pooled_mlp(hidden: int, rows: jax.Array, globals_: jax.Array) -> jax.Array:
  """``[n, hidden]`` features of a set of ``rows`` ``[n, k]``: a shared MLP over each row with
  the ``globals_`` appended, then one more layer over each row and the set's mean, so the
  result is permutation-equivariant over rows. Called inside a linen ``nn.compact`` method
  (its three ``Dense`` layers are that module's ``Dense_0..2``)."""
  g = jnp.broadcast_to(globals_[None, :], (rows.shape[0], globals_.shape[0]))
  h = nn.gelu(nn.Dense(hidden)(jnp.concatenate([rows, g], axis=1)))
  h = nn.gelu(nn.Dense(hidden)(h))
  pooled = jnp.broadcast_to(jnp.mean(h, axis=0, keepdims=True), h.shape)
  return nn.gelu(nn.Dense(hidden)(jnp.concatenate([h, pooled], axis=1)))


class PolicyNet(nn.Module):
  """Per-op MLP with a mean-pooled summary of all ops → ``[n_ops, n_modes]`` logits."""

  hidden: int = 64

  @nn.compact
  def __call__(self, f: Features) -> jax.Array:
    h = pooled_mlp(self.hidden, f.per_op, f.globals)  # Dense_0..2, then the head: Dense_3
    logits = nn.Dense(N_MODES)(h)
    return jnp.where(jnp.asarray(ON_LADDER)[None, :], logits, -1e9)


def violation(
    ctx: Context, t: Tables, limits: Limits, modes: jax.Array, margin: float
) -> jax.Array:
  """Whether the cost model predicts ``modes`` breaks cap, deadline or buffer (with margin)."""
  p = predict(ctx, t, one_hot(modes, jnp.float32))
  return (
      (p.power_w > limits.power_cap_w * (1.0 - margin))
      | (p.latency_s > limits.deadline_s * (1.0 - margin))
      | (p.peak_bytes > limits.free_buffer_bytes)
  )


def repair(ctx: Context, t: Tables, limits: Limits, modes: jax.Array, margin: float) -> jax.Array:
  """Lowers ops one ladder step at a time until no violation is predicted (or all are int4)."""
  idx = jnp.arange(ctx.n_ops)
  energy_budget = jnp.maximum(
      (limits.power_cap_w - ctx.spec.static_power_w) * ctx.step_period_s, 1e-12
  )

  def cond(m):
    return violation(ctx, t, limits, m, margin) & jnp.any(next_lower(m) != m)

  def body(m):
    lower = next_lower(m)
    saved = (
        (t.dynamic_energy_j[idx, m] - t.dynamic_energy_j[idx, lower]) / energy_budget
        + (t.latency_s[idx, m] - t.latency_s[idx, lower]) / limits.deadline_s
        + (t.working_set_bytes[idx, m] - t.working_set_bytes[idx, lower])
        / jnp.maximum(limits.free_buffer_bytes, 1.0)
    )
    added = jnp.maximum(ctx.delta_loss[idx, lower] - ctx.delta_loss[idx, m], 0.0)
    score = jnp.where(lower != m, saved / (added + 1e-6), -jnp.inf)
    op = jnp.argmax(score)
    return jnp.where(idx == op, lower, m)

  return jax.lax.while_loop(cond, body, modes)


class LearnedState(NamedTuple):
  ctx: Context
  params: Any
  assignment: jax.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class Learned:
  """The trained network's argmax, then ``repair`` (see module doc)."""

  net: PolicyNet = PolicyNet()
  margin: float = 0.05
  use_repair: bool = True
  name: str = "learned"
  reads_true_state: bool = False
  params: Any = dataclasses.field(default=None, compare=False, hash=False)

  def init(self, ctx: Context, assignment: jax.Array) -> LearnedState:
    if self.params is None:
      raise ValueError(
          "the learned policy has no parameters; train one (aprec.rpm.train) or "
          "load a checkpoint (aprec.rpm.policy_io.load)"
      )
    return LearnedState(ctx, self.params, jnp.asarray(assignment, jnp.int32))

  def decide(self, ctx: Context, params: Any, metrics: Any, modes: jax.Array) -> jax.Array:
    f, t, limits = features(ctx, metrics, modes)
    new = jnp.argmax(self.net.apply(params, f), axis=-1).astype(jnp.int32)
    if self.use_repair:
      new = repair(ctx, t, limits, new, self.margin)
    return new

  def __call__(
      self, state: LearnedState, metrics: Any, key: jax.Array
  ) -> tuple[LearnedState, jax.Array]:
    new = self.decide(state.ctx, state.params, metrics, state.assignment)
    return LearnedState(state.ctx, state.params, new), new
