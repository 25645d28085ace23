"""One matmul or convolution in a mode fixed at export time, on weights in their storage format.

The emulator's PAK switches modes at run time (a traced index); an exported program knows
each op's mode, so it runs only that mode's arithmetic:

- integer modes: both operands on the int8 grid (int4 weights unpacked from two per byte),
  one ``lax.dot_general``/``conv_general_dilated`` with ``preferred_element_type=int32``
  (a convolution as the matrix product of its input's patches with the kernel, where it
  has no groups or input dilation), the int32 accumulator times the scales;
- float modes: operands rounded to the format in float32 (``lax.reduce_precision`` plus an
  exact rounding for the format's subnormals, which XLA cannot elide as it may a
  cast round trip), a float32-accumulated product, times the scales (fp8 only);
- fp32: the model's own product.

Activations are quantized at run time exactly as the emulator does (``formats.quantize``
defines the grid); weights come from ``dma.pack`` bytes, so every grid value and scale is
the emulator's, bit for bit.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from aprec.emulator import dma, formats, pak
from aprec.emulator.dma import Packed
from aprec.emulator.formats import MODE_TABLE
from aprec.emulator.pak import ProductSpec


def weight_grid(
    data: jax.Array, scale: jax.Array, shape: tuple[int, ...], mode: int
) -> tuple[jax.Array, jax.Array]:
  """``(grid values, scale)`` of a stored weight: int8 for integer modes, float32 otherwise.

  ``data``/``scale`` are a ``dma.Packed``'s arrays; integer grids stay int8 so the product
  can run on integers; unscaled modes return a scale of ones shaped like ``dma.unpack``'s.
  """
  fmt = MODE_TABLE[mode]
  if fmt.is_int and fmt.bits == 4:
    values = dma.unpack_int4(data, math.prod(shape)).reshape(shape)
  elif fmt.is_int:
    values = lax.bitcast_convert_type(data, jnp.int8).reshape(shape)
  elif fmt.scaled:
    values = lax.bitcast_convert_type(data, fmt.dtype).astype(jnp.float32).reshape(shape)
  else:
    values = data.astype(jnp.float32)
  if not fmt.scaled:
    scale = jnp.ones((1,) * len(shape), jnp.float32)
  return values, scale


def _activation(
    x: jax.Array, mode: int, reduce_axes, amax: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
  """An activation on the mode's grid, with the emulator's scale (``formats.quantize``'s).

  Integer modes: ``formats.quantize``'s grid as int8. Float modes: ``formats.quantize``
  rounds with ``reduce_precision`` (fp8 through ``formats.round_to_mode``), which XLA keeps.
  """
  values, scale = formats.quantize(x, mode, reduce_axes, amax)
  return (values.astype(jnp.int8) if MODE_TABLE[mode].is_int else values), scale


def _int_product(contraction: ProductSpec, lhs: jax.Array, rhs: jax.Array) -> jax.Array:
  """int8 x int8 -> int32: the model's primitive with an int32 accumulator (a convolution
  as one matrix product of its input's patches, ``_int_conv_as_dot``, where it can)."""
  if contraction.primitive.name == "conv_general_dilated" and _plain_conv(contraction.params):
    return _int_conv_as_dot(contraction.params, lhs.astype(jnp.int8), rhs.astype(jnp.int8))
  return contraction.int_product(lhs, rhs, as_int32=True)


def _plain_conv(params: dict) -> bool:
  """A convolution ``_int_conv_as_dot`` handles: no groups, no input dilation, no negative
  padding."""
  return (
      params["feature_group_count"] == 1
      and params["batch_group_count"] == 1
      and all(d == 1 for d in params["lhs_dilation"])
      and all(lo >= 0 and hi >= 0 for lo, hi in params["padding"])
  )


def _int_conv_as_dot(params: dict, lhs: jax.Array, rhs: jax.Array) -> jax.Array:
  """An int8 convolution as one int8 x int8 -> int32 matrix product of the input's patches
  with the kernel: the same integer sums, so the same bits.

  XLA:CPU runs an int8 convolution far slower than a float32 one (the digits CNN's
  artifact took 1.5x the emulator's time with it), but int8 matrix products fast. The
  patches are the padded input's shifted, strided slices, one per kernel position, stacked
  along the features: (batch, out spatial..., kernel positions x in features).
  """
  dn = params["dimension_numbers"]
  # Channels last: lhs (batch, spatial..., in), rhs (spatial..., in, out).
  lhs = jnp.transpose(lhs, (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1]))
  rhs = jnp.transpose(rhs, (*dn.rhs_spec[2:], dn.rhs_spec[1], dn.rhs_spec[0]))
  spatial = len(dn.lhs_spec) - 2
  lhs = jnp.pad(lhs, ((0, 0), *params["padding"], (0, 0)))
  window, strides, dilation = rhs.shape[:spatial], params["window_strides"], params["rhs_dilation"]
  out_size = [
      (lhs.shape[1 + i] - (window[i] - 1) * dilation[i] - 1) // strides[i] + 1
      for i in range(spatial)
  ]
  if min(out_size) <= 0:  # an empty output: nothing to gather
    out_shape = [lhs.shape[0], *[max(n, 0) for n in out_size], rhs.shape[-1]]
    return jnp.transpose(jnp.zeros(out_shape, jnp.int32), _out_order(dn.out_spec, spatial))
  slices = []
  for offset in np.ndindex(*window):
    x = lhs
    for i in range(spatial):
      start = offset[i] * dilation[i]
      limit = start + (out_size[i] - 1) * strides[i] + 1
      x = lax.slice_in_dim(x, start, limit, strides[i], axis=1 + i)
    slices.append(x)
  # Stacked on a new axis, then merged with the features (position-major, then in): the
  # layout of a concatenation along the features, which XLA:CPU compiles slower: it fused
  # the quantizer that makes the input into every slice, recomputing it per kernel
  # position, where stacked it computes it once (the digits CNN's artifact took 1.29-1.33x
  # the emulator's time concatenated, 1.15-1.16x stacked; two interleaved runs).
  patches = jnp.stack(slices, axis=-2)
  patches = patches.reshape(*patches.shape[:-2], -1)
  kernel = rhs.reshape(-1, rhs.shape[-1])  # the same order: (spatial..., in) flattened
  out = lax.dot_general(
      patches,
      kernel,
      (((patches.ndim - 1,), (0,)), ((), ())),
      preferred_element_type=jnp.int32,
  )
  return jnp.transpose(out, _out_order(dn.out_spec, spatial))


def _out_order(out_spec, spatial: int) -> list[int]:
  """The transpose from (batch, spatial..., features) to the model's output layout."""
  order = [0, spatial + 1, *range(1, spatial + 1)]  # as (batch, feature, spatial...)
  return [order[i] for i in np.argsort(out_spec)]


def product(
    contraction: ProductSpec,
    lhs: jax.Array,
    rhs: jax.Array,
    mode: int,
    weight: Packed | None = None,
    weight_operand: int | None = None,
    amax: tuple[jax.Array | None, jax.Array | None] = (None, None),
) -> jax.Array:
  """One op in the static ``mode``; ``weight`` (stored) replaces operand ``weight_operand``.

  ``amax`` holds fixed (lhs, rhs) ranges as ``pak.apply``'s ``lhs_amax``/``rhs_amax`` (None:
  the operand's own range). Equal, bit for bit, to ``pak.apply(contraction, lhs, rhs, mode,
  *amax)`` on the weight that ``weight = dma.pack(...)`` stored (same grid values, same
  scales) when both run op by op (``jax.disable_jit()``).
  """
  m = MODE_TABLE[mode]
  operands = [lhs, rhs]
  dtype = contraction.float_product_dtype(lhs, rhs)
  if m.name == "fp32":
    if weight is not None:
      values, _ = weight_grid(weight.data, weight.scale, weight.shape, mode)
      operands[weight_operand] = values.astype(operands[weight_operand].dtype)
    return contraction.float_product(*operands)
  reduce_axes = (contraction.lhs_reduce_axes, contraction.rhs_reduce_axes)
  grids, scales = [], []
  for side, x in enumerate(operands):
    if weight is not None and side == weight_operand:
      q, s = weight_grid(weight.data, weight.scale, weight.shape, mode)
      if not m.is_int:
        q = q.astype(x.dtype)
    else:
      q, s = _activation(x, mode, reduce_axes[side], amax[side])
    grids.append(q)
    scales.append(s)
  acc = _int_product(contraction, *grids) if m.is_int else contraction.float_product(*grids)
  acc = acc.astype(dtype)
  if not m.scaled:  # the emulator's scales are exactly 1 here
    return acc
  return pak.scale_back(
      acc,
      contraction.lhs_to_out(scales[0]).astype(dtype),
      contraction.rhs_to_out(scales[1]).astype(dtype),
  )
