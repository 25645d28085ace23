"""Precision modes of a processing element and the arithmetic of each.

One table, ``MODE_TABLE`` (defined in ``modes``, re-exported here), describes every mode;
everything else indexes it. A mode fixes the number format of both operands of an op and its
accumulator.

Float modes round exactly like the real dtype casts (they *are* the casts). Integer modes
are symmetric: ``q = clip(round_half_even(x * (1 / scale)), -qmax, qmax)`` with
``scale = amax * (1 / qmax)``; an all-zero tensor gets ``scale = 1`` and quantizes to zeros.
FP8 modes are scaled the same way (``scale = amax * (1 / max_value)``) and saturate, as deployed
FP8 pipelines do; BF16 and FP16 are plain casts (overflow gives inf, like the cast).

With a traced mode, ``quantize`` is one branch-free computation whose per-mode constants come
from a single row of ``MODE_PARAMS``, bit for bit the static (Python-int) path: XLA compiles
one quantizer instead of seven ``lax.switch`` branches.

Example:
  >>> import jax.numpy as jnp
  >>> from aprec.emulator import formats
  >>> q, scale = formats.quantize(jnp.array([0.5, -1.0, 0.26]), formats.mode_index("int8"))
  >>> [int(v) for v in q], round(float(scale[0]) * 127, 6)
  ([64, -127, 33], 1.0)
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax import lax

from aprec.emulator.ranges import range_of

from aprec.emulator.modes import _F32_MIN_EXPONENT
from aprec.emulator.modes import MODE_BITS as MODE_BITS
from aprec.emulator.modes import MODE_IS_INT as MODE_IS_INT
from aprec.emulator.modes import MODE_MAX_VALUE as MODE_MAX_VALUE
from aprec.emulator.modes import MODE_PARAMS as MODE_PARAMS
from aprec.emulator.modes import MODE_SCALED as MODE_SCALED
from aprec.emulator.modes import MODE_TABLE as MODE_TABLE
from aprec.emulator.modes import PARAM_COLUMNS as PARAM_COLUMNS
from aprec.emulator.modes import MODES as MODES
from aprec.emulator.modes import N_MODES as N_MODES
from aprec.emulator.modes import Kind as Kind
from aprec.emulator.modes import Mode as Mode
from aprec.emulator.modes import lookup_index as lookup_index
from aprec.emulator.modes import mode_index as mode_index
from aprec.emulator.modes import mode_indices as mode_indices
from aprec.emulator.modes import mode_params
from aprec.emulator.modes import static_mode as static_mode

# --------------------------------------------------------------------------------------
# Rounding primitives, one per format family.


def cast_round(x: jax.Array, mode: Mode) -> jax.Array:
  """Round ``x`` to a float mode exactly as the dtype cast does, returned in x's dtype.

  BF16 and FP16 round with ``lax.reduce_precision`` rather than a cast pair: XLA may drop a
  ``f32 → bf16 → f32`` convert pair when the mode is a compile-time constant (excess
  precision), never a ``reduce_precision``. ``reduce_precision`` flushes results below the
  format's smallest normal to zero, so FP16's subnormal range (``|x| < 2**-14``, a fixed grid
  of steps ``2**-24``) rounds explicitly; BF16 shares float32's exponent range. FP8 keeps
  the cast here, for any float32 input (overflow included); the quantizer, whose fp8
  values are clipped, rounds them with ``round_to_mode``.
  """
  if mode.dtype == np.float16:
    xf = x.astype(jnp.float32)
    normal = lax.reduce_precision(xf, exponent_bits=5, mantissa_bits=10)
    subnormal = jnp.round(xf * np.float32(2.0**24)) * np.float32(2.0**-24)
    return jnp.where(jnp.abs(xf) < np.float32(2.0**-14), subnormal, normal).astype(x.dtype)
  if mode.dtype == ml_dtypes.bfloat16:
    return lax.reduce_precision(x, exponent_bits=8, mantissa_bits=7)
  return x.astype(mode.dtype).astype(x.dtype)


def round_to_mode(x: jax.Array, mode: Mode) -> jax.Array:
  """``x`` rounded to a float mode's grid (half to even), in x's dtype; equals the dtype cast.

  Scaled formats (fp8) only ever see values clipped to ``±max_value``, so their exponent
  range is widened by one bit: e4m3fn has no infinity and reaches 448, where an IEEE-style
  4-bit exponent would overflow at 240. The quantizer rounds fp8 with this rather than an
  ``f32 → fp8 → f32`` cast pair, which XLA's excess-precision pass may remove (GPU, CPU with
  oneDNN), silently leaving the values in float32.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.array([1.0 + 2.0 ** -9, 300.0, 2.0 ** -8])
    >>> round_to_mode(x, MODE_TABLE[mode_index("fp8_e4m3")]).tolist()
    [1.0, 288.0, 0.00390625]
  """
  info = ml_dtypes.finfo(mode.dtype)
  exponent_bits = info.nexp + 1 if mode.scaled else info.nexp
  normal = lax.reduce_precision(x, exponent_bits=exponent_bits, mantissa_bits=info.nmant)
  if info.minexp <= _F32_MIN_EXPONENT:
    return normal
  # Below the smallest normal the grid is evenly spaced; x / step is exact (a power of two).
  step = 2.0 ** (info.minexp - info.nmant)
  subnormal = jnp.round(x * (1.0 / step)) * step
  return jnp.where(jnp.abs(x) < float(info.smallest_normal), subnormal.astype(x.dtype), normal)


def scale_from_amax(amax: jax.Array, max_value: float) -> jax.Array:
  """``amax * (1 / max_value)``, kept a normal float32; 1 for an (effectively) zero tensor.

  Written as a product with the float32 reciprocal because XLA rewrites a division by a
  constant into exactly that; spelling it out makes the rounding the same everywhere.
  ``amax`` below the smallest normal float32 counts as zero (XLA on CPU flushes subnormals
  anyway), so a zero tensor quantizes to zeros, never NaN, and the scale never underflows.
  """
  return _scale(amax, np.float32(1.0 / max_value))


def _scale(amax: jax.Array, inv_max: jax.Array) -> jax.Array:
  """``scale_from_amax`` with ``inv_max`` the float32 ``1 / max_value`` (traced or not)."""
  amax = amax.astype(jnp.float32)
  tiny = np.finfo(np.float32).tiny
  return jnp.where(amax < tiny, jnp.float32(1), jnp.maximum(amax * inv_max, tiny))


def scale_to_range(x: jax.Array, mode: Mode, amax: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(x · (1/scale) clipped to ±max_value, scale)``: a scaled mode's operand before rounding.

  Example:
    >>> import jax.numpy as jnp
    >>> scaled, scale = scale_to_range(jnp.array([0.5, -2.0]), MODE_TABLE[mode_index("int8")],
    ...                                jnp.array([1.0]))
    >>> scaled.tolist()
    [63.5, -127.0]
  """
  scale = scale_from_amax(amax, mode.max_value)
  # Clipping saturates out-of-range values under static (calibrated) scales; with scales
  # from the tensor itself it only catches the last ulp of amax / scale.
  # x · (1/scale), spelled out: XLA:CPU computes a division by the scale as this product
  # (NumPy and other backends divide, and ties then round differently), so the documented
  # rule is the product and every backend and the NumPy references compute exactly it.
  inverse = jnp.float32(1) / scale
  return jnp.clip(x.astype(jnp.float32) * inverse, -mode.max_value, mode.max_value), scale


def _quantize_static(x: jax.Array, mode: Mode, amax: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Quantize with a python-known mode: ``(values in the mode's grid, scale)``.

  ``x ≈ values * scale``. For integer modes the values are integers held in float32.
  """
  if not mode.scaled:
    values = x if mode.name == "fp32" else cast_round(x, mode)
    return values, jnp.ones(amax.shape, jnp.float32)
  scaled, scale = scale_to_range(x, mode, amax)
  # Grid values are exact in any float dtype the operand may have (ints <= 127, fp8).
  if mode.is_int:
    return jnp.round(scaled).astype(x.dtype), scale  # jnp.round rounds half to even.
  return round_to_mode(scaled, mode).astype(x.dtype), scale


# --------------------------------------------------------------------------------------
# The traced quantizer: one computation for every mode, its constants one table row.


def _round_mantissa(x: jax.Array, drop: jax.Array) -> jax.Array:
  """float32 ``x`` rounded half to even to ``23 - drop`` mantissa bits (``drop >= 1``).

  The bit trick of XLA's ``reduce_precision``: add ``2**(drop-1) - 1`` plus the lowest kept
  bit to the bits, then clear the dropped bits. A carry out of the mantissa bumps the
  exponent, which is the correct rounding (up to inf at float32's top). Unlike
  ``reduce_precision`` it neither checks a narrower exponent range nor keeps NaN: callers do.
  """
  last = jnp.left_shift(jnp.uint32(1), drop)  # the lowest kept mantissa bit
  bias = jnp.right_shift(last, jnp.uint32(1)) - jnp.uint32(1)
  bits = lax.bitcast_convert_type(x, jnp.uint32)
  lowest_kept = jnp.right_shift(bits, drop) & jnp.uint32(1)
  rounded = (bits + bias + lowest_kept) & (jnp.uint32(0) - last)
  return lax.bitcast_convert_type(rounded, jnp.float32)


def _quantize_traced(x, mode, reduce_axes, amax):
  """``_quantize_static`` for a traced mode, without branches: see ``quantize``."""
  index, valid = lookup_index(mode)
  # One row lookup; `index` is in range already, so no wrap-around of negative indices.
  row = lax.dynamic_index_in_dim(jnp.asarray(mode_params(x.dtype)), index, keepdims=False)
  inv_max, scaled, clip, drop, threshold, inv_step, step, overflow = (
      row[i] for i in range(len(PARAM_COLUMNS))
  )
  scaled = scaled > 0
  scale = jnp.where(scaled, _scale(range_of(x, reduce_axes, amax), inv_max), jnp.float32(1))
  xf = x.astype(jnp.float32)
  # A select, not a multiply by 1: XLA:CPU would flush subnormal operands of a product.
  xs = jnp.where(scaled, jnp.clip(xf * (jnp.float32(1) / scale), -clip, clip), xf)
  magnitude = jnp.abs(xs)
  on_grid = jnp.round(xs * inv_step) * step
  rounded = jnp.where(magnitude < threshold, on_grid, _round_mantissa(xs, drop.astype(jnp.uint32)))
  # ±inf at and above `overflow`; a NaN fails the comparison too and stays NaN.
  rounded = jnp.where(magnitude < overflow, rounded, xs * jnp.float32(jnp.inf))
  values = jnp.where(index == mode_index("fp32"), x, rounded.astype(x.dtype))
  nan = jnp.asarray(jnp.nan, values.dtype)
  return jnp.where(valid, values, nan), jnp.where(valid, scale, jnp.float32(jnp.nan))


def quantize_integer(
    x: jax.Array,
    mode: jax.Array,
    reduce_axes: Sequence[int] | None = None,
    amax: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """``quantize`` for a traced ``mode`` that the caller knows is an integer mode.

  Only the integer modes' arithmetic (scale, clip, round half to even), their ``max_value``
  read from the table: the same bits as ``quantize`` at those modes, with none of the float
  formats' rounding. ``pak`` runs it on the integer side of its one ``lax.cond``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> q, _ = jax.jit(quantize_integer)(jnp.array([0.25, -1.0]), mode_index("int4"))
    >>> q.tolist()
    [2.0, -7.0]
  """
  if reduce_axes is None:
    reduce_axes = tuple(range(x.ndim))
  index, _ = lookup_index(mode)
  inv_max, clip = (
      jnp.asarray(mode_params(x.dtype)[:, PARAM_COLUMNS.index(c)])[index]
      for c in ("inv_max", "clip")
  )
  scale = _scale(range_of(x, tuple(reduce_axes), amax), inv_max)
  scaled = jnp.clip(x.astype(jnp.float32) * (jnp.float32(1) / scale), -clip, clip)
  return jnp.round(scaled).astype(x.dtype), scale


def quantize(
    x: jax.Array,
    mode: jax.Array | int,
    reduce_axes: Sequence[int] | None = None,
    amax: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Quantize ``x`` to the mode with (possibly traced) index ``mode``.

  A Python ``mode`` runs that mode's own code (``_quantize_static``, the reference). A traced
  one runs a single branch-free computation for every mode, parametrised by the mode's row
  of ``MODE_PARAMS``, and gives the same bits: in float32, (scaled modes) ``x · (1/scale)``
  clipped to ``±max_value``; then values below the format's smallest normal (fp16, fp8) round
  on its fixed subnormal grid as ``round(x / step) · step`` (an integer mode is that grid
  with step 1 everywhere); the rest round half to even to the mode's mantissa bits by
  ``reduce_precision``'s bit trick (``_round_mantissa``), the same operation on the same
  bits, so it equals ``reduce_precision`` and hence the dtype cast; fp16 sends magnitudes
  from 65520 up to ±inf as its cast does (the bit trick alone would keep 65536); fp32
  returns ``x`` itself. The result is cast back to x's dtype.

  Args:
    x: a float array.
    mode: int index into ``MODE_TABLE``; may be a traced int32 scalar, so switching modes
      never recompiles.
    reduce_axes: axes that share one scale (default: all, i.e. a per-tensor scale). The
      scale varies along the remaining axes, e.g. per output channel for a weight.
    amax: a fixed range (static calibration), broadcastable to the scale's shape; default
      is the tensor's own ``max |x|`` over ``reduce_axes``.

  Returns:
    ``(values, scale)`` with ``x ≈ values * scale``; ``scale`` keeps the reduced dims as
    size 1. Unscaled modes (fp32, bf16, fp16) return a scale of ones. A traced ``mode``
    outside ``0..N_MODES-1`` gives NaN values and scales (a Python one raises).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.array([1.0 + 2.0 ** -11, 70000.0, 2.0 ** -20])
    >>> values, _ = jax.jit(quantize)(x, mode_index("fp16"))  # a traced mode
    >>> values.tolist()
    [1.0, inf, 9.5367431640625e-07]
  """
  if reduce_axes is None:
    reduce_axes = tuple(range(x.ndim))
  if isinstance(mode, (int, np.integer)):
    m = static_mode(mode)
    if not m.scaled:
      keep_shape = tuple(1 if i in reduce_axes else d for i, d in enumerate(x.shape))
      return _quantize_static(x, m, jnp.zeros(keep_shape, jnp.float32))
    return _quantize_static(x, m, range_of(x, reduce_axes, amax))
  return _quantize_traced(x, mode, tuple(reduce_axes), amax)


def in_range_mask(x: jax.Array, mode: jax.Array | int, scale: jax.Array) -> jax.Array:
  """1 where ``x`` lies inside the mode's representable range at ``scale``, else 0.

  Used by the clipped straight-through estimator: gradients stop where values saturated.
  """
  max_value = jnp.asarray(MODE_MAX_VALUE)[lookup_index(mode)[0]]
  return (jnp.abs(x) <= max_value * scale).astype(x.dtype)


class STE(str, enum.Enum):
  """Straight-through estimator: identity, or identity masked to the clipping range."""

  IDENTITY = "identity"
  CLIPPED = "clipped"


def fake_quantize(
    x: jax.Array,
    mode: jax.Array | int,
    reduce_axes: Sequence[int] | None = None,
    amax: jax.Array | None = None,
    ste: STE = STE.IDENTITY,
) -> jax.Array:
  """Quantize then dequantize (``values * scale``) with a straight-through gradient.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> g = jax.grad(lambda x: fake_quantize(x, mode_index("int4")).sum())(jnp.ones(3))
    >>> g.tolist()
    [1.0, 1.0, 1.0]
  """
  ste = STE(ste)

  @jax.custom_jvp
  def fq(x, mode, amax):
    values, scale = quantize(x, mode, reduce_axes, amax)
    return (values * scale).astype(x.dtype)

  @fq.defjvp
  def fq_jvp(primals, tangents):
    x, mode, amax = primals
    values, scale = quantize(x, mode, reduce_axes, amax)
    t = tangents[0]
    if ste is STE.CLIPPED:
      t = t * in_range_mask(x, mode, scale)
    return (values * scale).astype(x.dtype), t

  return fq(x, jnp.asarray(mode, jnp.int32), amax)
