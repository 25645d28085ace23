"""Probes: the fp32 model with additive shifts at every op's operands and outputs.

Gradient- and Hessian-based sensitivity needs derivatives of the loss with respect to
quantities *inside* the model: each op's output ``y`` (for ``∂L/∂y``) and each op's
operands (for Hessian traces). Adding a zero "shift" at those points and differentiating
with respect to the shift gives exactly those derivatives, without editing the model.

Everything here runs the emulator's traced program (``Emulator.run_with``) with every op
computed by its original primitive at fp32, so the
result equals the emulator at an all-fp32 assignment. ``mode_deltas`` adds, per op and per
mode, what the PAK changes when that op alone runs in that mode; ``hutchinson_traces``
estimates Hessian traces with respect to every operand.

Example:
  >>> import jax, jax.numpy as jnp, flax.linen as nn
  >>> from aprec import Emulator
  >>> model = nn.Dense(2); x = jnp.ones((1, 3)); params = model.init(jax.random.key(0), x)
  >>> emu = Emulator(model.apply, params, x)
  >>> shifts = zero_output_shifts(emu)
  >>> y = run(emu, params, x, output_shifts=[s + 1.0 for s in shifts])
  >>> bool(jnp.allclose(y, model.apply(params, x) + 1.0))
  True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aprec.emulator import formats
from aprec.emulator import inputs as inputs_lib
from aprec.emulator import pak
from aprec.emulator.core import Emulator
from aprec.emulator.formats import N_MODES
from aprec.emulator.ops import param_name
from aprec.typing import OperandShifts, Shifts


class ModeDeltas(NamedTuple):
  """What one op changes when it alone runs in each mode (its inputs at fp32).

  Every entry is a tuple over ops of arrays with a leading mode axis (``len(MODES)``).

  Attributes:
    output: ``PAK(op, mode) - op`` at fp32, shape ``(n_modes, *out_shape)``.
    lhs, rhs: ``Q_mode(operand) - operand``, the rounding error of each operand with the
      PAK's scales (per output channel for weights, per tensor or token for activations).
  """

  output: tuple[jax.Array, ...]
  lhs: tuple[jax.Array, ...]
  rhs: tuple[jax.Array, ...]


def zero_output_shifts(emulator: Emulator) -> tuple[jax.Array, ...]:
  """One float32 zero array per op, shaped like its output."""
  return tuple(jnp.zeros(op.out_shape, jnp.float32) for op in emulator.ops)


def zero_operand_shifts(emulator: Emulator) -> tuple[tuple[jax.Array, jax.Array], ...]:
  """One ``(lhs, rhs)`` pair of float32 zero arrays per op, shaped like its operands."""
  return tuple(
      (jnp.zeros(op.lhs_shape, jnp.float32), jnp.zeros(op.rhs_shape, jnp.float32))
      for op in emulator.ops
  )


def _check_shifts(emulator: Emulator, output_shifts, operand_shifts) -> None:
  n = len(emulator.ops)
  if output_shifts is not None and len(output_shifts) != n:
    raise ValueError(
        f"output_shifts needs one entry per op ({n}), got {len(output_shifts)}; "
        "start from probes.zero_output_shifts(emulator)"
    )
  if operand_shifts is not None and len(operand_shifts) != n:
    raise ValueError(
        f"operand_shifts needs one (lhs, rhs) pair per op ({n}), got "
        f"{len(operand_shifts)}; start from probes.zero_operand_shifts(emulator)"
    )


def run(
    emulator: Emulator,
    params: Any,
    inputs: Any,
    *,
    output_shifts: Shifts | None = None,
    operand_shifts: OperandShifts | None = None,
) -> Any:
  """The model at fp32 with ``operand_shifts[i]`` added to op i's operands and
  ``output_shifts[i]`` added to its result (``None`` entries add nothing).

  Differentiate with respect to the shifts (at zero) for ``∂L/∂y`` or operand Hessians.
  """
  _check_shifts(emulator, output_shifts, operand_shifts)

  def compute(i: int, contraction: pak.ProductSpec, lhs, rhs):
    if operand_shifts is not None:
      dl, dr = operand_shifts[i]
      lhs = lhs if dl is None else lhs + dl.astype(lhs.dtype)
      rhs = rhs if dr is None else rhs + dr.astype(rhs.dtype)
    out = contraction.float_product(lhs, rhs)
    if output_shifts is not None and output_shifts[i] is not None:
      out = out + output_shifts[i].astype(out.dtype)
    return out

  return emulator.run_with(params, inputs, compute)


def _static_pak(
    contraction: pak.ProductSpec, lhs: jax.Array, rhs: jax.Array, mode: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``pak.apply`` for a Python-int mode, with both operands' rounding errors.

  The same arithmetic as the PAK's forward pass (``tests/test_sensitivity.py`` checks it
  bit for bit), traced without the other modes' ``lax.switch``/``lax.cond`` branches,
  which makes a pass over all modes of all ops far cheaper to compile.
  """
  ql, sl = formats.quantize(lhs, mode, contraction.lhs_reduce_axes)
  qr, sr = formats.quantize(rhs, mode, contraction.rhs_reduce_axes)
  # The PAK's own choice: the int32 product, or the float one where it is provably equal.
  use_int = formats.MODE_TABLE[mode].is_int and contraction.int_dot
  acc = (contraction.int_product if use_int else contraction.float_product)(ql, qr)
  out = pak.scale_back(
      acc,
      contraction.lhs_to_out(sl).astype(acc.dtype),
      contraction.rhs_to_out(sr).astype(acc.dtype),
  )
  return out, (ql * sl).astype(lhs.dtype) - lhs, (qr * sr).astype(rhs.dtype) - rhs


def _rounding_error(x: jax.Array, mode: int, reduce_axes: Sequence[int]) -> jax.Array:
  values, scale = formats.quantize(x, mode, reduce_axes)
  return (values * scale).astype(x.dtype) - x


def mode_deltas(
    emulator: Emulator, params: Any, inputs: Any, modes: Sequence[int] | None = None
) -> tuple[Any, ModeDeltas]:
  """The fp32 outputs, and for every op and mode the change of its result and operands.

  Each op sees its fp32 inputs, so ``output[i][m]`` is the perturbation that running op
  ``i`` alone in mode ``m`` injects at its output, before it propagates.

  Args:
    emulator: the model's emulator.
    params, inputs: as for the emulator.
    modes: mode indices to compute (default: all, in ``MODES`` order).

  Returns:
    ``(outputs, ModeDeltas)``.
  """
  modes = tuple(range(N_MODES)) if modes is None else tuple(int(m) for m in modes)
  found: dict[int, tuple[jax.Array, jax.Array, jax.Array]] = {}

  def compute(i: int, contraction: pak.ProductSpec, lhs, rhs):
    exact = contraction.float_product(lhs, rhs)
    per_mode = [_static_pak(contraction, lhs, rhs, m) for m in modes]
    out = jnp.stack([o - exact for o, _, _ in per_mode])
    dl = jnp.stack([d for _, d, _ in per_mode])
    dr = jnp.stack([d for _, _, d in per_mode])
    found[i] = (out, dl, dr)
    return exact

  outputs = emulator.run_with(params, inputs, compute)
  per_op = [found[i] for i in range(len(emulator.ops))]
  deltas = ModeDeltas(*(tuple(d[k] for d in per_op) for k in range(3)))
  return outputs, deltas


def weight_errors(
    emulator: Emulator, params: Any, inputs: Any
) -> tuple[tuple[jax.Array, jax.Array] | None, ...]:
  """Per op: ``(weight operand, Q_mode(weight) - weight for every mode)``, or None
  without a weight. The errors have a leading mode axis."""
  found: dict[int, tuple[jax.Array, jax.Array]] = {}

  def compute(i: int, contraction: pak.ProductSpec, lhs, rhs):
    side = emulator.ops[i].weight_operand
    if side is not None:
      w, axes = ((lhs, contraction.lhs_reduce_axes), (rhs, contraction.rhs_reduce_axes))[side]
      found[i] = (w, jnp.stack([_rounding_error(w, m, axes) for m in range(N_MODES)]))
    return contraction.float_product(lhs, rhs)

  emulator.run_with(params, inputs, compute)
  return tuple(found.get(i) for i in range(len(emulator.ops)))


def match_weight_leaves(
    emulator: Emulator, params: Any, weights: Sequence[jax.Array | None]
) -> tuple[tuple | None, ...]:
  """For each op, the pytree path of the parameter leaf its weight operand is, else None.

  A leaf matches when it holds the operand's values in the same element order (a reshape
  or cast of it); a transposed view has no match. Leaves named like the op come first
  (its bias shares the name, not the size).
  """
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  result: list[tuple | None] = []
  for op, weight in zip(emulator.ops, weights):
    if weight is None:
      result.append(None)
      continue
    w = np.asarray(weight, np.float32).ravel()
    ranked = sorted(leaves, key=lambda pl: param_name(pl[0]) != op.name)
    result.append(
        next(
            (
                path
                for path, leaf in ranked
                if np.size(leaf) == w.size
                and np.array_equal(np.asarray(leaf, np.float32).ravel(), w)
            ),
            None,
        )
    )
  return tuple(result)


# --------------------------------------------------------------------------------------
# Hutchinson: Hessian traces with respect to every op's operands.


def _hutchinson_fn(emulator: Emulator, loss_fn: Callable, n_probes: int) -> Callable:
  shapes = [(op.lhs_shape, op.rhs_shape) for op in emulator.ops]
  n_blocks = 2 * len(shapes)

  def loss_of(shifts, params, x, t):
    return loss_fn(run(emulator, params, x, operand_shifts=shifts), t)

  def own_quadratic_form(v, block, params, x, t):  # v_o · (H v)_o, v zero outside block o
    v = tuple(
        tuple(vs * (block == 2 * i + s).astype(vs.dtype) for s, vs in enumerate(pair))
        for i, pair in enumerate(v)
    )
    zeros = jax.tree.map(jnp.zeros_like, v)
    _, hv = jax.jvp(lambda s: jax.grad(loss_of)(s, params, x, t), (zeros,), (v,))
    forms = jnp.stack([jnp.vdot(a, b) for vi, hvi in zip(v, hv) for a, b in zip(vi, hvi)])
    return forms[block]

  def block_forms(key, block, params, x, t):  # n_probes estimates of Tr(H_block)
    keys = jax.random.split(key, n_blocks)
    v = tuple(
        tuple(
            jax.random.rademacher(keys[2 * i + s], (n_probes, *shape), jnp.float32)
            for s, shape in enumerate(pair)
        )
        for i, pair in enumerate(shapes)
    )
    return jax.vmap(own_quadratic_form, in_axes=(0, None, None, None, None))(v, block, params, x, t)

  compiled = jax.jit(block_forms)

  def many(key, params, x, t):
    # One call per operand, the block a traced index: a single compilation. (A lax.map
    # over the blocks runs the convolutions inside an XLA loop, ~40x slower on CPU.)
    forms = [
        compiled(jax.random.fold_in(key, b), jnp.int32(b), params, x, t) for b in range(n_blocks)
    ]
    return jnp.stack(forms, -1).reshape(n_probes, len(shapes), 2)

  return many


def hutchinson_traces(
    emulator: Emulator,
    params: Any,
    xs: np.ndarray,
    ts: np.ndarray,
    loss_fn: Callable,
    *,
    rtol: float = 0.05,
    probes_per_round: int = 8,
    max_probes: int = 256,
    seed: int = 0,
    combine: np.ndarray | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
  """Hutchinson estimates of ``Tr(∂²L/∂o²)`` for both operands ``o`` of every op.

  Block by block, as HAWQ-V2: a probe of operand ``o`` is a Rademacher vector ``v``
  supported on ``o`` alone, and ``v · (H v)`` is an unbiased estimate of ``Tr(H_oo)``
  without the cross-block terms a joint probe would add to its variance. ``H v`` is
  ``jax.jvp`` of ``jax.grad`` of the fp32 model's loss with respect to the operand shifts
  of ``run``; one compiled function runs a round of probes for any operand. Rounds of
  ``probes_per_round`` probes cycle over the batches; after each full cycle it stops once
  every checked quantity's standard error is at most ``rtol`` times its magnitude
  (magnitudes below 1e-6 of the largest count as that floor), else at ``max_probes``.
  The checked quantities are the traces, or with
  ``combine`` the combinations ``Σ_o combine[i, k, o] · Tr_o`` of each op ``i``.

  Args:
    xs, ts: stacked batches of inputs and loss targets, ``(n_batches, B, ...)``.
    loss_fn: ``loss_fn(outputs, targets) -> scalar``.
    combine: optional ``(n_ops, k, 2)`` weights of the quantities to converge on.

    max_probes: the most probes per operand.

  Returns:
    ``{"trace": (n_ops, 2), "stderr": (n_ops, 2), "samples": (probes, n_ops, 2),
    "probes", "converged", "rtol"}`` (operand axis: 0 the lhs, 1 the rhs; ``probes`` per
    operand).
  """
  if not 0 < rtol < 1:
    raise ValueError(f"hessian rtol must be in (0, 1), got {rtol}")
  if probes_per_round < 2 or max_probes < probes_per_round:
    raise ValueError(
        f"need probes_per_round >= 2 and max_probes >= probes_per_round, got "
        f"{probes_per_round} and {max_probes}"
    )
  fn = _hutchinson_fn(emulator, loss_fn, probes_per_round)
  key = jax.random.key(seed)
  samples: list[np.ndarray] = []
  rounds = max_probes // probes_per_round
  n_batches = inputs_lib.batch_size(xs)
  converged = False

  def stats(weights=None):
    s = np.concatenate(samples)
    if weights is not None:
      s = np.einsum("pio,iko->pik", s, weights)
    return s.mean(0), s.std(0, ddof=1) / np.sqrt(len(s))

  for r in range(rounds):
    b = r % n_batches
    samples.append(
        np.asarray(
            fn(jax.random.fold_in(key, r), params, inputs_lib.take(xs, b), inputs_lib.take(ts, b)),
            np.float64,
        )
    )
    if progress is not None:
      progress("hessian", (r + 1) * probes_per_round, max_probes)
    if (r + 1) % n_batches == 0:
      mean, err = stats(combine)
      floor = 1e-6 * np.abs(mean).max()
      if np.all(err <= rtol * np.maximum(np.abs(mean), floor)):
        converged = True
        break
  mean, err = stats()
  if progress is not None:
    progress("hessian", max_probes, max_probes)
  return {
      "trace": mean,
      "stderr": err,
      "samples": np.concatenate(samples),
      "probes": len(samples) * probes_per_round,
      "converged": converged,
      "rtol": rtol,
  }
