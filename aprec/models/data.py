"""scikit-learn's 8x8 digits dataset with a fixed, stratified train/val/test split.

The dataset ships inside scikit-learn (1797 images, 10 classes), so nothing is
downloaded. Images come back as float32 ``(N, 8, 8, 1)`` in ``[0, 1]`` and labels as
int32.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

TEST_FRACTION = 0.2
VAL_FRACTION = 0.1  # of the whole dataset
_PIXEL_MAX = 16.0


class Split(NamedTuple):
  """One part of the dataset: images ``x`` (N, 8, 8, 1) float32 and labels ``y`` (N,) int32."""

  x: np.ndarray
  y: np.ndarray


class DatasetSplits(NamedTuple):
  """The train, validation and test parts of the dataset."""

  train: Split
  val: Split
  test: Split


def _read_only(a: np.ndarray) -> np.ndarray:
  a = np.ascontiguousarray(a)
  a.flags.writeable = False
  return a


def _split(x: np.ndarray, y: np.ndarray) -> Split:
  return Split(x=_read_only(x.astype(np.float32)), y=_read_only(y.astype(np.int32)))


@functools.lru_cache(maxsize=8)
def load_digits_splits(seed: int = 0) -> DatasetSplits:
  """Loads the digits dataset split 70/10/20 (1257/180/360 images), stratified by label.

  Deterministic for a given ``seed``. The arrays are read-only (they are cached and
  shared between callers); copy them before modifying.

  Args:
    seed: the ``random_state`` of the two ``train_test_split`` calls.

  Returns:
    The train, val and test splits.
  """
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  digits = load_digits()
  x = (digits.images / _PIXEL_MAX).reshape(-1, 8, 8, 1)
  y = digits.target
  n_total = len(y)
  n_test = math.ceil(TEST_FRACTION * n_total)  # rounds up like sklearn's fractional test_size
  n_val = math.ceil(VAL_FRACTION * n_total)
  x_rest, x_test, y_rest, y_test = train_test_split(
      x, y, test_size=n_test, stratify=y, random_state=seed
  )
  x_train, x_val, y_train, y_val = train_test_split(
      x_rest, y_rest, test_size=n_val, stratify=y_rest, random_state=seed
  )
  return DatasetSplits(
      train=_split(x_train, y_train),
      val=_split(x_val, y_val),
      test=_split(x_test, y_test),
  )


def batches(
    split: Split,
    batch_size: int,
    *,
    seed: int | None = None,
    drop_remainder: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Iterates over ``(x, y)`` numpy batches of a split.

  Args:
    split: the data to batch.
    batch_size: examples per batch (the last batch may be smaller unless
      ``drop_remainder``).
    seed: when given, the order is a permutation drawn from
      ``np.random.default_rng(seed)``; otherwise the split's own order.
    drop_remainder: drop a final batch smaller than ``batch_size``.

  Yields:
    ``(x, y)`` pairs of arrays.

  Raises:
    ValueError: ``batch_size`` is not a positive integer, or ``x`` and ``y`` differ
      in length.
  """
  if (
      isinstance(batch_size, bool)
      or not isinstance(batch_size, (int, np.integer))
      or batch_size <= 0
  ):
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
  n = len(split.x)
  if len(split.y) != n:
    raise ValueError(
        f"split.x has {n} examples but split.y has {len(split.y)}; pass arrays of equal length."
    )
  order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
  stop = n - n % batch_size if drop_remainder else n
  for start in range(0, stop, batch_size):
    idx = order[start : start + batch_size]
    yield split.x[idx], split.y[idx]


def random_shift(x: np.ndarray, rng: np.random.Generator, max_shift_px: int = 1) -> np.ndarray:
  """Translates each image ``(N, H, W, C)`` by up to ``max_shift_px`` pixels, zero-filled.

  Each image gets its own vertical and horizontal shift, drawn uniformly from
  ``[-max_shift_px, max_shift_px]`` (vertical first, then horizontal) with ``rng``.
  Used as training augmentation.
  """
  if max_shift_px < 0:
    raise ValueError(f"max_shift_px must be >= 0, got {max_shift_px}.")
  if x.ndim != 4:
    raise ValueError(f"random_shift expects images of shape (N, H, W, C), got {x.shape}.")
  n, h, w, _ = x.shape
  m = max_shift_px
  padded = np.pad(x, ((0, 0), (m, m), (m, m), (0, 0)))
  dy = rng.integers(0, 2 * m + 1, n)
  dx = rng.integers(0, 2 * m + 1, n)
  rows = dy[:, None] + np.arange(h)  # (N, H)
  cols = dx[:, None] + np.arange(w)  # (N, W)
  return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
