"""The differentiable cost model: latency, energy, power and memory of a precision assignment.

Every op in every mode is priced first (``[n_ops, n_modes]`` tables), then the per-op mode
probabilities ``p[op, mode]`` take the expectation, so the cost is linear in ``p`` (a
one-hot ``p`` is a hard assignment) and differentiable in ``p`` and in every numeric field
of the ``NNPSpec``.

The model, per op ``o`` in mode ``m``:

- **Bytes.** Every tensor of an op is stored in the op's mode: ``bits / 8`` bytes per
  element. Scaled modes (FP8, INT8, INT4) add one 4-byte FP32 scale per output channel of
  the weight and one per activation and output tensor. Weights are stored pre-converted;
  activations and outputs of every mode narrower than FP32 (the accumulator format) pass
  through the DMA's converter.
- **Where bytes come from.** The working set ``w = weight + activation + output bytes``
  lives in the on-chip buffer when it fits in the free buffer, else in DRAM; the switch is
  a sigmoid ``fits = sigmoid((free - w) / (softness * w))``, so traffic splits into
  ``fits * w`` SRAM bytes and ``(1 - fits) * w`` DRAM bytes.
- **Latency** is a smooth roofline plus a fixed overhead:
  ``overhead + (c^q + mem^q)^(1/q)`` with compute time
  ``c = macs / (pes * macs_per_pe_cycle * clock * clock_scale * availability * rate[m])``,
  memory time ``mem = dram_bytes / dram_bw + sram_bytes / sram_bw`` and ``q`` the spec's
  ``roofline_sharpness``. Ops run one after another; the total is the sum.
- **Energy** is ``macs * energy_per_mac[m] + sram_bytes * e_sram + dram_bytes * e_dram +
  converted_bytes * e_dma + static_power * latency``; average power is total energy over
  total latency. Dynamic energy per MAC does not depend on ``clock_scale`` (no voltage
  scaling modelled); a lower clock raises latency and so static energy.
- **Buffer occupancy** is the largest per-op working set (expected over ``p``), in bytes
  and as a fraction of the free buffer (above 1: the op spills to DRAM).

Example:
  >>> from aprec import hardware
  >>> from aprec.hardware import cost
  >>> from aprec.emulator.ops import Op
  >>> op = Op(name="Dense_0", kind="dot_general", lhs_shape=(32, 64), rhs_shape=(64, 10),
  ...         out_shape=(32, 10), weight_operand=1, macs=32 * 64 * 10, contraction_size=64)
  >>> spec = hardware.edge_npu()
  >>> c8 = cost.checked_cost([op], cost.one_hot([5]), spec)   # int8
  >>> c16 = cost.checked_cost([op], cost.one_hot([2]), spec)  # fp16
  >>> bool(c8.energy_j < c16.energy_j)
  True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aprec.emulator.formats import MODE_TABLE, MODES, N_MODES
from aprec.hardware.specs import NNPSpec, validate
from aprec.emulator.ops import Op

SCALE_BYTES = 4.0  # one FP32 scale
# Floor on PE availability inside the model: a job with no PEs gets a trickle, so latency
# stays finite (and gradients stay finite) instead of dividing by zero.
MIN_PE_AVAILABILITY = 1e-3

MODE_BYTES_PER_ELEMENT = np.array([m.bits / 8 for m in MODE_TABLE], np.float64)
MODE_SCALED = np.array([float(m.scaled) for m in MODE_TABLE], np.float64)
# Activations and outputs are converted by the DMA in every mode narrower than the FP32
# accumulator; FP32 tensors pass through unchanged.
MODE_CONVERTS = np.array([float(m.bits < 32) for m in MODE_TABLE], np.float64)


class OpArrays(NamedTuple):
  """The op table as float arrays, one entry per op (a pytree; build with ``op_arrays``)."""

  macs: jax.Array
  weight_elements: jax.Array
  activation_elements: jax.Array
  output_elements: jax.Array
  has_weight: jax.Array
  weight_channels: jax.Array  # output channels of the weight (one scale each), 0 if none

  @property
  def n_ops(self) -> int:
    return self.macs.shape[-1]


class HardwareState(NamedTuple):
  """The live state of the NNP as this job sees it.

  Attributes:
    pe_availability: fraction of PEs this job gets, in [0, 1] (floored at
      ``MIN_PE_AVAILABILITY`` inside the model).
    free_buffer_bytes: on-chip buffer bytes not held by other jobs, >= 0.
    clock_scale: clock relative to nominal (thermal throttling / DVFS), in (0, 1].
  """

  pe_availability: jax.Array | float
  free_buffer_bytes: jax.Array | float
  clock_scale: jax.Array | float


class Cost(NamedTuple):
  """What an assignment costs. ``op_*`` fields are per op; the rest are totals."""

  op_latency_s: jax.Array
  op_compute_s: jax.Array
  op_memory_s: jax.Array
  op_energy_j: jax.Array
  op_dram_bytes: jax.Array
  op_working_set_bytes: jax.Array
  latency_s: jax.Array
  energy_j: jax.Array
  power_w: jax.Array
  dram_bytes: jax.Array
  peak_buffer_bytes: jax.Array
  buffer_occupancy: jax.Array  # peak_buffer_bytes / free_buffer_bytes


def op_arrays(ops: Sequence[Op], dtype=None) -> OpArrays:
  """Stacks ``Op`` records into an ``OpArrays`` of float arrays.

  Args:
    ops: the op table (e.g. from the emulator's op discovery).
    dtype: float dtype (default: JAX's default float, float32 unless x64 is on).

  Example:
    >>> from aprec.emulator.ops import Op
    >>> op = Op(name="d", kind="dot_general", lhs_shape=(2, 3), rhs_shape=(3, 4),
    ...         out_shape=(2, 4), weight_operand=1, macs=24, contraction_size=3)
    >>> a = op_arrays([op])
    >>> a.macs.tolist(), a.weight_channels.tolist()
    ([24.0], [4.0])
  """
  ops = list(ops)
  if not ops:
    raise ValueError("the op table is empty; pass at least one Op (see aprec.emulator.ops.Op)")
  for i, op in enumerate(ops):
    if not isinstance(op, Op):
      raise TypeError(f"ops[{i}] is a {type(op).__name__}, expected aprec.emulator.ops.Op")
    if op.macs < 0 or op.contraction_size <= 0:
      raise ValueError(
          f"op {op.name!r} has macs={op.macs}, contraction_size="
          f"{op.contraction_size}; expected macs >= 0 and contraction_size > 0"
      )
  dtype = dtype or jnp.zeros(()).dtype

  def col(values):
    return jnp.asarray(np.array(values, np.float64), dtype)

  return OpArrays(
      macs=col([op.macs for op in ops]),
      weight_elements=col([op.weight_elements for op in ops]),
      activation_elements=col([op.activation_elements for op in ops]),
      output_elements=col([op.output_elements for op in ops]),
      has_weight=col([float(op.has_weight) for op in ops]),
      weight_channels=col(
          [op.weight_elements / op.contraction_size if op.has_weight else 0 for op in ops]
      ),
  )


def one_hot(modes, dtype=None) -> jax.Array:
  """Hard assignment -> probabilities ``[n_ops, n_modes]`` (works on traced modes).

  Example:
    >>> one_hot([0, 5]).shape
    (2, 7)
  """
  return jax.nn.one_hot(jnp.asarray(modes, jnp.int32), N_MODES, dtype=dtype or jnp.zeros(()).dtype)


def nominal_state(spec: NNPSpec) -> HardwareState:
  """Every PE, the whole buffer, full clock.

  Example:
    >>> from aprec.hardware.specs import edge_npu
    >>> nominal_state(edge_npu()).pe_availability
    1.0
  """
  return HardwareState(
      pe_availability=1.0, free_buffer_bytes=float(spec.buffer_bytes), clock_scale=1.0
  )


def smooth_max(a: jax.Array, b: jax.Array, sharpness: float) -> jax.Array:
  """``(a^q + b^q)^(1/q)`` for ``a, b >= 0``, computed without under/overflow."""
  scale = jnp.maximum(jnp.maximum(a, b), jnp.finfo(jnp.result_type(a, b)).tiny)
  return scale * ((a / scale) ** sharpness + (b / scale) ** sharpness) ** (1.0 / sharpness)


def _tensor_bytes(ops: OpArrays, dtype) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Weight, activation and output bytes of every op in every mode, ``[n_ops, n_modes]``."""
  bpe = jnp.asarray(MODE_BYTES_PER_ELEMENT, dtype)[None, :]
  scaled = jnp.asarray(MODE_SCALED, dtype)[None, :]
  col = lambda x: jnp.asarray(x, dtype)[..., None]
  weight = col(ops.weight_elements) * bpe + scaled * SCALE_BYTES * col(ops.weight_channels)
  activation = col(ops.activation_elements) * bpe + scaled * SCALE_BYTES * (
      col(ops.activation_elements) > 0
  )
  output = col(ops.output_elements) * bpe + scaled * SCALE_BYTES
  return weight, activation, output


class ModeTables(NamedTuple):
  """Every op priced in every mode under one state, ``[n_ops, n_modes]`` each: what ``cost``
  takes the expectation of."""

  latency_s: jax.Array
  compute_s: jax.Array
  memory_s: jax.Array
  energy_j: jax.Array
  dram_bytes: jax.Array
  working_set_bytes: jax.Array


def mode_tables(
    ops: OpArrays, spec: NNPSpec, state: HardwareState, dtype=jnp.float32
) -> ModeTables:
  """The per-(op, mode) tables of the cost model (module doc) under ``state``.

  ``cost`` of a one-hot assignment reads these tables' entries; policies that price many
  assignments compute them once and gather.
  """
  f = lambda x: jnp.asarray(x, dtype)
  weight_b, act_b, out_b = _tensor_bytes(ops, dtype)
  working = weight_b + act_b + out_b  # [n_ops, n_modes]

  free = f(state.free_buffer_bytes)
  width = f(spec.buffer_softness) * working + 1.0  # +1 byte keeps an empty op finite
  fits = jax.nn.sigmoid((free - working) / width)
  sram_b = fits * working
  dram_b = (1.0 - fits) * working

  availability = jnp.maximum(f(state.pe_availability), MIN_PE_AVAILABILITY)
  rate = (
      f(spec.num_pes)
      * f(spec.clock_hz)
      * f(spec.macs_per_pe_cycle)
      * f(state.clock_scale)
      * availability
      * f(spec.relative_throughput)
  )[None, :]
  compute_s = f(ops.macs)[:, None] / rate
  memory_s = dram_b / f(spec.dram_bandwidth_bytes_per_s) + sram_b / f(
      spec.sram_bandwidth_bytes_per_s
  )
  latency_s = f(spec.op_overhead_s) + smooth_max(compute_s, memory_s, spec.roofline_sharpness)

  converted_b = jnp.asarray(MODE_CONVERTS, dtype)[None, :] * (act_b + out_b)
  energy_j = (
      f(ops.macs)[:, None] * f(spec.energy_per_mac_j)[None, :]
      + sram_b * f(spec.sram_energy_per_byte_j)
      + dram_b * f(spec.dram_energy_per_byte_j)
      + converted_b * f(spec.dma_conversion_energy_per_byte_j)
      + f(spec.static_power_w) * latency_s
  )
  return ModeTables(latency_s, compute_s, memory_s, energy_j, dram_b, working)


@jax.jit
def cost(ops: OpArrays, probs: jax.Array, spec: NNPSpec, state: HardwareState) -> Cost:
  """The pure, jitted cost of mode probabilities ``probs[op, mode]`` (no validation).

  Differentiable in ``probs`` and every numeric field of ``spec`` and ``state``; composes
  with ``vmap`` (over assignments, states or specs) and ``grad``. Use ``checked_cost`` for
  checked inputs.

  Example:
    >>> from aprec.hardware.specs import edge_npu
    >>> from aprec.emulator.ops import Op
    >>> op = Op(name="d", kind="dot_general", lhs_shape=(8, 16), rhs_shape=(16, 4),
    ...         out_shape=(8, 4), weight_operand=1, macs=512, contraction_size=16)
    >>> spec = edge_npu()
    >>> c = cost(op_arrays([op]), one_hot([5]), spec, nominal_state(spec))
    >>> c.op_latency_s.shape
    (1,)
  """
  t = mode_tables(ops, spec, state, probs.dtype)
  free = jnp.asarray(state.free_buffer_bytes, probs.dtype)
  expect = lambda table: jnp.sum(probs * table, axis=-1)
  op_latency_s = expect(t.latency_s)
  op_energy_j = expect(t.energy_j)
  op_working = expect(t.working_set_bytes)
  op_dram_bytes = expect(t.dram_bytes)
  total_latency_s = jnp.sum(op_latency_s)
  total_energy_j = jnp.sum(op_energy_j)
  peak_buffer_bytes = jnp.max(op_working)
  return Cost(
      op_latency_s=op_latency_s,
      op_compute_s=expect(t.compute_s),
      op_memory_s=expect(t.memory_s),
      op_energy_j=op_energy_j,
      op_dram_bytes=op_dram_bytes,
      op_working_set_bytes=op_working,
      latency_s=total_latency_s,
      energy_j=total_energy_j,
      power_w=total_energy_j / total_latency_s,
      dram_bytes=jnp.sum(op_dram_bytes),
      peak_buffer_bytes=peak_buffer_bytes,
      buffer_occupancy=peak_buffer_bytes / jnp.maximum(free, 1.0),
  )


def validate_probs(probs, n_ops: int, *, atol: float = 1e-5) -> np.ndarray:
  """Checks mode probabilities ``[n_ops, n_modes]`` (outside ``jit``); returns them as NumPy."""
  p = np.asarray(probs, np.float64)
  if p.shape != (n_ops, N_MODES):
    raise ValueError(
        f"mode probabilities have shape {p.shape}; expected ({n_ops}, {N_MODES}) "
        f"= (ops, modes {MODES}); for a hard assignment pass int modes or "
        f"aprec.hardware.cost.one_hot(modes)"
    )
  if not np.all(np.isfinite(p)) or np.any(p < 0):
    bad = np.argwhere(~np.isfinite(p) | (p < 0))[0]
    raise ValueError(
        f"probs[{bad[0]}, {bad[1]}] = {p[tuple(bad)]}; probabilities must be "
        f"finite and >= 0 (use jax.nn.softmax on logits)"
    )
  sums = p.sum(axis=-1)
  off = np.abs(sums - 1.0) > atol
  if np.any(off):
    i = int(np.argmax(off))
    raise ValueError(
        f"probabilities of op {i} sum to {sums[i]:.8g}, expected 1 within "
        f"{atol}; normalise each row (e.g. jax.nn.softmax)"
    )
  return p


def validate_state(state: HardwareState) -> HardwareState:
  """Checks a ``HardwareState``'s ranges (outside ``jit``); returns it or raises ``ValueError``."""
  if not isinstance(state, HardwareState):
    raise TypeError(f"expected a HardwareState, got {type(state).__name__}")
  checks = (
      ("pe_availability", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
      ("free_buffer_bytes", lambda v: v >= 0.0, ">= 0"),
      ("clock_scale", lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
  )
  for field, ok, expected in checks:
    values = np.asarray(getattr(state, field), np.float64).ravel()
    for v in values:
      if not (np.isfinite(v) and ok(v)):
        raise ValueError(f"HardwareState.{field} = {v}; expected {expected}")
  return state


def checked_cost(
    ops: Sequence[Op] | OpArrays, probs, spec: NNPSpec, state: HardwareState | None = None
) -> Cost:
  """Validated cost of an assignment: checks every input, then calls ``cost``.

  Args:
    ops: ``Op`` records or an ``OpArrays``.
    probs: ``[n_ops, n_modes]`` probabilities, or ``[n_ops]`` int modes (hard assignment).
    spec: the NNP (validated too).
    state: live hardware state; default ``nominal_state(spec)``.

  Example:
    >>> from aprec.hardware.specs import edge_npu
    >>> from aprec.emulator.ops import Op
    >>> op = Op(name="d", kind="dot_general", lhs_shape=(8, 16), rhs_shape=(16, 4),
    ...         out_shape=(8, 4), weight_operand=1, macs=512, contraction_size=16)
    >>> float(checked_cost([op], [5], edge_npu()).latency_s) > 0
    True
  """
  arrays = ops if isinstance(ops, OpArrays) else op_arrays(ops)
  validate(spec)
  state = nominal_state(spec) if state is None else validate_state(state)
  p = np.asarray(probs)
  if p.ndim == 1 and np.issubdtype(p.dtype, np.integer):
    if p.shape[0] != arrays.n_ops or np.any((p < 0) | (p >= N_MODES)):
      raise ValueError(
          f"mode assignment {p.tolist()} must hold {arrays.n_ops} ints in "
          f"[0, {N_MODES}) (modes {MODES})"
      )
    probs = one_hot(p, arrays.macs.dtype)
  else:
    validate_probs(p, arrays.n_ops)
    probs = jnp.asarray(p, arrays.macs.dtype)
  state = HardwareState(*(jnp.asarray(v, arrays.macs.dtype) for v in state))
  return cost(arrays, probs, spec, state)
