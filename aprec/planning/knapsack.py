"""A jittable exact multiple-choice knapsack with two integer budgets (latency and energy).

Choose one mode per op, least total value, with ``sum cost_a <= cap_a`` and
``sum cost_b <= cap_b``. Dynamic programming over the ``(cap_a + 1) x (cap_b + 1)`` grid,
one ``lax.scan`` step per op, then a backward scan reads the choice off. Ties go to the
lower mode index (more precision).

Example:
  >>> import jax.numpy as jnp
  >>> values = jnp.array([[0.0, 1.0], [0.0, 5.0]])
  >>> ca = jnp.array([[4, 2], [4, 2]]); cb = jnp.zeros((2, 2), jnp.int32)
  >>> a, ok = solve2(values, ca, cb, jnp.ones((2, 2), bool), 6, 6)
  >>> a.tolist(), bool(ok)
  ([1, 0], True)
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np


def solve2(values: jax.Array, cost_a: jax.Array, cost_b: jax.Array, allowed: jax.Array,
           cap_a: int, cap_b: int) -> tuple[jax.Array, jax.Array]:
  """The optimum ``(assignment, feasible)``; ``cap_a``/``cap_b`` are static grid sizes.

  Args:
    values: ``[n_ops, n_modes]`` float, the cost to minimise.
    cost_a, cost_b: ``[n_ops, n_modes]`` non-negative ints (larger than the cap: never fits).
    allowed: ``[n_ops, n_modes]`` bool; False rules a mode out.
    cap_a, cap_b: the budgets (static Python ints).

  Returns:
    The chosen mode per op (int32) and whether any choice fits; when none does the
    assignment is meaningless.
  """
  values = jnp.asarray(values, jnp.float32)
  cost_a = jnp.asarray(cost_a, jnp.int32)
  cost_b = jnp.asarray(cost_b, jnp.int32)
  grid_a, grid_b = jnp.arange(cap_a + 1), jnp.arange(cap_b + 1)

  def forward(best, xs):
    v, ca, cb, ok = xs  # [n_modes]
    ia = grid_a[None, :] - ca[:, None]  # [n_modes, cap_a + 1]
    ib = grid_b[None, :] - cb[:, None]
    prev = best[jnp.clip(ia, 0)[:, :, None], jnp.clip(ib, 0)[:, None, :]]
    valid = (ia >= 0)[:, :, None] & (ib >= 0)[:, None, :] & ok[:, None, None]
    cand = jnp.where(valid, prev + v[:, None, None], jnp.inf)
    return jnp.min(cand, axis=0), jnp.argmin(cand, axis=0).astype(jnp.int8)

  best0 = jnp.zeros((cap_a + 1, cap_b + 1), jnp.float32)
  best, choices = jax.lax.scan(forward, best0, (values, cost_a, cost_b, allowed))

  def backward(carry, xs):
    a, b = carry
    choice, ca, cb = xs
    m = choice[a, b].astype(jnp.int32)
    return (jnp.maximum(a - ca[m], 0), jnp.maximum(b - cb[m], 0)), m

  _, modes = jax.lax.scan(backward, (jnp.int32(cap_a), jnp.int32(cap_b)),
                          (choices, cost_a, cost_b), reverse=True)
  return modes.astype(jnp.int32), jnp.isfinite(best[cap_a, cap_b])


def brute_force2(values, cost_a, cost_b, allowed, cap_a: int, cap_b: int
                 ) -> tuple[np.ndarray | None, float]:
  """``solve2`` by enumeration (for tests): ``(assignment or None, its value)``."""
  values, cost_a, cost_b, allowed = map(np.asarray, (values, cost_a, cost_b, allowed))
  n_ops, n_modes = values.shape
  best, best_value = None, np.inf
  idx = np.arange(n_ops)
  for combo in itertools.product(range(n_modes), repeat=n_ops):
    c = np.array(combo)
    if not allowed[idx, c].all():
      continue
    if cost_a[idx, c].sum() > cap_a or cost_b[idx, c].sum() > cap_b:
      continue
    v = float(values[idx, c].astype(np.float32).sum())
    if v < best_value:
      best, best_value = c.astype(np.int32), v
  return best, best_value
