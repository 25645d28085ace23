"""What every RPM policy knows: the op table, the NNP, the profile, and the precision ladder.

A ``Context`` is a pytree of arrays fixed for a deployment (one model on one NNP in one
scenario's batch period). ``tables(ctx, state)`` prices every op in every mode under a
hardware state in one call; since an op's energy and latency in a mode do not depend on the
other ops' modes, every policy then scores whole assignments with gathers and sums.

The order of "lower precision" (``LADDER``) is by energy per MAC on the NNP:
fp32 → fp16 → bf16 → fp8_e4m3 → int8 → int4. fp8_e5m2 is left off the ladder: it costs
what fp8_e4m3 costs and keeps fewer mantissa bits, so a policy never gains by choosing it.

Example:
  >>> import numpy as np
  >>> from aprec.hardware.fit import dot_op
  >>> from aprec import hardware
  >>> ctx = make_context([dot_op(8, 16, 4)], hardware.edge_npu(), np.zeros((1, 7)),
  ...                    step_period_s=1e-6)
  >>> [MODES[m] for m in LADDER]
  ['fp32', 'fp16', 'bf16', 'fp8_e4m3', 'int8', 'int4']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aprec.hardware.cost import HardwareState, OpArrays, mode_tables, op_arrays
from aprec.emulator.formats import MODES, N_MODES, mode_index
from aprec.hardware.specs import NNPSpec
from aprec.emulator.ops import Op

LADDER: tuple[int, ...] = tuple(
    mode_index(m) for m in ("fp32", "fp16", "bf16", "fp8_e4m3", "int8", "int4")
)
# Position of every mode on the ladder (-1: off the ladder).
LADDER_POS = np.full(N_MODES, -1, np.int32)
LADDER_POS[list(LADDER)] = np.arange(len(LADDER))
_LOWER = np.array(
    [
        LADDER[min(LADDER_POS[m] + 1, len(LADDER) - 1)]
        if LADDER_POS[m] >= 0
        else mode_index("int8")
        for m in range(N_MODES)
    ],
    np.int32,
)
_HIGHER = np.array(
    [
        LADDER[max(LADDER_POS[m] - 1, 0)] if LADDER_POS[m] >= 0 else mode_index("fp8_e4m3")
        for m in range(N_MODES)
    ],
    np.int32,
)
ON_LADDER = LADDER_POS >= 0


def next_lower(modes: jax.Array) -> jax.Array:
  """The next lower mode on ``LADDER`` (int4 stays int4).

  Example:
    >>> [MODES[int(m)] for m in next_lower(jnp.array([0, 2, 6]))]
    ['fp16', 'bf16', 'int4']
  """
  return jnp.asarray(_LOWER)[modes]


def next_higher(modes: jax.Array) -> jax.Array:
  """The next higher mode on ``LADDER`` (fp32 stays fp32).

  Example:
    >>> [MODES[int(m)] for m in next_higher(jnp.array([5, 1]))]
    ['fp8_e4m3', 'fp16']
  """
  return jnp.asarray(_HIGHER)[modes]


class Context(NamedTuple):
  """A deployment, as arrays (a pytree).

  Attributes:
    ops: the op table (``aprec.hardware.cost.op_arrays``).
    spec: the NNP.
    delta_loss: ``[n_ops, n_modes]`` predicted loss increase of each op in each mode
      (the sensitivity profile; fp32 is 0).
    step_period_s: time between batches; a step's power is its energy over
      ``max(period, latency)``.
    macs_share, bytes_share: each op's share of the model's MACs and of its fp32
      working-set bytes.
  """

  ops: OpArrays
  spec: NNPSpec
  delta_loss: jax.Array
  step_period_s: jax.Array
  macs_share: jax.Array
  bytes_share: jax.Array

  @property
  def n_ops(self) -> int:
    return self.delta_loss.shape[0]


def make_context(
    ops: Sequence[Op] | OpArrays, spec: NNPSpec, delta_loss, step_period_s: float
) -> Context:
  """Builds a ``Context``, checking the profile's shape against the op table.

  Example:
    >>> from aprec.hardware.fit import dot_op
    >>> from aprec import hardware
    >>> make_context([dot_op(8, 16, 4)], hardware.edge_npu(), np.zeros((1, 7)), 1e-6).n_ops
    1
  """
  arrays = ops if isinstance(ops, OpArrays) else op_arrays(ops)
  table = np.asarray(delta_loss, np.float64)
  if table.shape != (arrays.n_ops, N_MODES):
    raise ValueError(
        f"the sensitivity table has shape {table.shape}, expected "
        f"({arrays.n_ops}, {N_MODES}) = (ops, modes {MODES}); compute it for this "
        "model (aprec.rpm.sensitivity_table)"
    )
  if not np.all(np.isfinite(table)):
    raise ValueError("the sensitivity table holds NaN or inf; recompute the profile")
  if not (np.isfinite(step_period_s) and step_period_s > 0):
    raise ValueError(f"step_period_s = {step_period_s}; expected a positive time in seconds")
  macs = np.asarray(arrays.macs, np.float64)
  fp32_bytes = 4.0 * (
      np.asarray(arrays.weight_elements, np.float64)
      + np.asarray(arrays.activation_elements, np.float64)
      + np.asarray(arrays.output_elements, np.float64)
  )
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  return Context(
      ops=arrays,
      spec=spec,
      delta_loss=f32(np.maximum(table, 0.0)),
      step_period_s=f32(step_period_s),
      macs_share=f32(macs / max(macs.sum(), 1.0)),
      bytes_share=f32(fp32_bytes / max(fp32_bytes.sum(), 1.0)),
  )


class Tables(NamedTuple):
  """Every op priced in every mode under one hardware state, ``[n_ops, n_modes]`` each.

  ``dynamic_energy_j`` is the op's energy less static power over its latency, so a batch
  that finishes within the period draws ``(sum dynamic + static * period) / period``.
  """

  latency_s: jax.Array
  dynamic_energy_j: jax.Array
  working_set_bytes: jax.Array


def tables(ctx: Context, state: HardwareState) -> Tables:
  """Prices every (op, mode) under ``state`` (the cost model's per-mode tables, once)."""
  t = mode_tables(ctx.ops, ctx.spec, state)
  static = jnp.asarray(ctx.spec.static_power_w, jnp.float32)
  return Tables(
      latency_s=t.latency_s,
      dynamic_energy_j=t.energy_j - static * t.latency_s,
      working_set_bytes=t.working_set_bytes,
  )


def idle_state(ctx: Context) -> HardwareState:
  """Every PE, the whole buffer, full clock (traceable, unlike ``cost.nominal_state``)."""
  return HardwareState(
      jnp.float32(1.0), jnp.asarray(ctx.spec.buffer_bytes, jnp.float32), jnp.float32(1.0)
  )


class Predicted(NamedTuple):
  """What an assignment is predicted to cost in one step."""

  power_w: jax.Array
  latency_s: jax.Array
  peak_bytes: jax.Array
  delta_loss: jax.Array


def step_power_w(ctx: Context, dynamic_energy_j: jax.Array, latency_s: jax.Array) -> jax.Array:
  """A step's power: its dynamic energy plus static power over ``max(period, latency)``."""
  static = jnp.asarray(ctx.spec.static_power_w, jnp.float32)
  duration = jnp.maximum(ctx.step_period_s, latency_s)
  return (dynamic_energy_j + static * duration) / duration


def predict(ctx: Context, t: Tables, probs: jax.Array) -> Predicted:
  """Step power, latency, peak working set and Δloss of mode probabilities ``[n_ops, n_modes]``
  (one-hot for a hard assignment); differentiable in ``probs``."""
  latency = jnp.sum(probs * t.latency_s)
  power = step_power_w(ctx, jnp.sum(probs * t.dynamic_energy_j), latency)
  peak = jnp.max(jnp.sum(probs * t.working_set_bytes, axis=-1))
  return Predicted(
      power_w=power, latency_s=latency, peak_bytes=peak, delta_loss=jnp.sum(probs * ctx.delta_loss)
  )
