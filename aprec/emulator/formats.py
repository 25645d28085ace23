"""Precision modes of a processing element and the arithmetic of each.

One table, ``MODE_TABLE``, describes every mode; everything else indexes it. A mode fixes
the number format of both operands of an op and its accumulator.

Float modes round exactly like the real dtype casts (they *are* the casts). Integer modes
are symmetric: ``q = clip(round_half_even(x * (1 / scale)), -qmax, qmax)`` with
``scale = amax * (1 / qmax)``; an all-zero tensor gets ``scale = 1`` and quantizes to zeros.
FP8 modes are scaled the same way (``scale = amax * (1 / max_value)``) and saturate, as deployed
FP8 pipelines do; BF16 and FP16 are plain casts (overflow gives inf, like the cast).

Example:
  >>> import jax.numpy as jnp
  >>> from aprec.emulator import formats
  >>> q, scale = formats.quantize(jnp.array([0.5, -1.0, 0.26]), formats.mode_index("int8"))
  >>> [int(v) for v in q], round(float(scale[0]) * 127, 6)
  ([64, -127, 33], 1.0)
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax import lax


class Kind(str, enum.Enum):
  FLOAT = "float"
  INT = "int"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Mode:
  """One precision mode of a processing element.

  Attributes:
    name: the mode's name, e.g. ``"fp8_e4m3"``.
    bits: storage bits per element.
    kind: ``Kind.FLOAT`` or ``Kind.INT``.
    exponent_bits, mantissa_bits: float layout (0 and ``bits - 1`` for integers).
    accumulator: ``"fp32"`` or ``"int32"``.
    max_value: largest finite magnitude (``qmax`` for integers).
    scaled: whether operands are scaled to the format's range before rounding.
    dtype: the numpy/ml_dtypes dtype whose cast defines the rounding (None for ints).
  """

  name: str
  bits: int
  kind: Kind
  exponent_bits: int
  mantissa_bits: int
  accumulator: str
  max_value: float
  scaled: bool
  dtype: np.dtype | None

  @property
  def is_int(self) -> bool:
    return self.kind is Kind.INT


def _float_mode(name: str, dtype, *, scaled: bool) -> Mode:
  info = ml_dtypes.finfo(dtype)
  return Mode(
      name=name,
      bits=info.bits,
      kind=Kind.FLOAT,
      exponent_bits=info.nexp,
      mantissa_bits=info.nmant,
      accumulator="fp32",
      max_value=float(info.max),
      scaled=scaled,
      dtype=np.dtype(dtype),
  )


def _int_mode(name: str, bits: int) -> Mode:
  return Mode(
      name=name,
      bits=bits,
      kind=Kind.INT,
      exponent_bits=0,
      mantissa_bits=bits - 1,
      accumulator="int32",
      max_value=float(2 ** (bits - 1) - 1),
      scaled=True,
      dtype=None,
  )


MODE_TABLE: tuple[Mode, ...] = (
    _float_mode("fp32", np.float32, scaled=False),
    _float_mode("bf16", ml_dtypes.bfloat16, scaled=False),
    _float_mode("fp16", np.float16, scaled=False),
    _float_mode("fp8_e4m3", ml_dtypes.float8_e4m3fn, scaled=True),
    _float_mode("fp8_e5m2", ml_dtypes.float8_e5m2, scaled=True),
    _int_mode("int8", 8),
    _int_mode("int4", 4),
)
MODES: tuple[str, ...] = tuple(m.name for m in MODE_TABLE)
N_MODES = len(MODES)

# Per-mode constants as arrays, so a traced mode index can look them up.
MODE_BITS = np.array([m.bits for m in MODE_TABLE], np.int32)
MODE_IS_INT = np.array([m.is_int for m in MODE_TABLE], bool)
MODE_MAX_VALUE = np.array([m.max_value for m in MODE_TABLE], np.float32)
MODE_SCALED = np.array([m.scaled for m in MODE_TABLE], bool)


def mode_index(name: str) -> int:
  """Index of a mode in ``MODE_TABLE``; raises ``ValueError`` naming the known modes."""
  try:
    return MODES.index(name)
  except ValueError:
    raise ValueError(f"unknown precision mode {name!r}; known modes: {', '.join(MODES)}") from None


def mode_indices(names: Sequence[str]) -> np.ndarray:
  """An int32 assignment array from mode names."""
  return np.array([mode_index(n) for n in names], np.int32)


def lookup_index(mode: jax.Array | int) -> tuple[jax.Array, jax.Array]:
  """``(index, valid)``: a traced mode index made safe for table lookups, and its validity.

  Every per-mode lookup goes through this, so they agree on an out-of-range index: it reads
  row 0 and ``valid`` is False (callers turn the result into NaN). Plain indexing would
  wrap ``-1`` to the last row while ``lax.switch`` clamps it to the first.
  """
  mode = jnp.asarray(mode, jnp.int32)
  valid = (mode >= 0) & (mode < N_MODES)
  return jnp.where(valid, mode, 0), valid


def static_mode(mode: int) -> Mode:
  """The mode with a Python index; raises ``ValueError`` for an index out of range."""
  if not 0 <= int(mode) < N_MODES:
    raise ValueError(
        f"mode index {int(mode)} is out of range; valid indices are "
        f"0..{N_MODES - 1} ({', '.join(MODES)})"
    )
  return MODE_TABLE[int(mode)]


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


# float32's own subnormals are what reduce_precision already produces for these formats.
_F32_MIN_EXPONENT = -126


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
  amax = amax.astype(jnp.float32)
  tiny = np.finfo(np.float32).tiny
  return jnp.where(
      amax < tiny, jnp.float32(1), jnp.maximum(amax * np.float32(1.0 / max_value), tiny)
  )


def amax_over(x: jax.Array, reduce_axes: Sequence[int]) -> jax.Array:
  """``max |x|`` over ``reduce_axes``, keeping dims so it broadcasts against ``x``.

  NaN where any element is NaN, as NumPy's max: XLA:CPU's max reduction skips a NaN for
  some shapes, so the check is explicit (a silently finite scale would hide the NaN).
  """
  axes = tuple(reduce_axes)
  amax = jnp.max(jnp.abs(x), axis=axes, keepdims=True)
  return jnp.where(jnp.any(jnp.isnan(x), axis=axes, keepdims=True), jnp.nan, amax)


def range_of(x: jax.Array, reduce_axes: Sequence[int], amax: jax.Array | None = None) -> jax.Array:
  """The range a scale is computed from: ``amax_over(x, reduce_axes)``, or a fixed ``amax``
  (static calibration) broadcast to that shape.

  Example:
    >>> import jax.numpy as jnp
    >>> range_of(jnp.array([[1.0, -3.0], [2.0, 0.5]]), (1,)).tolist()
    [[3.0], [2.0]]
  """
  if amax is None:
    return amax_over(x, reduce_axes)
  keep_shape = tuple(1 if i in reduce_axes else d for i, d in enumerate(x.shape))
  return jnp.broadcast_to(amax, keep_shape)


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


def quantize(
    x: jax.Array,
    mode: jax.Array | int,
    reduce_axes: Sequence[int] | None = None,
    amax: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Quantize ``x`` to the mode with (possibly traced) index ``mode``.

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
  """
  if reduce_axes is None:
    reduce_axes = tuple(range(x.ndim))
  keep_shape = tuple(1 if i in reduce_axes else d for i, d in enumerate(x.shape))

  def branch(m: Mode):
    def run(x):
      if not m.scaled:
        return _quantize_static(x, m, jnp.zeros(keep_shape, jnp.float32))
      return _quantize_static(x, m, range_of(x, reduce_axes, amax))

    return run

  if isinstance(mode, (int, np.integer)):
    return branch(static_mode(mode))(x)
  index, valid = lookup_index(mode)
  values, scale = lax.switch(index, [branch(m) for m in MODE_TABLE], x)
  nan = jnp.asarray(jnp.nan, values.dtype)
  return jnp.where(valid, values, nan), jnp.where(valid, scale, jnp.float32(jnp.nan))


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
