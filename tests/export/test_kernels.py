"""Kernels of the exported program against ml_dtypes casts, the DMA and the emulator's PAK."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from aprec.emulator import dma, formats, pak
from aprec.emulator.formats import MODE_TABLE, MODES
from aprec.export import kernels

FLOAT_MODES = [m for m in MODE_TABLE if not m.is_int and m.name != "fp32"]


def _wide_values(n=20000, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(n) * 2.0 ** rng.integers(-30, 18, n)
  specials = [0.0, -0.0, 1.0 + 2**-9, 2**-8, 2**-10, 3 * 2**-17, 65504, 65520, 448, 464]
  return np.concatenate([x, specials, np.negative(specials)]).astype(np.float32)


@pytest.mark.parametrize("mode", FLOAT_MODES, ids=lambda m: m.name)
def test_round_to_mode_is_the_cast(mode):
  x = _wide_values()
  if mode.scaled:  # fp8 operands are clipped to the format's range first
    x = np.clip(x, -mode.max_value, mode.max_value)
  with np.errstate(over="ignore"):
    expected = x.astype(mode.dtype).astype(np.float32)
  eager = np.asarray(formats.round_to_mode(jnp.asarray(x), mode))
  jitted = np.asarray(jax.jit(functools.partial(formats.round_to_mode, mode=mode))(x))
  np.testing.assert_array_equal(eager, expected)
  np.testing.assert_array_equal(jitted, expected)


@pytest.mark.parametrize("mode", MODES)
def test_weight_grid_of_packed_is_the_quantizer_grid(mode):
  w = jax.random.normal(jax.random.key(3), (3, 5, 4)) * 2.0
  packed = dma.pack(w, mode, channel_axes=(2,))
  values, scale = kernels.weight_grid(
      packed.data, packed.scale, packed.shape, formats.mode_index(mode)
  )
  ref_values, ref_scale = formats.quantize(w, formats.mode_index(mode), (0, 1))
  if MODE_TABLE[formats.mode_index(mode)].is_int:
    assert values.dtype == jnp.int8
  np.testing.assert_array_equal(np.asarray(values, np.float32), np.asarray(ref_values))
  np.testing.assert_array_equal(np.broadcast_to(scale, ref_scale.shape), ref_scale)


def _dot(lhs, rhs):
  return lax.dot_general(lhs, rhs, (((1,), (0,)), ((), ())))


def _conv(lhs, rhs):
  return lax.conv_general_dilated(
      lhs, rhs, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["dot", "conv"])
def test_product_equals_the_pak(kind, mode):
  """The emulator quantizes the raw weight; the stored weight holds that grid and scale."""
  m = formats.mode_index(mode)
  k1, k2 = jax.random.split(jax.random.key(7))
  if kind == "dot":
    lhs, rhs = jax.random.normal(k1, (6, 9)), jax.random.normal(k2, (9, 4))
    fn, channels = _dot, (1,)
  else:
    fn, lhs, rhs, channels = (
        _conv,
        jax.random.normal(k1, (2, 5, 5, 3)),
        jax.random.normal(k2, (3, 3, 3, 4)),
        (3,),
    )
  eqn = [
      e
      for e in jax.make_jaxpr(fn)(lhs, rhs).jaxpr.eqns
      if e.primitive.name in ("dot_general", "conv_general_dilated")
  ][0]
  spec = pak.product_spec(
      eqn.primitive, eqn.params, lhs.shape, rhs.shape, eqn.outvars[0].aval.ndim, weight_operand=1
  )
  packed = dma.pack(rhs, m, channels)
  with jax.disable_jit():
    expected = pak.apply(spec, lhs, rhs, m)
    got = kernels.product(spec, lhs, rhs, m, packed, weight_operand=1)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
  # Without a stored weight both operands are activations (an attention matmul).
  with jax.disable_jit():
    np.testing.assert_array_equal(
        np.asarray(kernels.product(spec, lhs, rhs, m)), np.asarray(pak.apply(spec, lhs, rhs, m))
    )


@pytest.mark.parametrize("mode", ["int8", "fp8_e4m3"])
def test_product_scales_back_without_overflowing_in_the_middle(mode):
  """A huge activation against a tiny weight: acc · lhs_scale alone leaves float32."""
  m = formats.mode_index(mode)
  lhs = jnp.array([[3e37, -1.0, 2e37]])
  rhs = jnp.array([[1e-30], [2e-30], [-1e-30]])
  eqn = jax.make_jaxpr(_dot)(lhs, rhs).jaxpr.eqns[0]
  spec = pak.product_spec(eqn.primitive, eqn.params, lhs.shape, rhs.shape, 2, weight_operand=1)
  with jax.disable_jit():
    got = kernels.product(spec, lhs, rhs, m, dma.pack(rhs, m, (1,)), weight_operand=1)
    expected = pak.apply(spec, lhs, rhs, m)
  assert np.isfinite(np.asarray(got)).all()
  np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


@pytest.mark.parametrize("mode", ["int8", "int4", "fp8_e5m2"])
def test_nan_and_inf_in_an_activation_as_the_pak(mode):
  """A NaN or an inf makes its row's scale NaN, as ``ranges.amax_over``."""
  m = formats.mode_index(mode)
  lhs = jax.random.normal(jax.random.key(1), (4, 5)).at[1, 2].set(jnp.nan).at[2, 0].set(jnp.inf)
  rhs = jax.random.normal(jax.random.key(2), (5, 3))
  eqn = jax.make_jaxpr(_dot)(lhs, rhs).jaxpr.eqns[0]
  spec = pak.product_spec(eqn.primitive, eqn.params, lhs.shape, rhs.shape, 2, weight_operand=1)
  packed = dma.pack(rhs, m, (1,))
  ours = lambda lhs: kernels.product(spec, lhs, rhs, m, packed, weight_operand=1)
  theirs = lambda lhs: pak.apply(spec, lhs, rhs, m)
  with jax.disable_jit():
    expected = np.asarray(theirs(lhs))
    np.testing.assert_array_equal(np.asarray(ours(lhs)), expected)
  np.testing.assert_array_equal(np.asarray(jax.jit(ours)(lhs)), expected)
  assert np.isnan(expected[[1, 2]]).all() and np.isfinite(expected[[0, 3]]).all()


@pytest.mark.parametrize(
    "shapes, dn, strides, padding, dilation",
    [
        (((2, 7, 9, 3), (3, 3, 3, 5)), ("NHWC", "HWIO", "NHWC"), (1, 1), "SAME", (1, 1)),
        (((2, 3, 8, 8), (4, 3, 3, 2)), ("NCHW", "OIHW", "NCHW"), (2, 1), "VALID", (1, 1)),
        (((1, 9, 9, 2), (3, 2, 2, 6)), ("NHWC", "HWIO", "NCHW"), (2, 3), ((2, 1), (0, 3)), (2, 1)),
        (((3, 10, 4), (5, 4, 7)), ("NWC", "WIO", "NWC"), (3,), "SAME", (2,)),
        (((2, 3, 4), (6, 4, 5)), ("NWC", "WIO", "NCW"), (1,), "VALID", (1,)),  # empty
        (
            ((1, 4, 5, 6, 2), (2, 3, 2, 2, 3)),
            ("NDHWC", "DHWIO", "NDHWC"),
            (1, 2, 1),
            "SAME",
            (1, 1, 2),
        ),
    ],
)
def test_int8_convolution_as_patches_times_kernel_equals_the_int8_convolution(
    shapes, dn, strides, padding, dilation
):
  # The artifact runs an integer-mode convolution as one int8 matrix product of its input's
  # patches; the integer sums must be the convolution's exactly, in any layout, stride,
  # padding and kernel dilation.
  rng = np.random.default_rng(len(shapes[0]))
  lhs = jnp.asarray(rng.integers(-127, 128, shapes[0]), jnp.int8)
  rhs = jnp.asarray(rng.integers(-127, 128, shapes[1]), jnp.int8)
  conv = lambda a, b: lax.conv_general_dilated(
      a, b, strides, padding, rhs_dilation=dilation, dimension_numbers=dn
  )
  prim, params, _ = pak._params_of(conv, lhs.astype(jnp.float32), rhs.astype(jnp.float32))
  assert kernels._plain_conv(params)
  ours = jax.jit(lambda a, b: kernels._int_conv_as_dot(params, a, b))(lhs, rhs)
  ref = prim.bind(lhs, rhs, **dict(params, preferred_element_type=jnp.int32))
  assert ours.dtype == jnp.int32 and ours.shape == ref.shape
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
