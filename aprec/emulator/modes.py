"""The precision modes of a processing element: ``MODE_TABLE`` and per-mode constant arrays.

``formats`` re-exports all of it and holds the arithmetic. The arrays (``MODE_BITS``,
``MODE_PARAMS``, ...) let a traced mode index look a mode's constants up.

Example:
  >>> from aprec.emulator import modes
  >>> modes.MODE_TABLE[modes.mode_index("fp8_e4m3")].max_value
  448.0
  >>> float(modes.MODE_PARAMS[modes.mode_index("fp16"), modes.PARAM_COLUMNS.index("overflow")])
  65520.0
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np


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
  wrap ``-1`` to the last row.
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


# float32's own subnormals are what reduce_precision already produces for these formats.
_F32_MIN_EXPONENT = -126


# The branch-free quantizer's per-mode constants (``formats.quantize`` with a traced mode
# reads one row), one column each; entries a mode does not use are neutral (0, 1 or inf).
PARAM_COLUMNS = (
    "inv_max",  # float32(1 / max_value): scale = amax · inv_max, as scale_from_amax
    "scaled",  # 1 where operands are scaled to the format's range, else 0 (scale 1)
    "clip",  # max_value: scaled operands are clipped to ±clip
    "drop",  # 23 - mantissa bits: the float32 mantissa bits that rounding clears
    "threshold",  # |x| below it rounds on the fixed grid `step` (subnormals; ints: inf)
    "inv_step",  # 1 / step, a power of two, so x · inv_step is exact
    "step",  # the fixed grid's spacing (fp16 2**-24, e4m3 2**-9, e5m2 2**-16, int 1)
    "overflow",  # |x| from here rounds to ±inf (bf16, fp16 casts; inf for the others)
)


def _mode_params(float16_operand: bool) -> np.ndarray:
  """``[N_MODES, len(PARAM_COLUMNS)]`` float32 table of the quantizer's per-mode constants.

  With a float16 operand the bf16 row also gets float16's subnormal grid: the static path
  rounds a float16 operand with ``reduce_precision`` in float16, whose subnormals keep a
  fixed grid of ``2**-21`` (7 of their 10 bits), where a float32 value keeps 7 bits.
  """
  rows = []
  for m in MODE_TABLE:
    row = dict(inv_max=np.float32(1.0 / m.max_value), scaled=float(m.scaled), clip=m.max_value)
    row.update(drop=23 - m.mantissa_bits, threshold=0.0, inv_step=1.0, step=1.0)
    row.update(overflow=np.inf)
    if m.is_int:  # the fixed grid of step 1 everywhere: round half to even
      row.update(threshold=np.inf)
    elif m.name != "fp32":
      info = ml_dtypes.finfo(m.dtype)
      if not m.scaled:  # max_value plus half an ulp (fp16: 65520) rounds to inf, ties to even
        row.update(overflow=float(info.max) + 2.0 ** (info.maxexp - info.nmant - 2))
      if info.minexp > _F32_MIN_EXPONENT:
        step = 2.0 ** (info.minexp - info.nmant)
        row.update(threshold=float(info.smallest_normal), inv_step=1.0 / step, step=step)
      elif float16_operand and m.name == "bf16":
        row.update(threshold=2.0**-14, inv_step=2.0**21, step=2.0**-21)
    rows.append([row[c] for c in PARAM_COLUMNS])
  return np.array(rows, np.float32)


MODE_PARAMS = _mode_params(float16_operand=False)
_MODE_PARAMS_F16 = _mode_params(float16_operand=True)


def mode_params(dtype) -> np.ndarray:
  """``MODE_PARAMS`` for an operand of ``dtype`` (float16 operands differ in bf16's row)."""
  return _MODE_PARAMS_F16 if np.dtype(dtype) == np.float16 else MODE_PARAMS
