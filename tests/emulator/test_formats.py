import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aprec.emulator import formats
from aprec.emulator.formats import MODE_TABLE, MODES

FLOAT_MODES = [m for m in MODE_TABLE if not m.is_int]
INT_MODES = [m for m in MODE_TABLE if m.is_int]
F32_EXTREMES = np.array(
    [
        0.0,
        -0.0,
        np.inf,
        -np.inf,
        np.nan,
        3.4028235e38,
        -3.4028235e38,
        1e-45,
        -1e-45,
        1.1754944e-38,
        9.18355e-41,
        6e-8,
        3e-8,
        5.9604645e-08,
        65504.0,
        65520.0,
        65519.99,
        448.0,
        464.0,
        480.0,
        57344.0,
        61440.0,
        0.001953125,
        0.0009765625,
        1.52587890625e-05,
        7.62939453125e-06,
        1.0 + 2**-8,
        1.0 + 3 * 2**-8,
    ],
    np.float32,
)

_quantize = jax.jit(formats.quantize, static_argnums=2)


def _same_bits(a, b):
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return np.array_equal(a.view(np.uint32), b.view(np.uint32)) or np.array_equal(
      a, b, equal_nan=True
  )


def test_mode_table():
  assert MODES == ("fp32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "int8", "int4")
  assert [m.bits for m in MODE_TABLE] == [32, 16, 16, 8, 8, 8, 4]
  assert [(m.exponent_bits, m.mantissa_bits) for m in FLOAT_MODES] == [
      (8, 23),
      (8, 7),
      (5, 10),
      (4, 3),
      (5, 2),
  ]
  assert [m.accumulator for m in MODE_TABLE] == ["fp32"] * 5 + ["int32"] * 2
  assert [m.max_value for m in INT_MODES] == [127.0, 7.0]
  with pytest.raises(ValueError, match="unknown precision mode 'int3'.*int8"):
    formats.mode_index("int3")


@pytest.mark.parametrize("mode", FLOAT_MODES, ids=lambda m: m.name)
def test_float_cast_bit_exact_on_extremes(mode):
  ours = jax.jit(formats.cast_round, static_argnums=1)(jnp.asarray(F32_EXTREMES), mode)
  ref = F32_EXTREMES.astype(mode.dtype).astype(np.float32)
  assert _same_bits(ours, ref)


# Casts are elementwise, so one shape serves (and one compilation per mode): hypothesis
# draws the values, NaN, infinities and subnormals included.
f32_vectors = hnp.arrays(
    np.float32,
    (64,),
    elements=st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True),
)


@settings(max_examples=60, deadline=None)
@given(x=f32_vectors)
def test_float_casts_bit_exact_property(x):
  for mode in FLOAT_MODES:
    ref = x.astype(mode.dtype).astype(np.float32)
    assert _same_bits(formats.cast_round(jnp.asarray(x), mode), ref), mode.name


@settings(max_examples=40, deadline=None)
@given(x=f32_vectors)
def test_unscaled_quantize_is_the_cast(x):
  for name in ("fp32", "bf16", "fp16"):
    m = formats.mode_index(name)
    values, scale = _quantize(jnp.asarray(x), jnp.int32(m), None)
    assert _same_bits(values, x.astype(MODE_TABLE[m].dtype).astype(np.float32))
    assert np.all(np.asarray(scale) == 1)


def _ref_scaled(x, mode, reduce_axes):
  """Independent float32 NumPy reference of a scaled mode."""
  amax = np.max(np.abs(x), axis=reduce_axes, keepdims=True).astype(np.float32)
  tiny = np.finfo(np.float32).tiny
  scale = np.where(
      amax < tiny, np.float32(1), np.maximum(amax * np.float32(1.0 / mode.max_value), tiny)
  ).astype(np.float32)
  scaled = np.clip(x * (np.float32(1) / scale), -mode.max_value, mode.max_value).astype(np.float32)
  if mode.is_int:
    return np.round(scaled), scale  # numpy rounds half to even
  return scaled.astype(mode.dtype).astype(np.float32), scale


# Subnormal *inputs* to the scaled modes are excluded: XLA on CPU treats them as zero
# (denormals-are-zero) where NumPy divides them; casts above do cover subnormals.
finite_arrays = hnp.arrays(
    np.float32,
    st.tuples(st.sampled_from([1, 2, 5]), st.sampled_from([1, 3, 6])),  # 9 compiled shapes
    elements=st.floats(-1e4, 1e4, width=32, allow_subnormal=False),
)


@settings(max_examples=60, deadline=None)
@given(x=finite_arrays, per_channel=st.booleans())
def test_scaled_modes_match_numpy(x, per_channel):
  axes = (0,) if per_channel else (0, 1)
  for name in ("fp8_e4m3", "fp8_e5m2", "int8", "int4"):
    m = formats.mode_index(name)
    values, scale = _quantize(jnp.asarray(x), jnp.int32(m), axes)
    ref_values, ref_scale = _ref_scaled(x, MODE_TABLE[m], axes)
    assert _same_bits(scale, ref_scale), name
    assert _same_bits(values, ref_values), name
    if MODE_TABLE[m].is_int:
      assert np.all(np.abs(values) <= MODE_TABLE[m].max_value)
      assert np.all(np.asarray(values) == np.round(values))


def test_round_half_to_even_not_truncation():
  x = jnp.array([127.0, 0.5, 1.5, 2.5, -0.5, -1.5, 0.49, -126.6])  # scale is exactly 1
  values, scale = formats.quantize(x, formats.mode_index("int8"))
  assert float(scale[0]) == 1.0
  assert values.tolist() == [127, 0, 2, 2, -0, -2, 0, -127]


@pytest.mark.parametrize("name", MODES)
def test_zero_tensor_gives_zeros_not_nan(name):
  values, scale = formats.quantize(jnp.zeros((3, 4)), formats.mode_index(name), (1,))
  assert np.all(np.asarray(values) == 0) and np.all(np.isfinite(scale))


def test_static_amax_saturates_and_clipped_ste_masks():
  x = jnp.array([-3.0, -0.5, 0.25, 1.0, 2.0])
  int8 = formats.mode_index("int8")
  values, scale = formats.quantize(x, int8, amax=jnp.float32(1.0))
  assert values.tolist() == [-127, -64, 32, 127, 127]  # saturated outside [-1, 1]
  g_id = jax.grad(lambda x: formats.fake_quantize(x, int8, amax=jnp.float32(1.0)).sum())(x)
  g_clip = jax.grad(
      lambda x: formats.fake_quantize(x, int8, amax=jnp.float32(1.0), ste="clipped").sum()
  )(x)
  assert g_id.tolist() == [1, 1, 1, 1, 1]
  assert g_clip.tolist() == [0, 1, 1, 1, 0]


def test_traced_mode_equals_static_and_never_recompiles():
  x = jax.random.normal(jax.random.key(0), (5, 7)) * 3
  f = jax.jit(lambda x, m: formats.quantize(x, m, (1,)))
  for m in range(len(MODES)):
    traced = f(x, jnp.int32(m))
    static = formats.quantize(x, m, (1,))
    assert _same_bits(traced[0], static[0]) and _same_bits(traced[1], static[1])
  assert f._cache_size() == 1


def test_vmap_over_modes_equals_loop():
  x = jax.random.normal(jax.random.key(1), (4, 3))
  batched = jax.vmap(lambda m: formats.fake_quantize(x, m))(jnp.arange(len(MODES)))
  for m in range(len(MODES)):
    assert _same_bits(batched[m], formats.fake_quantize(x, m))


def test_nan_and_inf_propagate():
  x = jnp.array([1.0, jnp.nan, 2.0])
  for name in MODES:
    assert np.isnan(np.asarray(formats.fake_quantize(x, formats.mode_index(name)))).any(), name
  assert np.isinf(np.asarray(formats.cast_round(jnp.array([1e6]), MODE_TABLE[2]))).all()


def test_mode_indices():
  assert formats.mode_indices(["int8", "fp32"]).tolist() == [5, 0]
  assert formats.mode_indices(["int8"]).dtype == np.int32


def test_fp8_raw_cast_overflow_matches_ml_dtypes():
  x = np.array([500.0, -1e6], np.float32)
  mode = MODE_TABLE[formats.mode_index("fp8_e4m3")]
  assert _same_bits(
      formats.cast_round(jnp.asarray(x), mode), x.astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
  )


@pytest.mark.parametrize("name", ["int8", "fp8_e4m3"])
def test_a_nan_anywhere_makes_the_shared_scale_nan(name):
  # XLA:CPU's max reduction skips a NaN for some shapes (here: 312 tensors reduced at once;
  # found by scripts/fuzz.py); the range, like NumPy's max, must be NaN wherever it sits.
  base = np.asarray(jax.random.normal(jax.random.key(3), (4, 6)) * 100, np.float32)
  xs = np.stack([base] * (13 * base.size))
  position = np.arange(len(xs)) % base.size
  xs.reshape(len(xs), -1)[np.arange(len(xs)), position] = np.nan
  f = jax.jit(jax.vmap(lambda x: formats.quantize(x, jnp.int32(formats.mode_index(name)))))
  values, scale = f(xs)
  assert np.isnan(np.asarray(scale)).all()
  assert np.isnan(np.asarray(values)).all()


def test_quantize_rounds_x_times_reciprocal_compiled_and_op_by_op():
  # 55.5 / (111 * (1/7)) is 3.4999998 divided but 3.5 as 55.5 * (1 / scale), which is what
  # XLA:CPU computed for the division (found by scripts/fuzz.py against a NumPy x / scale).
  # The quantizer spells out the product, so the documented rule, NumPy and XLA agree.
  x = jnp.array(
      [
          [127.0, 79.5, 95.0, -54.0, -68.0, -105.0],
          [-20.0, -62.0, 81.0, 23.5, -29.5, 55.5],
          [118.0, -3.0, -94.5, -90.0, 109.0, 79.5],
          [71.0, -113.5, 98.5, -14.0, -72.0, -111.0],
      ]
  )
  int4 = jnp.int32(formats.mode_index("int4"))
  compiled = jax.jit(lambda x, m: formats.quantize(x, m, (0,)))(x, int4)
  with jax.disable_jit():
    op_by_op = formats.quantize(x, int4, (0,))
  assert _same_bits(compiled[0], op_by_op[0]) and _same_bits(compiled[1], op_by_op[1])
  assert float(compiled[0][1, 5]) == 4.0  # round_half_even(3.5)
  scale = np.float32(111.0) * np.float32(1 / 7)
  assert np.float32(55.5) * (np.float32(1) / scale) == 3.5


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2"])
def test_fp8_quantizer_has_no_cast_pair_xla_could_drop(name):
  # XLA's excess-precision pass (GPU, CPU with oneDNN) may remove f32 -> fp8 -> f32; the
  # quantizer rounds with reduce_precision instead, and still gives the cast's bits.
  mode = formats.mode_index(name)
  x = jnp.asarray(F32_EXTREMES[np.isfinite(F32_EXTREMES)])
  hlo = jax.jit(lambda v: formats.quantize(v, mode)[0]).lower(x).as_text()
  assert "f8" not in hlo and "reduce_precision" in hlo
  values, scale = formats.quantize(x, mode)
  scaled = np.clip(
      np.asarray(x) * (np.float32(1) / np.asarray(scale)),
      -MODE_TABLE[mode].max_value,
      MODE_TABLE[mode].max_value,
  )
  assert _same_bits(values, scaled.astype(MODE_TABLE[mode].dtype).astype(np.float32))


_SPECIALS = np.array(
    [0.0, np.inf, np.nan, 65504.0, 65519.99, 65520.0, 2.0**-14, 2.0**-24, 2.0**-25, 1e-40]
    + [448.0, 449.0, 57344.0, 3e38, 1.0 + 2**-8, 1.0 + 3 * 2**-8, 0.5, 2.5],
    np.float32,
)


def _traced_vs_static_operands():
  rng = np.random.default_rng(0)
  normals = [rng.standard_normal((24, 9)) * s for s in (1e-8, 1e-5, 1e-2, 1, 1e2, 1e4, 1e6)]
  specials = np.concatenate([_SPECIALS, -_SPECIALS])
  # Every special value once in each row and each column, next to ordinary values.
  mixed = rng.standard_normal((specials.size, specials.size)) * 10
  mixed[np.arange(specials.size), rng.permutation(specials.size)] = specials
  return [np.asarray(x, np.float32) for x in [*normals, specials[None, :], mixed]]


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.float16])
def test_traced_quantize_is_the_static_path_bit_for_bit(dtype):
  # The traced path is one branch-free computation; the static path runs each mode's own
  # code (casts, reduce_precision, jnp.round). One compilation per shape serves every mode,
  # every axis choice and both a tensor's own and a calibrated range.
  traced = jax.jit(formats.quantize, static_argnums=2)
  modes = range(-1, len(MODES) + 1)  # -1 and N_MODES: out of range, NaN
  checked = 0
  for x in _traced_vs_static_operands():
    with np.errstate(over="ignore"):  # float16: 1e6 and 3e38 become inf
      x = jnp.asarray(x.astype(dtype))
    for axes in [(0,), (1,), (0, 1)]:
      calibrated = jnp.float32(3.0)
      for amax in (None, calibrated):
        for m in modes:
          values, scale = traced(x, jnp.int32(m), axes, amax)
          assert values.dtype == x.dtype and scale.dtype == jnp.float32
          if not 0 <= m < len(MODES):
            assert np.isnan(np.asarray(values, np.float32)).all()
            assert np.isnan(np.asarray(scale)).all()
            continue
          ref_values, ref_scale = formats.quantize(x, m, axes, amax)
          assert _same_bits(values, ref_values), (MODES[m], axes, amax, dtype)
          assert _same_bits(scale, ref_scale), (MODES[m], axes, amax, dtype)
          checked += 1
  assert checked == 9 * 3 * 2 * len(MODES)


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.float16])
def test_integer_quantizer_is_the_static_path_bit_for_bit(dtype):
  # pak's integer branch quantizes with quantize_integer: for the integer modes it must be
  # quantize's own result, on normal values, the specials and calibrated ranges.
  traced = jax.jit(formats.quantize_integer, static_argnums=2)
  for x in _traced_vs_static_operands():
    with np.errstate(over="ignore"):
      x = jnp.asarray(x.astype(dtype))
    for axes in [(0,), (1,), (0, 1)]:
      for amax in (None, jnp.float32(3.0)):
        for name in ("int8", "int4"):
          m = formats.mode_index(name)
          values, scale = traced(x, jnp.int32(m), axes, amax)
          ref_values, ref_scale = formats.quantize(x, m, axes, amax)
          assert values.dtype == x.dtype
          assert _same_bits(values, ref_values) and _same_bits(scale, ref_scale), (name, axes)
