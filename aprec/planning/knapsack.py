"""The one exact multiple-choice knapsack: a mode per op, least total value, within budgets.

Choose one mode per op minimising ``Σ values[i, m_i]`` subject to
``Σ costs[k, i, m_i] <= capacity[k]`` for each of one or two integer budgets ``k``.
Dynamic programming over the ``(grid[0] + 1) x (grid[1] + 1)`` table of budget use, one
``lax.scan`` step per op, then a backward scan reads the choice off. Ties go to the lower
mode index (more precision). Jitted, so it runs inside a ``lax.scan`` (the RPM's oracle,
every step) as well as on the host (the static planner, with float64 values under
``jax.enable_x64``).

Example:
  >>> import jax.numpy as jnp
  >>> values = jnp.array([[0.0, 1.0], [0.0, 5.0]])      # Δloss of (op, mode)
  >>> costs = jnp.array([[[4, 2], [4, 2]]])             # one budget
  >>> modes, ok = solve(values, costs, jnp.array([6]), grid=(8,))
  >>> modes.tolist(), bool(ok)                          # cheapen the op that suffers least
  ([1, 0], True)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from aprec.typing import Array, ArrayLike


@functools.partial(jax.jit, static_argnames=("grid",))
def solve(
    values: ArrayLike,
    costs: ArrayLike,
    capacity: ArrayLike,
    grid: tuple[int, ...],
    allowed: ArrayLike | None = None,
) -> tuple[Array, Array]:
  """The optimum ``(modes, feasible)``.

  Args:
    values: ``[n_ops, n_modes]`` float, the total to minimise (float64 under x64).
    costs: ``[n_budgets, n_ops, n_modes]`` non-negative ints, ``n_budgets`` 1 or 2; a cost
      above ``capacity`` never fits.
    capacity: ``[n_budgets]`` ints, each in ``0..grid[k]`` (may be traced).
    grid: the static table size per budget (the largest capacity it can hold).
    allowed: ``[n_ops, n_modes]`` bool; False rules a mode out (default: all allowed).

  Returns:
    The chosen mode per op (int32) and whether any choice fits; when none does, the modes
    are meaningless.
  """
  values = jnp.asarray(values)
  values = values.astype(jnp.result_type(values.dtype, jnp.float32))
  costs = jnp.asarray(costs)
  n_budgets = costs.shape[0]
  if costs.ndim != 3 or n_budgets not in (1, 2) or costs.shape[1:] != values.shape:
    raise ValueError(
        f"costs must have shape (1 or 2, {values.shape[0]}, {values.shape[1]}), "
        f"got {costs.shape}"
    )
  if len(grid) != n_budgets:
    raise ValueError(f"grid has {len(grid)} sizes for {n_budgets} budget(s)")
  allowed = jnp.ones(values.shape, bool) if allowed is None else jnp.asarray(allowed, bool)
  capacity = jnp.asarray(capacity, jnp.int32)
  # Costs past the grid never fit; clipping keeps them in int32.
  costs = jnp.minimum(costs, jnp.asarray(grid, costs.dtype)[:, None, None] + 1).astype(jnp.int32)
  if n_budgets == 1:  # a second budget of size zero that nothing uses
    costs = jnp.concatenate([costs, jnp.zeros_like(costs)])
    capacity = jnp.concatenate([capacity, jnp.zeros(1, jnp.int32)])
    grid = (*grid, 0)
  cost_a, cost_b = costs
  grid_a, grid_b = jnp.arange(grid[0] + 1), jnp.arange(grid[1] + 1)

  def forward(best, xs):  # best[a, b]: least value using at most (a, b) of the budgets
    v, ca, cb, ok = xs  # [n_modes]
    ia = grid_a[None, :] - ca[:, None]  # [n_modes, grid_a + 1]
    ib = grid_b[None, :] - cb[:, None]
    prev = best[jnp.clip(ia, 0)[:, :, None], jnp.clip(ib, 0)[:, None, :]]
    valid = (ia >= 0)[:, :, None] & (ib >= 0)[:, None, :] & ok[:, None, None]
    cand = jnp.where(valid, prev + v[:, None, None], jnp.inf)
    return jnp.min(cand, axis=0), jnp.argmin(cand, axis=0).astype(jnp.int8)

  best0 = jnp.zeros((grid[0] + 1, grid[1] + 1), values.dtype)
  best, choices = jax.lax.scan(forward, best0, (values, cost_a, cost_b, allowed))

  def backward(carry, xs):
    a, b = carry
    choice, ca, cb = xs
    m = choice[a, b].astype(jnp.int32)
    return (jnp.maximum(a - ca[m], 0), jnp.maximum(b - cb[m], 0)), m

  _, modes = jax.lax.scan(
      backward, (capacity[0], capacity[1]), (choices, cost_a, cost_b), reverse=True
  )
  return modes.astype(jnp.int32), jnp.isfinite(best[capacity[0], capacity[1]])
