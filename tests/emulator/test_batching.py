"""aprec/emulator/batching.py: the one sweep loop and the one batch splitter."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from aprec.emulator import batching


def _fn(a, w, batch):
  x, y = batch
  return jnp.sum(a[:, None] * w * x[0]) + jnp.sum(x) + y.sum(), a.sum()


@pytest.mark.parametrize("n,chunk_size", [(1, 4), (5, 4), (8, 4), (7, None), (3, 32)])
def test_sweep_equals_a_python_loop(n, chunk_size):
  rng = np.random.default_rng(n)
  assignments = rng.integers(0, 7, (n, 3)).astype(np.int32)
  w = rng.integers(-5, 5, (3, 2)).astype(np.float32)  # integers: sums exact in any order
  b = batching.split(
      rng.integers(-5, 5, (11, 3, 2)).astype(np.float32), rng.integers(0, 5, 11), batch_size=3
  )
  seen = []
  got = batching.sweep(
      _fn, assignments, w, batches=tuple(b), chunk_size=chunk_size, progress=seen.append
  )
  want = [[_fn(a, w, (x, y)) for x, y in zip(b.x, b.y)] for a in assignments]
  np.testing.assert_array_equal(got[0], [[float(v[0]) for v in row] for row in want])
  np.testing.assert_array_equal(got[1], [[int(v[1]) for v in row] for row in want])
  assert got[0].shape == (n, 3)
  step = n if chunk_size is None else min(chunk_size, 1 << (n - 1).bit_length())
  assert seen == [min(n, k) for k in range(step, n + step, step)]


def test_sweep_without_batches_and_errors():
  np.testing.assert_array_equal(batching.sweep(lambda a, x: a * x, np.arange(3), 2), [0, 2, 4])
  with pytest.raises(ValueError, match="at least one assignment"):
    batching.sweep(lambda a: a, np.zeros((0, 2)))
  with pytest.raises(ValueError, match="chunk_size must be positive, got 0"):
    batching.sweep(lambda a: a, np.zeros((2, 2)), chunk_size=0)


def test_split_drops_the_remainder_and_takes_pytrees():
  x = {"a": np.arange(10), "b": np.arange(20).reshape(10, 2)}
  b = batching.split(x, np.arange(10), batch_size=3, n_batches=2)
  assert b.x["a"].tolist() == [[0, 1, 2], [3, 4, 5]]
  assert b.x["b"].shape == (2, 3, 2) and b.y.tolist() == [[0, 1, 2], [3, 4, 5]]
  assert batching.split(x, np.arange(10), batch_size=3).y.shape == (3, 3)
  with pytest.raises(ValueError, match="batch_size must be in 1..10"):
    batching.split(x, np.arange(10), batch_size=11)
  with pytest.raises(ValueError, match="n_batches must be positive, got 0"):
    batching.split(x, np.arange(10), batch_size=2, n_batches=0)
