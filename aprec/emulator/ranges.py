"""The range of a group of elements, which every dynamic scale starts from.

``amax_over(x, axes)`` is ``max |x|`` over the axes a scale is shared along, NaN for a group
that holds a NaN or an infinity (no finite scale represents it); ``range_of`` is that, or a
fixed (calibrated) range broadcast to the same shape. ``formats.quantize`` turns a range into
a scale; ``padding.masked_amax`` takes it over real positions only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax


def amax_over(
    x: jax.Array, reduce_axes: Sequence[int], where: jax.Array | None = None
) -> jax.Array:
  """``max |x|`` over ``reduce_axes``, keeping dims so it broadcasts against ``x``; with
  ``where`` (broadcast against ``x``), over the elements where it is True only.

  NaN where the group holds a NaN or an infinity: no finite scale represents it, and the
  NaN scale makes every output that depends on the group NaN (an infinite scale would
  quantize the group's finite values to 0, and their products to NaN or ±inf anyway).
  XLA:CPU's max reduction skips a NaN, so the check is explicit, in one of two ways that
  give the same bits, whichever XLA:CPU runs faster (``scripts/bench_ranges.py``):

  - over the last axis (activations: per token, per example, per tensor), one variadic
    reduction of the max and "any non-finite": 0.8-1.0 of a plain max alone, where a max
    plus a sum takes 1.35-1.6 (two runs, three shapes);
  - over leading axes only (a weight's per-output-channel range), a max plus a sum of
    ``x - x`` (NaN exactly at NaN and ±inf elements, else 0), both of which XLA:CPU
    vectorizes along the kept last axis: 1.7-1.9 of the plain max, where the variadic
    reduction takes 2.9-5.6.

  Example:
    >>> import jax.numpy as jnp
    >>> amax_over(jnp.array([[1.0, -3.0], [2.0, jnp.nan]]), (1,)).tolist()
    [[3.0], [nan]]
  """
  axes = tuple(a % x.ndim for a in reduce_axes)
  if not jnp.issubdtype(x.dtype, jnp.floating):  # integers are always finite
    return _masked_max(x, axes, where)
  if x.ndim - 1 not in axes:
    poison = x - x if where is None else jnp.where(where, x - x, 0)
    return _masked_max(x, axes, where) + jnp.sum(poison, axis=axes, keepdims=True)
  return _variadic_amax(x, axes, where)


def _masked_max(x: jax.Array, axes: tuple[int, ...], where: jax.Array | None) -> jax.Array:
  """``max |x|`` over ``axes`` where ``where``: no NaN check (XLA:CPU may skip a NaN)."""
  magnitude = jnp.abs(x) if where is None else jnp.where(where, jnp.abs(x), 0)
  return jnp.max(magnitude, axis=axes, keepdims=True)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _variadic_amax(x: jax.Array, axes: tuple[int, ...], where: jax.Array | None) -> jax.Array:
  """``amax_over`` as one variadic reduction of the max and "any non-finite"."""
  magnitude, non_finite = jnp.abs(x), ~jnp.isfinite(x)
  if where is not None:
    magnitude, non_finite = jnp.where(where, magnitude, 0), jnp.where(where, non_finite, False)
  init = (jnp.asarray(-jnp.inf, x.dtype), jnp.asarray(False))
  amax, bad = lax.reduce((magnitude, non_finite), init, _max_and_any, axes)
  amax, bad = jnp.expand_dims(amax, axes), jnp.expand_dims(bad, axes)
  return jnp.where(bad, jnp.asarray(jnp.nan, x.dtype), amax)


@_variadic_amax.defjvp
def _variadic_amax_jvp(axes, primals, tangents):
  # A variadic reduction has no derivative rule; the range's derivative is the max's (the
  # check adds sum(t - t) = 0), as with the max plus sum of the other path.
  x, where = primals
  _, t_out = jax.jvp(lambda v: _masked_max(v, axes, where), (x,), (tangents[0],))
  return _variadic_amax(x, axes, where), t_out


def _max_and_any(a: tuple[jax.Array, jax.Array], b: tuple[jax.Array, jax.Array]):
  """The reducer of ``amax_over``: the larger magnitude, and whether either is non-finite."""
  return lax.max(a[0], b[0]), lax.bitwise_or(a[1], b[1])


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
