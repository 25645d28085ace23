import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from aprec.emulator import formats
from aprec.emulator import pak
from aprec.emulator.formats import MODE_TABLE, MODES

DN = (((1,), (0,)), ((), ()))
CONV_DN = ("NHWC", "HWIO", "NHWC")
INT8, INT4 = formats.mode_index("int8"), formats.mode_index("int4")
PER_TENSOR = "per_tensor"  # the references below quantize activations per tensor


def _np_quant(x, mode, axes):
  """Independent reference of the symmetric quantizer, in float32 NumPy."""
  amax = np.max(np.abs(x), axis=axes, keepdims=True).astype(np.float32)
  tiny = np.finfo(np.float32).tiny
  scale = np.where(
      amax < tiny, np.float32(1), np.maximum(amax * np.float32(1.0 / mode.max_value), tiny)
  )
  q = np.clip(x * (np.float32(1) / scale.astype(np.float32)), -mode.max_value, mode.max_value)
  if mode.is_int:
    return np.round(q).astype(np.int64), scale.astype(np.float32)
  return q.astype(mode.dtype).astype(np.float32), scale.astype(np.float32)


@pytest.fixture(scope="module")
def xw():
  x = np.asarray(jax.random.normal(jax.random.key(0), (5, 24)) * 2, np.float32)
  w = np.asarray(jax.random.normal(jax.random.key(1), (24, 6)), np.float32)
  return x, w


@pytest.mark.parametrize("mode", [INT8, INT4])
def test_int_dot_equals_int64_numpy(xw, mode):
  x, w = xw
  ql, sl = _np_quant(x, MODE_TABLE[mode], (0, 1))  # activation: per tensor
  qr, sr = _np_quant(w, MODE_TABLE[mode], (0,))  # weight: per output channel
  acc = ql @ qr  # exact int64 accumulation
  ref = (acc.astype(np.float32) * sl.reshape(())) * sr.reshape(1, -1)
  ours = jax.jit(lambda x, w, m: pak.dot_general(x, w, m, DN, activation_scaling=PER_TENSOR))(
      x, w, jnp.int32(mode)
  )
  np.testing.assert_array_equal(np.asarray(ours), ref)


def test_int_dot_beyond_float_exact_range_accumulates_in_int32():
  # K * 127**2 >= 2**24: the kernel switches to a true int8 x int8 -> int32 product.
  x = np.asarray(jax.random.normal(jax.random.key(8), (3, 2048)), np.float32)
  w = np.asarray(jax.random.normal(jax.random.key(9), (2048, 2)), np.float32)
  spec = pak.product_spec(
      lax.dot_general_p,
      dict(
          dimension_numbers=DN,
          precision=None,
          preferred_element_type=jnp.float32,
          out_sharding=None,
      ),
      x.shape,
      w.shape,
      2,
      weight_operand=1,
      activation_scaling=PER_TENSOR,
  )
  assert not spec.int_exact_in_float
  ql, sl = _np_quant(x, MODE_TABLE[INT8], (0, 1))
  qr, sr = _np_quant(w, MODE_TABLE[INT8], (0,))
  ref = ((ql @ qr).astype(np.float32) * sl.reshape(())) * sr.reshape(1, -1)
  np.testing.assert_array_equal(
      np.asarray(jax.jit(pak.apply, static_argnums=0)(spec, x, w, jnp.int32(INT8))), ref
  )


@pytest.mark.parametrize("k", [64, pak.INT_DOT_MIN_CONTRACTION + 128])
def test_int_dot_choice_by_size_gives_the_int64_product(k):
  # Below INT_DOT_MIN_CONTRACTION integer modes multiply float32 grid values, from it on
  # int8 x int8 -> int32; both are exact here (K * 127**2 < 2**24), so both equal NumPy.
  x = np.asarray(jax.random.normal(jax.random.key(k), (4, k)), np.float32)
  w = np.asarray(jax.random.normal(jax.random.key(k + 1), (k, 3)), np.float32)
  spec = pak.product_spec(
      lax.dot_general_p,
      dict(
          dimension_numbers=DN,
          precision=None,
          preferred_element_type=jnp.float32,
          out_sharding=None,
      ),
      x.shape,
      w.shape,
      2,
      weight_operand=1,
      activation_scaling=PER_TENSOR,
  )
  assert spec.int_exact_in_float and spec.int_dot == (k >= pak.INT_DOT_MIN_CONTRACTION)
  ql, sl = _np_quant(x, MODE_TABLE[INT8], (0, 1))
  qr, sr = _np_quant(w, MODE_TABLE[INT8], (0,))
  ref = ((ql @ qr).astype(np.float32) * sl.reshape(())) * sr.reshape(1, -1)
  np.testing.assert_array_equal(
      np.asarray(jax.jit(pak.apply, static_argnums=0)(spec, x, w, jnp.int32(INT8))), ref
  )


def _np_conv_nhwc(x, k):
  """Reference 'SAME' stride-1 convolution in int64/float64 by explicit windows."""
  kh, kw = k.shape[:2]
  ph, pw = (kh - 1) // 2, (kw - 1) // 2
  xp = np.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
  out = np.zeros(x.shape[:3] + (k.shape[3],), dtype=np.result_type(x, k))
  for i in range(x.shape[1]):
    for j in range(x.shape[2]):
      win = xp[:, i : i + kh, j : j + kw, :]
      out[:, i, j, :] = np.einsum("bhwc,hwco->bo", win, k)
  return out


@pytest.mark.parametrize("mode", [INT8, INT4])
def test_int_conv_equals_int64_numpy(mode):
  x = np.asarray(jax.random.normal(jax.random.key(2), (2, 5, 5, 3)), np.float32)
  k = np.asarray(jax.random.normal(jax.random.key(3), (3, 3, 3, 4)), np.float32)
  ql, sl = _np_quant(x, MODE_TABLE[mode], (0, 1, 2, 3))
  qr, sr = _np_quant(k, MODE_TABLE[mode], (0, 1, 2))
  ref = _np_conv_nhwc(ql, qr).astype(np.float32) * sl.reshape(()) * sr.reshape(1, 1, 1, -1)
  ours = pak.conv_general_dilated(
      x,
      k,
      jnp.int32(mode),
      (1, 1),
      "SAME",
      dimension_numbers=CONV_DN,
      activation_scaling=PER_TENSOR,
  )
  np.testing.assert_array_equal(np.asarray(ours), ref)


@pytest.mark.parametrize("name", ["bf16", "fp16", "fp8_e4m3", "fp8_e5m2"])
def test_float_modes_match_float64_reference(xw, name):
  x, w = xw
  mode = MODE_TABLE[formats.mode_index(name)]
  axes_l, axes_r = ((0, 1), (0,)) if mode.scaled else ((0, 1), (0,))
  if mode.scaled:
    ql, sl = _np_quant(x, mode, axes_l)
    qr, sr = _np_quant(w, mode, axes_r)
  else:
    ql, sl = x.astype(mode.dtype).astype(np.float32), np.ones((1, 1), np.float32)
    qr, sr = w.astype(mode.dtype).astype(np.float32), np.ones((1, w.shape[1]), np.float32)
  ref = (ql.astype(np.float64) @ qr.astype(np.float64)) * sl.reshape(()) * sr.reshape(1, -1)
  ours = pak.dot_general(x, w, formats.mode_index(name), DN, activation_scaling=PER_TENSOR)
  np.testing.assert_allclose(np.asarray(ours), ref, rtol=2e-6, atol=1e-6)


def test_fp32_is_the_original_op_bit_for_bit(xw):
  x, w = xw
  assert np.array_equal(pak.dot_general(x, w, 0, DN), lax.dot_general(x, w, DN))
  xi = jax.random.normal(jax.random.key(4), (2, 6, 6, 3))
  k = jax.random.normal(jax.random.key(5), (3, 3, 3, 4))
  ref = lax.conv_general_dilated(xi, k, (1, 1), "SAME", dimension_numbers=CONV_DN)
  ours = pak.conv_general_dilated(xi, k, 0, (1, 1), "SAME", dimension_numbers=CONV_DN)
  assert np.array_equal(ours, ref)


def test_gradients_straight_through(xw):
  x, w = xw
  loss = lambda x, w, m: jnp.sum(
      jnp.sin(pak.dot_general(x, w, m, DN, activation_scaling=PER_TENSOR))
  )
  g_fp32 = jax.grad(loss, argnums=(0, 1))(x, w, 0)
  g_ref = jax.grad(lambda x, w: jnp.sum(jnp.sin(x @ w)), argnums=(0, 1))(x, w)
  for a, b in zip(g_fp32, g_ref):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # int8: the gradient is the product's gradient at the dequantized operands.
  ql, sl = _np_quant(x, MODE_TABLE[INT8], (0, 1))
  qr, sr = _np_quant(w, MODE_TABLE[INT8], (0,))
  x_hat, w_hat = ql * sl, qr * sr
  y = np.asarray(pak.dot_general(x, w, INT8, DN, activation_scaling=PER_TENSOR), np.float64)
  g_out = np.cos(y)
  gx, gw = jax.grad(loss, argnums=(0, 1))(x, w, INT8)
  np.testing.assert_allclose(gx, g_out @ w_hat.T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(gw, x_hat.T @ g_out, rtol=1e-5, atol=1e-5)


def test_clipped_ste_masks_saturated_values():
  x = jnp.array([[2.0, 0.5]])
  w = jnp.ones((2, 1))
  f = lambda x: pak.apply(
      pak.product_spec(
          lax.dot_general_p,
          dict(
              dimension_numbers=DN,
              precision=None,
              preferred_element_type=jnp.float32,
              out_sharding=None,
          ),
          x.shape,
          w.shape,
          2,
          weight_operand=1,
          ste="clipped",
      ),
      x,
      w,
      INT8,
      jnp.float32(1.0),
      None,
  ).sum()
  assert jax.grad(f)(x).tolist() == [[0.0, 1.0]]


def test_vmap_over_modes_equals_loop_and_one_compile(xw):
  x, w = xw
  f = jax.jit(lambda m: pak.dot_general(x, w, m, DN))
  batched = jax.vmap(f)(jnp.arange(len(MODES)))
  for m in range(len(MODES)):
    np.testing.assert_array_equal(np.asarray(batched[m]), np.asarray(f(jnp.int32(m))))
  assert f._cache_size() == 1


def test_per_token_scales(xw):
  x, w = xw
  ql, sl = _np_quant(x, MODE_TABLE[INT8], (1,))
  qr, sr = _np_quant(w, MODE_TABLE[INT8], (0,))
  ref = ((ql @ qr).astype(np.float32) * sl) * sr.reshape(1, -1)
  ours = pak.dot_general(x, w, INT8, DN, activation_scaling="per_token")
  np.testing.assert_array_equal(np.asarray(ours), ref)


def test_per_example_scales(xw):
  x, w = xw
  ql, sl = _np_quant(x, MODE_TABLE[INT8], (1,))  # rank 2: one example is one row
  qr, sr = _np_quant(w, MODE_TABLE[INT8], (0,))
  ref = ((ql @ qr).astype(np.float32) * sl) * sr.reshape(1, -1)
  ours = pak.dot_general(x, w, INT8, DN, activation_scaling="per_example")
  np.testing.assert_array_equal(np.asarray(ours), ref)
  # rank 3 (batch, token, feature): one scale per example over all its tokens.
  x3 = np.array(jax.random.normal(jax.random.key(10), (3, 4, 24)), np.float32)
  x3[1] *= 10.0
  ql, sl = _np_quant(x3, MODE_TABLE[INT8], (1, 2))
  ref = (np.einsum("btk,kc->btc", ql, qr).astype(np.float32) * sl) * sr.reshape(1, 1, -1)
  ours = pak.dot_general(x3, w, INT8, (((2,), (0,)), ((), ())), activation_scaling="per_example")
  np.testing.assert_array_equal(np.asarray(ours), ref)


@pytest.mark.parametrize("scaling", ["per_example", "per_token"])
def test_conv_scales_per_example(scaling):
  x = np.array(jax.random.normal(jax.random.key(2), (3, 5, 5, 3)), np.float32)
  x[2] *= 20.0
  k = np.asarray(jax.random.normal(jax.random.key(3), (3, 3, 3, 4)), np.float32)
  ql, sl = _np_quant(x, MODE_TABLE[INT8], (1, 2, 3))
  qr, sr = _np_quant(k, MODE_TABLE[INT8], (0, 1, 2))
  ref = _np_conv_nhwc(ql, qr).astype(np.float32) * sl * sr.reshape(1, 1, 1, -1)
  ours = pak.conv_general_dilated(
      x, k, INT8, (1, 1), "SAME", dimension_numbers=CONV_DN, activation_scaling=scaling
  )
  np.testing.assert_array_equal(np.asarray(ours), ref)


def test_batched_dot_scales_line_up():
  # 'bij,bjk->bik' with a weight that has a batch axis: per-(batch, channel) scales.
  x = jax.random.normal(jax.random.key(6), (3, 4, 5))
  w = jax.random.normal(jax.random.key(7), (3, 5, 2)) * jnp.arange(1.0, 4.0)[:, None, None]
  dn = (((2,), (1,)), ((0,), (0,)))
  ours = pak.dot_general(x, w, INT8, dn, activation_scaling=PER_TENSOR)
  xn, wn = np.asarray(x), np.asarray(w)
  ql, sl = _np_quant(xn, MODE_TABLE[INT8], (0, 1, 2))
  qr, sr = _np_quant(wn, MODE_TABLE[INT8], (1,))
  ref = np.einsum("bij,bjk->bik", ql, qr).astype(np.float32) * sl.reshape(()) * sr
  np.testing.assert_array_equal(np.asarray(ours), ref)


def test_zero_operand_and_nan():
  z = pak.dot_general(jnp.zeros((2, 3)), jnp.ones((3, 2)), INT4, DN)
  assert np.array_equal(z, np.zeros((2, 2)))
  nan = pak.dot_general(jnp.array([[jnp.nan, 1.0]]), jnp.ones((2, 1)), 0, DN)
  assert np.isnan(nan).all()


@pytest.mark.parametrize("name", ["int8", "fp8_e4m3"])
def test_scale_back_does_not_overflow_in_the_middle(name):
  # A huge activation against a tiny weight: acc * lhs_scale alone exceeds float32 while the
  # result fits (found by scripts/fuzz.py). The float64 reference is finite.
  x = np.array([[3e37, -1.0, 2e37]], np.float32)
  w = np.array([[1e-30], [2e-30], [-1e-30]], np.float32)
  mode = MODE_TABLE[formats.mode_index(name)]
  ql, sl = _np_quant(x, mode, (0, 1))
  qr, sr = _np_quant(w, mode, (0,))
  ref = (ql.astype(np.float64) @ qr.astype(np.float64)) * float(sl.reshape(())) * sr
  ours = jax.jit(lambda x, w, m: pak.dot_general(x, w, m, DN))(
      x, w, jnp.int32(formats.mode_index(name))
  )
  assert np.isfinite(ref).all()
  np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-6)


def _bdot_spec(x, w):
  """Spec of the batched product ``bmk,bkn->bmn`` (both operands activations, per token)."""
  dn = (((2,), (1,)), ((0,), (0,)))
  prim, params, out_ndim = pak._params_of(lambda a, b: lax.dot_general(a, b, dn), x, w)
  return pak.product_spec(prim, params, x.shape, w.shape, out_ndim, weight_operand=None)


def test_large_products_use_int_dots_whatever_their_k():
  # Attention-sized batched products (K = 32, 2**24 MACs and more) run as int8 dots; small
  # ones multiply float32 grid values. Both are exact, so both equal the int64 product.
  rng = np.random.default_rng(0)
  for batch, expect_int in ((16, True), (1, False)):
    x = rng.standard_normal((batch, 128, 32)).astype(np.float32)
    w = rng.standard_normal((batch, 32, 256)).astype(np.float32)
    spec = _bdot_spec(x, w)
    assert spec.int_exact_in_float and spec.int_dot == expect_int
    for mode in (INT8, INT4):
      ql, sl = _np_quant(x, MODE_TABLE[mode], (2,))  # one scale per row of x
      qr, sr = _np_quant(w, MODE_TABLE[mode], (1,))  # one per column of w
      acc = np.einsum("bmk,bkn->bmn", ql, qr)  # int64
      ref = (acc.astype(np.float32) * sl) * sr
      for m in (jnp.int32(mode), mode):  # traced, then known
        ours = jax.jit(pak.apply, static_argnums=(0, 3) if isinstance(m, int) else 0)(spec, x, w, m)
        np.testing.assert_array_equal(np.asarray(ours), ref)


@pytest.mark.parametrize("batch", [1, 16])
def test_traced_modes_are_the_known_modes_bit_for_bit(batch):
  # The traced kernel branches once between the integer and the float modes, and carries a
  # float accumulator across the branch as int32 bits: every mode, and an out-of-range
  # one, must give exactly what that mode's own (known-mode) code gives.
  rng = np.random.default_rng(batch)
  x = (rng.standard_normal((batch, 128, 32)) * 3).astype(np.float32)
  w = rng.standard_normal((batch, 32, 256)).astype(np.float32)
  spec = _bdot_spec(x, w)
  traced = jax.jit(pak.apply, static_argnums=0)
  for m in range(len(MODES)):
    known = jax.jit(pak.apply, static_argnums=(0, 3))(spec, x, w, m)
    ours = traced(spec, x, w, jnp.int32(m))
    assert np.array_equal(np.asarray(ours).view(np.uint32), np.asarray(known).view(np.uint32))
  assert np.isnan(np.asarray(traced(spec, x, w, jnp.int32(len(MODES))))).all()


def test_scale_back_is_the_first_order_product_bit_for_bit():
  # Rebalancing the scales by a power of two is exact: in the normal range the result is
  # (acc * lhs_scale) * rhs_scale, bit for bit, as float32 NumPy computes it.
  rng = np.random.default_rng(1)
  acc = rng.integers(-(2**20), 2**20, (64, 48)).astype(np.float32)
  ls = np.exp2(rng.uniform(-40, 40, (64, 1))).astype(np.float32)
  rs = np.exp2(rng.uniform(-40, 40, (1, 48))).astype(np.float32)
  ours = np.asarray(jax.jit(pak.scale_back)(acc, ls, rs))
  assert np.array_equal(ours.view(np.uint32), ((acc * ls) * rs).view(np.uint32))


@pytest.mark.parametrize("lhs_huge", [True, False])
def test_scale_back_stays_finite_where_the_result_fits(lhs_huge):
  # One scale near float32's top and the other near its bottom: the first product alone
  # leaves the range in one order or the other; the float64 result fits.
  big, small = np.float32(2.0**120), np.float32(2.0**-110)
  ls, rs = (big, small) if lhs_huge else (small, big)
  acc = np.array([[3.0e6, -5.0e5, 0.0, 1.0]], np.float32)
  ours = np.asarray(jax.jit(pak.scale_back)(acc, np.full((1, 1), ls), np.full((1, 4), rs)))
  ref = acc.astype(np.float64) * float(ls) * float(rs)
  np.testing.assert_allclose(ours, ref, rtol=1e-6)


@pytest.mark.parametrize("channels, branches", [(16, False), (128, True)])
def test_small_convolutions_skip_the_branch_and_keep_every_modes_bits(channels, branches):
  # A convolution whose integer products float32 holds exactly (3 x 3 x 16 = 144 terms)
  # runs one branch-free computation for every traced mode; a larger one (3 x 3 x 128 =
  # 1152 terms: int8 products) keeps the integer/float cond. Either way every mode, and an
  # out-of-range one, gives what that mode's own code gives, bit for bit.
  rng = np.random.default_rng(channels)
  x = (rng.standard_normal((2, 6, 6, channels)) * 3).astype(np.float32)
  w = rng.standard_normal((3, 3, channels, 8)).astype(np.float32)
  conv = lambda v, k, m: pak.conv_general_dilated(
      v, k, m, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  jaxpr = jax.make_jaxpr(conv)(x, w, jnp.int32(0))
  assert ("cond" in str(jaxpr)) == branches
  traced = jax.jit(conv)
  for m in range(len(MODES)):
    known = jax.jit(conv, static_argnums=2)(x, w, m)
    ours = traced(x, w, jnp.int32(m))
    assert np.array_equal(np.asarray(ours).view(np.uint32), np.asarray(known).view(np.uint32)), m
  assert np.isnan(np.asarray(traced(x, w, jnp.int32(len(MODES))))).all()
