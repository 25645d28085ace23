"""The Precision Adaptation Kernel (PAK): one matmul or convolution in a traced precision mode.

The seed's PAK, step by step: scale the inputs → switch the PE to the mode → compute →
scale the output back to the common format. Here:

1. both operands are quantized to the mode (``formats.quantize``): weights with one scale
   per output channel, activations with one scale per token (row) by default, or per
   example, or per tensor (``ActivationScaling``);
2. the product runs on the quantized grid values: integer modes as an int8 × int8 product
   accumulated exactly in int32 (computed in float32 where that is provably the same:
   ``K * 127**2 < 2**24``), float modes as a float32-accumulated product of the rounded
   operands (whose pairwise products are exact in float32);
3. the accumulator is multiplied by ``lhs_scale`` then ``rhs_scale`` laid out along the
   output, the two first rebalanced by an exact power of two (``scale_back``), so the first
   product cannot overflow on the way to a result that fits.

The mode is a traced int32, so switching precision never recompiles: one ``lax.cond`` per
op picks the integer side (its quantizer, the int8 product) or the float side (the
branch-free quantizer of every float format); both give a known mode's bits. Convolutions
that run in float32 for every mode skip the branch (``ProductSpec.branch``): the
branch-free quantizer alone, which gives the integer modes' bits too. Gradients
use the straight-through estimator: the tangent of the product is the product's tangent at
the dequantized operands (optionally masked to the clipping range).

At mode ``fp32`` the original primitive runs on the original operands and the scales are
exactly 1, so the result is bit-identical to the unemulated op.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from aprec.emulator import formats, ranges
from aprec.emulator.formats import STE
from aprec.emulator.products import DEFAULT_ACTIVATION_SCALING as DEFAULT_ACTIVATION_SCALING
from aprec.emulator.products import INT_DOT_MIN_CONTRACTION as INT_DOT_MIN_CONTRACTION
from aprec.emulator.products import INT_DOT_MIN_MACS as INT_DOT_MIN_MACS
from aprec.emulator.products import ActivationScaling as ActivationScaling
from aprec.emulator.products import ProductSpec as ProductSpec
from aprec.emulator.products import contraction_size as contraction_size
from aprec.emulator.products import product_spec as product_spec

# --------------------------------------------------------------------------------------
# The kernel.


def known_mode(mode) -> int | None:
  """The mode as a Python int when it is known while tracing (op by op, under
  ``jax.disable_jit``; under ``jit`` even a constant assignment is traced, and XLA folds it)
  and valid, else None. A known mode runs the static quantizer, bitwise the traced one's
  result with far fewer operations (op by op: 2-6x faster).

  Example:
    >>> known_mode(jnp.int32(5)), known_mode(jnp.int32(9))
    (5, None)
  """
  if isinstance(mode, jax.core.Tracer):
    return None
  value = int(mode)
  return value if 0 <= value < formats.N_MODES else None


def _forward(contraction: ProductSpec, lhs, rhs, mode, lhs_amax, rhs_amax, *, residuals=True):
  """``(out, (ql, sl, qr, sr))``: the product in ``mode`` and its quantized operands
  (``out`` alone without ``residuals``: the primal pass never keeps them).

  A known mode runs its own code (``_product``), a traced one ``_traced_product``. The
  scales multiply the accumulator after either, where XLA fuses them with what the model
  does next (a bias, an activation).
  """
  known = known_mode(mode)
  if known is None:
    acc, sl, sr, quantized = _traced_product(
        contraction, lhs, rhs, mode, lhs_amax, rhs_amax, residuals
    )
  else:
    acc, sl, sr, quantized = _product(
        contraction, lhs, rhs, known, lhs_amax, rhs_amax, None, residuals
    )
  out = scale_back(
      acc,
      contraction.lhs_to_out(sl).astype(acc.dtype),
      contraction.rhs_to_out(sr).astype(acc.dtype),
  )
  return (out, (quantized[0], sl, quantized[1], sr)) if residuals else out


def _traced_product(contraction: ProductSpec, lhs, rhs, mode, lhs_amax, rhs_amax, residuals):
  """``_product`` for a traced mode: one ``lax.cond`` between the integer modes (their
  quantizer only, and the int32 product) and the float modes (the branch-free quantizer and
  the float product), so the integer side skips the float formats' rounding. Both give the
  known mode's bits. Without ``contraction.branch``, the float side alone serves every mode
  (its quantizer gives the integer modes' bits too); with ``contraction.integer_only``
  (the mode is known to be an integer one), the integer side alone.
  """
  if contraction.integer_only:
    return _product(contraction, lhs, rhs, mode, lhs_amax, rhs_amax, True, residuals)
  if not contraction.branch:
    return _product(contraction, lhs, rhs, mode, lhs_amax, rhs_amax, False, residuals)
  # The ranges do not depend on the mode: taken before the branch, identical ones (one
  # activation feeding several ops) are computed once.
  lhs_amax = ranges.range_of(lhs, contraction.lhs_reduce_axes, lhs_amax)
  rhs_amax = ranges.range_of(rhs, contraction.rhs_reduce_axes, rhs_amax)
  # An out-of-range mode reads row 0 (fp32, a float mode); quantize's NaNs make it NaN.
  is_int = jnp.asarray(formats.MODE_IS_INT)[formats.lookup_index(mode)[0]]
  # The branches' results share one type. With a float32 accumulator it is int32: the
  # integer side's product as it is, the float side's as its bits. Converted after the
  # branch, the accumulator fuses with the scaling; a conversion inside would take its own
  # pass over the output.
  as_bits = contraction.int_dot and contraction.float_product_dtype(lhs, rhs) == jnp.float32

  def branch(integer):
    def run(*args):
      acc, sl, sr, quantized = _product(contraction, *args, integer, residuals, as_int32=as_bits)
      if as_bits and not integer:
        acc = lax.bitcast_convert_type(acc, jnp.int32)
      return acc, sl, sr, quantized

    return run

  acc, sl, sr, quantized = lax.cond(
      is_int, branch(True), branch(False), lhs, rhs, mode, lhs_amax, rhs_amax
  )
  if as_bits:
    acc = jnp.where(is_int, acc.astype(jnp.float32), lax.bitcast_convert_type(acc, jnp.float32))
  return acc, sl, sr, quantized


def _product(
    contraction: ProductSpec,
    lhs,
    rhs,
    mode,
    lhs_amax,
    rhs_amax,
    integer,
    residuals,
    *,
    as_int32=False,
):
  """``(acc, lhs_scale, rhs_scale, (ql, qr) or ())`` for a known mode (``integer`` None) or
  a traced one of one family: the operands quantized and their product, not yet scaled
  (with ``as_int32``, an int32 product stays int32)."""
  quantize = formats.quantize_integer if integer else formats.quantize
  ql, sl = quantize(lhs, mode, contraction.lhs_reduce_axes, lhs_amax)
  qr, sr = quantize(rhs, mode, contraction.rhs_reduce_axes, rhs_amax)
  if integer is None:
    integer = formats.MODE_IS_INT[mode]
  if integer and contraction.int_dot:
    acc = contraction.int_product(ql, qr, as_int32=as_int32)
  else:  # float modes, and integer ones where float32 holds their products exactly
    acc = contraction.float_product(ql, qr)
  return acc, sl, sr, ((ql, qr) if residuals else ())


def scale_back(acc: jax.Array, lhs_scale: jax.Array, rhs_scale: jax.Array) -> jax.Array:
  """``(acc · lhs_scale) · rhs_scale``, with the scales first rebalanced by a power of two.

  ``lhs_scale · 2**-e`` and ``rhs_scale · 2**e``, where ``2**e`` is the largest lhs scale's
  power of two: exact, so wherever neither product leaves the normal range the result is
  ``(acc · lhs_scale) · rhs_scale`` bit for bit, and the first product can no longer overflow
  on the way to a result that fits (a huge activation against a tiny weight: ``acc ·
  lhs_scale`` alone would exceed float32). Only where one operand's scales span more than
  float32's exponent range (one row ~1e-38 of another) does a product still underflow.

  Two multiplies per element and no select, which XLA fuses into the product's epilogue; a
  per-element check (``isfinite``, then the other order) costs a second pass over the
  output: about a seventh of MiniLM-L6's int8 forward on XLA:CPU (one ad-hoc run, with the
  mode a constant: 301 ms against 258 ms).

  Example:
    >>> import jax.numpy as jnp
    >>> scale_back(jnp.array([2.0]), jnp.array([1e30]), jnp.array([1e-30])).tolist()
    [2.0]
  """
  # 2**e and 2**-e are normal numbers of acc's dtype (float16: |e| <= 13).
  limit = -jnp.finfo(acc.dtype).minexp - 1
  _, exponent = jnp.frexp(jnp.max(lhs_scale).astype(jnp.float32))
  e = jnp.clip(exponent - 1, -limit, limit)
  power = lambda k: lax.bitcast_convert_type((k + 127) << 23, jnp.float32).astype(acc.dtype)
  return acc * (lhs_scale * power(-e)) * (rhs_scale * power(e))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _pak(contraction, lhs, rhs, mode, lhs_amax, rhs_amax):
  return _forward(contraction, lhs, rhs, mode, lhs_amax, rhs_amax, residuals=False)


@_pak.defjvp
def _pak_jvp(contraction, primals, tangents):
  lhs, rhs, mode, lhs_amax, rhs_amax = primals
  t_lhs, t_rhs = tangents[:2]
  out, (ql, sl, qr, sr) = _forward(contraction, lhs, rhs, mode, lhs_amax, rhs_amax)
  if contraction.ste is STE.CLIPPED:
    t_lhs = t_lhs * formats.in_range_mask(lhs, mode, sl)
    t_rhs = t_rhs * formats.in_range_mask(rhs, mode, sr)
  lhs_hat = (ql * sl).astype(lhs.dtype)
  rhs_hat = (qr * sr).astype(rhs.dtype)
  t_out = contraction.float_product(t_lhs, rhs_hat) + contraction.float_product(lhs_hat, t_rhs)
  return out, t_out.astype(out.dtype)


def apply(
    contraction: ProductSpec,
    lhs: jax.Array,
    rhs: jax.Array,
    mode: jax.Array | int,
    lhs_amax: jax.Array | None = None,
    rhs_amax: jax.Array | None = None,
) -> jax.Array:
  """Run one product in precision ``mode`` (an int or traced int32 index into ``MODES``).

  ``lhs_amax``/``rhs_amax`` fix the operand ranges (static calibration); default is the
  operands' own ``max |x|`` at each call.
  """
  return _pak(contraction, lhs, rhs, jnp.asarray(mode, jnp.int32), lhs_amax, rhs_amax)


def _params_of(fn: Callable, lhs: jax.Array, rhs: jax.Array) -> tuple[Any, dict, int]:
  """Primitive and canonical parameters of a lax call, read from its jaxpr."""
  args = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (lhs, rhs)]
  eqns = [
      e
      for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns
      if e.primitive.name in ("dot_general", "conv_general_dilated")
  ]
  (eqn,) = eqns
  return eqn.primitive, dict(eqn.params), eqn.outvars[0].aval.ndim


def dot_general(
    lhs: jax.Array,
    rhs: jax.Array,
    mode: jax.Array | int,
    dimension_numbers,
    precision=None,
    preferred_element_type=None,
    *,
    weight_operand: int | None = 1,
    activation_scaling: ActivationScaling = DEFAULT_ACTIVATION_SCALING,
    ste: STE = STE.IDENTITY,
) -> jax.Array:
  """``lax.dot_general`` run by the PAK in precision ``mode``.

  Example:
    >>> import jax.numpy as jnp
    >>> from aprec.emulator import formats, pak
    >>> x, w = jnp.array([[0.5, -1.0]]), jnp.array([[1.0], [0.25]])
    >>> y = pak.dot_general(x, w, formats.mode_index("int8"), (((1,), (0,)), ((), ())))
    >>> round(float(y[0, 0]), 4)
    0.252
  """
  prim, params, out_ndim = _params_of(
      functools.partial(
          lax.dot_general,
          dimension_numbers=dimension_numbers,
          precision=precision,
          preferred_element_type=preferred_element_type,
      ),
      lhs,
      rhs,
  )
  contraction = product_spec(
      prim,
      params,
      lhs.shape,
      rhs.shape,
      out_ndim,
      weight_operand=weight_operand,
      activation_scaling=activation_scaling,
      ste=ste,
  )
  return apply(contraction, lhs, rhs, mode)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    mode: jax.Array | int,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    *,
    activation_scaling: ActivationScaling = DEFAULT_ACTIVATION_SCALING,
    ste: STE = STE.IDENTITY,
) -> jax.Array:
  """``lax.conv_general_dilated`` run by the PAK in precision ``mode`` (rhs is the kernel)."""
  prim, params, out_ndim = _params_of(
      functools.partial(
          lax.conv_general_dilated,
          window_strides=window_strides,
          padding=padding,
          lhs_dilation=lhs_dilation,
          rhs_dilation=rhs_dilation,
          dimension_numbers=dimension_numbers,
          feature_group_count=feature_group_count,
      ),
      lhs,
      rhs,
  )
  contraction = product_spec(
      prim,
      params,
      lhs.shape,
      rhs.shape,
      out_ndim,
      weight_operand=1,
      activation_scaling=activation_scaling,
      ste=ste,
  )
  return apply(contraction, lhs, rhs, mode)
