"""Tests for aprec.models.data: the fixed digits split and the batch iterator."""

from __future__ import annotations

import numpy as np
import pytest

from aprec.models import data


def test_split_sizes_shapes_and_dtypes():
  splits = data.load_digits_splits()
  assert [len(s.y) for s in splits] == [1257, 180, 360]
  for s in splits:
    assert s.x.shape == (len(s.y), 8, 8, 1)
    assert s.x.dtype == np.float32 and s.y.dtype == np.int32
    assert s.x.min() >= 0.0 and s.x.max() <= 1.0
  assert splits.train.x.max() == 1.0


def test_split_is_deterministic_and_seed_dependent():
  a = data.load_digits_splits(0)
  data.load_digits_splits.cache_clear()
  b = data.load_digits_splits(0)
  for sa, sb in zip(a, b):
    np.testing.assert_array_equal(sa.x, sb.x)
    np.testing.assert_array_equal(sa.y, sb.y)
  c = data.load_digits_splits(1)
  assert not np.array_equal(a.test.y, c.test.y)


def test_splits_are_disjoint_and_cover_the_dataset():
  splits = data.load_digits_splits()
  rows = np.concatenate([s.x.reshape(len(s.x), -1) for s in splits])
  assert len(rows) == 1797
  # Images are not all unique in the raw data, so compare multisets, not sets.
  from sklearn.datasets import load_digits

  raw = (load_digits().images / 16.0).astype(np.float32).reshape(1797, -1)
  np.testing.assert_array_equal(
      np.unique(rows, axis=0, return_counts=True)[1], np.unique(raw, axis=0, return_counts=True)[1]
  )


def test_split_is_stratified():
  splits = data.load_digits_splits()
  total = np.bincount(np.concatenate([s.y for s in splits]), minlength=10) / 1797
  for s in splits:
    fractions = np.bincount(s.y, minlength=10) / len(s.y)
    np.testing.assert_allclose(fractions, total, atol=0.01)


def test_arrays_are_read_only():
  splits = data.load_digits_splits()
  with pytest.raises(ValueError):
    splits.train.x[0, 0, 0, 0] = 1.0


def _tiny_split(n: int = 10) -> data.Split:
  return data.Split(
      x=np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1), y=np.arange(n, dtype=np.int32)
  )


@pytest.mark.parametrize("seed", [None, 3])
def test_batches_cover_all_indices_once(seed):
  got = [y for _, y in data.batches(_tiny_split(), 3, seed=seed)]
  assert [len(y) for y in got] == [3, 3, 3, 1]
  ys = np.concatenate(got)
  np.testing.assert_array_equal(np.sort(ys), np.arange(10))
  if seed is None:
    np.testing.assert_array_equal(ys, np.arange(10))
  else:
    assert not np.array_equal(ys, np.arange(10))
    again = np.concatenate([y for _, y in data.batches(_tiny_split(), 3, seed=seed)])
    np.testing.assert_array_equal(ys, again)


def test_batches_keep_x_and_y_together_and_drop_remainder():
  batches = list(data.batches(_tiny_split(), 4, seed=1, drop_remainder=True))
  assert [len(y) for _, y in batches] == [4, 4]
  for x, y in batches:
    np.testing.assert_array_equal(x.reshape(-1), y)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_bad_batch_size(batch_size):
  with pytest.raises(ValueError, match="batch_size must be a positive integer"):
    next(data.batches(_tiny_split(), batch_size))


def test_random_shift_moves_pixels_and_keeps_shape():
  x = np.zeros((50, 8, 8, 1), np.float32)
  x[:, 4, 4, 0] = 1.0
  out = data.random_shift(x, np.random.default_rng(0), max_shift_px=1)
  assert out.shape == x.shape and out.dtype == x.dtype
  assert np.all(out.sum(axis=(1, 2, 3)) == 1.0)
  positions = {tuple(np.argwhere(img[..., 0])[0]) for img in out}
  assert positions <= {(r, c) for r in (3, 4, 5) for c in (3, 4, 5)}
  assert len(positions) > 1
  np.testing.assert_array_equal(data.random_shift(x, np.random.default_rng(0), 0), x)
