"""Tests for aprec/emulator/ranges.py: the range of a group, NaN for a non-finite group,
against float64 NumPy and finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aprec.emulator import ranges


def _amax_reference(x: np.ndarray, axes: tuple[int, ...], where: np.ndarray | None) -> np.ndarray:
  """float64 NumPy: max |x| over ``axes`` (where ``where``), NaN for a group with a non-finite."""
  x = np.asarray(x, np.float64)
  keep = np.ones(x.shape, bool) if where is None else np.broadcast_to(where, x.shape)
  magnitude = np.where(keep, np.abs(np.where(np.isfinite(x), x, 0.0)), 0.0)
  bad = np.any(keep & ~np.isfinite(x), axis=axes, keepdims=True)
  return np.where(bad, np.nan, np.max(magnitude, axis=axes, keepdims=True))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_element_makes_its_range_nan_compiled(bad):
  # Both of amax_over's ways (a variadic reduction when the last axis is reduced, a max plus
  # a sum of x - x otherwise), compiled: a NaN or an infinity anywhere in a group makes that
  # group's range NaN and leaves the other groups' exact maxima, with and without a mask.
  x = np.array(jax.random.normal(jax.random.key(5), (6, 8, 40)), np.float32)
  x[0, 3, 5] = x[4, 7, 39] = x[5, 0, 0] = bad
  where = np.array(jax.random.bernoulli(jax.random.key(6), 0.7, (6, 8, 1)))
  where[5, 0, 0] = False  # one poisoned element masked out: it must not count
  for axes in [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2), (-1,)]:
    for mask in (None, where):
      got = jax.jit(ranges.amax_over, static_argnums=1)(x, axes, mask)
      ref = _amax_reference(x, tuple(a % 3 for a in axes), mask)
      np.testing.assert_array_equal(
          np.asarray(got, np.float64), ref, err_msg=f"{axes} {mask is None}"
      )


def test_the_range_differentiates_as_the_max_of_abs_on_both_ways():
  # The variadic reduction has no derivative rule of its own: amax_over gives it the max's
  # (the check's sum of t - t is 0), as the max-plus-sum way has natively. Reference: the
  # derivative of max |x| by central finite differences in float64 (distinct magnitudes).
  magnitude = np.array(jax.random.permutation(jax.random.key(7), 24), np.float64) + 1.0
  sign = np.where(np.arange(24) % 3 == 0, -1.0, 1.0)
  x = (sign * magnitude).reshape(4, 6)
  where = np.array([[True], [False], [True], [True]])
  for axes in [(1,), (0,), (0, 1)]:
    for mask in (None, where):
      loss = lambda v, axes=axes, mask=mask: jnp.sum(ranges.amax_over(v, axes, mask) ** 2)
      grad = np.asarray(jax.grad(loss)(jnp.asarray(x, jnp.float32)), np.float64)
      eps, fd = 1e-3, np.zeros_like(x)
      for i in np.ndindex(x.shape):
        hi, lo = x.copy(), x.copy()
        hi[i] += eps
        lo[i] -= eps
        ref = lambda v: np.sum(_amax_reference(v, axes, mask) ** 2)
        fd[i] = (ref(hi) - ref(lo)) / (2 * eps)
      np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-3, err_msg=f"{axes} {mask is None}")
