"""The static part of a PAK call: which operand elements share a scale, how each scale lines
up with the output, and which accumulator the product uses.

``product_spec`` reads it from a primitive's parameters and operand shapes once, while
tracing; ``aprec.emulator.pak`` runs the product in a (traced) mode from it.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from aprec.emulator.formats import STE


class ActivationScaling(str, enum.Enum):
  """Which elements of an activation operand share one dynamic scale.

  - ``PER_TENSOR``: the whole operand, every example of the batch together;
  - ``PER_EXAMPLE``: each index of the operand's leading (batch) axis on its own, so no
    example's range (or NaN) reaches another; convolutions and matmuls alike;
  - ``PER_TOKEN``: each row of the product (every axis but the contracted ones) on its own;
    convolutions, whose windows overlap, fall back to per-example.

  ``PER_TOKEN`` is the default (``DEFAULT_ACTIVATION_SCALING``; the README's "Activation
  scaling" section has the measurements behind it). Weights always have one scale per
  output channel.
  """

  PER_TENSOR = "per_tensor"
  PER_EXAMPLE = "per_example"
  PER_TOKEN = "per_token"


DEFAULT_ACTIVATION_SCALING = ActivationScaling.PER_TOKEN


@dataclasses.dataclass(frozen=True, eq=False)
class ProductSpec:
  """Static description of one product: the primitive, its parameters and scale layout.

  ``integer_only``: the caller knows a traced mode is an integer mode (the emulator's
  all-integer program), so the PAK runs the integer side without a branch.
  """

  primitive: Any
  params: dict
  lhs_reduce_axes: tuple[int, ...]
  rhs_reduce_axes: tuple[int, ...]
  lhs_to_out: Callable[[jax.Array], jax.Array]
  rhs_to_out: Callable[[jax.Array], jax.Array]
  ste: STE
  int_exact_in_float: bool = False
  int_dot: bool = True
  branch: bool = True
  integer_only: bool = False

  def float_product(self, lhs: jax.Array, rhs: jax.Array) -> jax.Array:
    return self.primitive.bind(lhs, rhs, **self.params)

  def int_product(self, lhs: jax.Array, rhs: jax.Array, *, as_int32=False) -> jax.Array:
    params = dict(self.params, preferred_element_type=jnp.int32)
    acc = self.primitive.bind(lhs.astype(jnp.int8), rhs.astype(jnp.int8), **params)
    return acc if as_int32 else acc.astype(self.float_product_dtype(lhs, rhs))

  def float_product_dtype(self, lhs: jax.Array, rhs: jax.Array) -> Any:
    preferred = self.params.get("preferred_element_type")
    return preferred if preferred is not None else jnp.result_type(lhs, rhs)


# --------------------------------------------------------------------------------------
# Scale layouts: which axes share a scale, and how a scale lines up with the output.


def _side_to_out(
    batch: Sequence[int],
    free: Sequence[int],
    n_axes: int,
    out_template: Callable[[tuple, tuple], tuple],
):
  """Maps a keepdims scale of one dot_general operand onto the output's layout.

  The scale has the operand's rank with size 1 on every axis it is shared along; its
  batch and free axes land where the output keeps them, broadcasting over the rest.
  """
  keep = tuple(batch) + tuple(free)
  order = keep + tuple(a for a in range(n_axes) if a not in keep)

  def to_out(s):
    bshape = tuple(s.shape[a] for a in batch)
    fshape = tuple(s.shape[a] for a in free)
    return jnp.transpose(s, order).reshape(out_template(bshape, fshape))

  return to_out


def _activation_reduce_axes(
    ndim: int, contracting: Sequence[int], scaling: ActivationScaling
) -> tuple[int, ...]:
  """Axes of an activation operand that share one scale under ``scaling``."""
  if scaling is ActivationScaling.PER_TOKEN:
    return tuple(contracting)
  if scaling is ActivationScaling.PER_EXAMPLE and ndim > 1 and 0 not in contracting:
    return tuple(range(1, ndim))
  return tuple(range(ndim))


def _dot_layout(params, lhs_shape, rhs_shape, weight_operand, scaling):
  (lc, rc), (lb, rb) = params["dimension_numbers"]
  lfree = tuple(a for a in range(len(lhs_shape)) if a not in lc and a not in lb)
  rfree = tuple(a for a in range(len(rhs_shape)) if a not in rc and a not in rb)

  def reduce_axes(side, ndim, contracting):
    if side == weight_operand:
      return tuple(contracting)  # one scale per output channel
    return _activation_reduce_axes(ndim, contracting, scaling)

  l_red = reduce_axes(0, len(lhs_shape), lc)
  r_red = reduce_axes(1, len(rhs_shape), rc)
  l_out = _side_to_out(lb, lfree, len(lhs_shape), lambda b, f: b + f + (1,) * len(rfree))
  r_out = _side_to_out(rb, rfree, len(rhs_shape), lambda b, f: b + (1,) * len(lfree) + f)
  return l_red, r_red, l_out, r_out


def _conv_layout(params, lhs_shape, rhs_shape, weight_operand, out_ndim, scaling):
  dn = params["dimension_numbers"]
  scalar = lambda s: s.reshape(())
  l_red, l_out = tuple(range(len(lhs_shape))), scalar
  if scaling is not ActivationScaling.PER_TENSOR and params.get("batch_group_count", 1) == 1:
    # One scale per example: a convolution never mixes the batch axis.
    batch_in_lhs, batch_in_out = dn.lhs_spec[0], dn.out_spec[0]
    l_red = tuple(a for a in range(len(lhs_shape)) if a != batch_in_lhs)
    batch_shape = [1] * out_ndim
    batch_shape[batch_in_out] = lhs_shape[batch_in_lhs]
    l_out = lambda s: s.reshape(batch_shape)
  if weight_operand != 1:
    return l_red, tuple(range(len(rhs_shape))), l_out, scalar
  out_feature_in_rhs, out_feature_in_out = dn.rhs_spec[0], dn.out_spec[1]
  r_red = tuple(a for a in range(len(rhs_shape)) if a != out_feature_in_rhs)
  out_shape = [1] * out_ndim
  out_shape[out_feature_in_out] = rhs_shape[out_feature_in_rhs]
  return l_red, r_red, l_out, (lambda s: s.reshape(out_shape))


def product_spec(
    primitive,
    params: dict,
    lhs_shape,
    rhs_shape,
    out_ndim: int,
    *,
    weight_operand: int | None,
    activation_scaling=DEFAULT_ACTIVATION_SCALING,
    ste=STE.IDENTITY,
) -> ProductSpec:
  """The static part of a PAK call for a primitive with the given parameters and shapes."""
  scaling = ActivationScaling(activation_scaling)
  k = contraction_size(primitive.name, params, lhs_shape, rhs_shape)
  if primitive.name == "dot_general":
    layout = _dot_layout(params, tuple(lhs_shape), tuple(rhs_shape), weight_operand, scaling)
  elif primitive.name == "conv_general_dilated":
    layout = _conv_layout(
        params, tuple(lhs_shape), tuple(rhs_shape), weight_operand, out_ndim, scaling
    )
  else:
    raise ValueError(f"the PAK handles dot_general and conv_general_dilated, not {primitive.name}")
  exact = k * _INT8_MAX_PRODUCT < _F32_EXACT_INTEGERS
  int_dot = not exact
  if primitive.name == "dot_general" and not int_dot:
    # Both products are exact here, so this only picks the faster. Symbolic sizes (an
    # exported program's batch) count as 1.
    (_, rhs_contracting), (_, rhs_batch) = params["dimension_numbers"]
    known = lambda dims: math.prod(d for d in dims if isinstance(d, int))
    rhs_free = [
        d for a, d in enumerate(rhs_shape) if a not in rhs_batch and a not in rhs_contracting
    ]
    macs = known(lhs_shape) * known(rhs_free)
    int_dot = k >= INT_DOT_MIN_CONTRACTION or macs >= INT_DOT_MIN_MACS
  return ProductSpec(
      primitive,
      dict(params),
      *layout,
      ste=STE(ste),
      int_exact_in_float=exact,
      int_dot=int_dot,
      # A convolution run in float32 for every mode skips the integer/float branch: inside
      # a lax.cond XLA:CPU compiles it to a slower kernel than outside. On the digits CNN
      # (uniform int8, batch 256, one interleaved run of 31 x 20 calls) the forward took
      # 0.64 of the time without the branch (Conv_1 alone: 0.70, Conv_0: 0.90); the
      # branch-free quantizer gives the integer modes the same bits, only with more work.
      branch=int_dot or primitive.name != "conv_general_dilated",
  )


# Every partial sum of K products of int8 grid values is an integer below K * 127**2; while
# that stays below 2**24, float32 holds each partial sum exactly, so a float32-accumulated
# product of the grid values *is* the int32 accumulation, in any summation order.
_INT8_MAX_PRODUCT = 127 * 127
_F32_EXACT_INTEGERS = 2**24
# Where both are exact, which is faster is a matter of size. Measured on XLA:CPU (uniform
# int8 over the fp32 forward): MiniLM-L6's projections (K = 384, 1536) run 0.72x with
# int8 x int8 -> int32 dots against 0.91x multiplying the grid values in float32; the
# digits ViT's small dots (K <= 64) run 1.6-1.9x with int8 dots against 1.2-1.4x. So
# integer modes use the int8 dot from this contraction size up (convolutions keep float),
# and in products of this many multiply-accumulates or more whatever their K: MiniLM-L6's
# attention products (K = 32, 64; 1e8 MACs at 64 texts of 64 tokens) took 48 ms of fused
# kernels in float32 (the softmax fused into one of them) against 22 ms as int8 dots plus
# 16 ms for the softmax alone, in one profiler trace; the uniform-int8 forward went from
# 1.24x to 1.17x qwix's in one ad-hoc run. The digits ViT's products stay below 2.2e6.
INT_DOT_MIN_CONTRACTION = 256
INT_DOT_MIN_MACS = 2**24


def contraction_size(primitive_name: str, params: dict, lhs_shape, rhs_shape) -> int:
  """Multiply-accumulates per output element (the ``K`` of the product)."""
  if primitive_name == "dot_general":
    (lhs_contracting, _), _ = params["dimension_numbers"]
    return math.prod(lhs_shape[a] for a in lhs_contracting)
  out_feature_dim = params["dimension_numbers"].rhs_spec[0]
  return math.prod(rhs_shape) // rhs_shape[out_feature_dim]
