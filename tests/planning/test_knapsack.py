"""aprec/planning/knapsack.py (and the planner's float64 entry) against brute force."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

from aprec.planning import knapsack, planner
from aprec.planning.budgets import InfeasibleBudget


def brute_force(values, costs, capacity, allowed):
  """Every assignment enumerated: ``(best assignment or None, its value)`` in float64."""
  values, costs, allowed = np.asarray(values, np.float64), np.asarray(costs), np.asarray(allowed)
  n_ops, n_modes = values.shape
  idx = np.arange(n_ops)
  best, best_value = None, np.inf
  for combo in itertools.product(range(n_modes), repeat=n_ops):
    c = np.array(combo)
    if not allowed[idx, c].all() or (costs[:, idx, c].sum(1) > capacity).any():
      continue
    if values[idx, c].sum() < best_value:
      best, best_value = c.astype(np.int32), values[idx, c].sum()
  return best, best_value


@pytest.mark.parametrize("n_budgets", [1, 2])
@pytest.mark.parametrize("seed", range(8))
def test_solve_equals_brute_force(seed, n_budgets):
  rng = np.random.default_rng(seed)
  n_ops, n_modes = rng.integers(1, 5), rng.integers(2, 5)
  values = rng.uniform(0, 1, (n_ops, n_modes)).astype(np.float32)
  costs = rng.integers(0, 8, (n_budgets, n_ops, n_modes))
  allowed = rng.uniform(size=(n_ops, n_modes)) > 0.15
  capacity = np.array([12, 10][:n_budgets])
  grid = (16, 12)[:n_budgets]  # a table larger than the capacity reads it off correctly
  want, want_value = brute_force(values, costs, capacity, allowed)
  got, feasible = knapsack.solve(values, costs, capacity, grid=grid, allowed=allowed)
  assert bool(feasible) == (want is not None)
  if want is not None:
    got, idx = np.asarray(got), np.arange(n_ops)
    assert (costs[:, idx, got].sum(1) <= capacity).all() and allowed[idx, got].all()
    np.testing.assert_allclose(values[idx, got].sum(), want_value, rtol=1e-6)


def test_solve_runs_inside_jit_with_a_traced_capacity():
  values = np.array([[0.0, 1.0, 3.0], [0.0, 2.0, 2.5]], np.float32)
  costs = np.array([[[4, 2, 1], [4, 2, 1]]])
  f = jax.jit(lambda cap: knapsack.solve(values, costs, cap[None], grid=(8,))[0])
  for cap in range(2, 9):
    want, _ = brute_force(values, costs, np.array([cap]), np.ones_like(values, bool))
    assert np.asarray(f(np.int32(cap))).tolist() == want.tolist()


@pytest.mark.parametrize("seed", range(12))
def test_planner_solve_is_exact_in_float64(seed):
  rng = np.random.default_rng(seed)
  n_ops, n_modes = rng.integers(1, 5), rng.integers(2, 5)
  # Entries differing far below float32 resolution: only a float64 DP tells them apart.
  values = 1.0 + rng.normal(size=(n_ops, n_modes)) * 1e-10
  values[rng.uniform(size=values.shape) < 0.15] = np.inf  # forbidden choices
  values[:, 0] = 1.0
  costs = rng.integers(0, 9, (n_ops, n_modes))
  capacity = int(rng.integers(costs.min(1).sum(), costs.max(1).sum() + 1))
  ref, ref_value = brute_force(values, costs[None], capacity, np.isfinite(values))
  if ref is None:
    with pytest.raises(InfeasibleBudget):
      planner.solve(values, costs, capacity)
    return
  got = planner.solve(values, costs, capacity)
  idx = np.arange(n_ops)
  assert costs[idx, got].sum() <= capacity
  assert values[idx, got].sum() == pytest.approx(ref_value, abs=1e-15)
