"""Model inputs as pytrees: one array, a tuple ``(ids, mask)``, a dict — any nesting.

Every leaf carries the batch on its leading axis. These helpers check that the leaves agree
on it (before any long work starts) and cut, stack and index batches leaf by leaf, so the
analysis, evaluation and the RPM accept whatever a model takes.

Example:
  >>> import numpy as np
  >>> inputs = {"ids": np.zeros((6, 5), np.int32), "mask": np.ones((6, 5), bool)}
  >>> batch_size(inputs)
  6
  >>> batches = cut(inputs, 3)
  >>> batch_size(batches["ids"]), batch_size(take(batches, 0))
  (2, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np


def batch_size(inputs: Any, what: str = "inputs") -> int:
  """The common leading-axis length of every leaf of ``inputs``.

  Raises:
    ValueError: no leaves, a scalar leaf, or leaves that disagree, naming each leaf's size.
  """
  paths = jax.tree_util.tree_flatten_with_path(inputs)[0]
  if not paths:
    raise ValueError(
        f"{what} hold no arrays; expected an array or a pytree of arrays with a "
        "leading batch axis"
    )
  sizes = {}
  for path, leaf in paths:
    name = jax.tree_util.keystr(path) or what
    if np.ndim(leaf) == 0:
      raise ValueError(f"{what} leaf {name} is a scalar; every leaf needs a leading batch axis")
    sizes[name] = np.shape(leaf)[0]
  if len(set(sizes.values())) > 1:
    listed = ", ".join(f"{k} has {v}" for k, v in sizes.items())
    raise ValueError(
        f"{what} leaves disagree on the batch size ({listed}); every leaf needs "
        "the same leading (batch) axis"
    )
  return next(iter(sizes.values()))


def take(inputs: Any, index: Any) -> Any:
  """``leaf[index]`` for every leaf (an int, a slice or an index array)."""
  return jax.tree_util.tree_map(lambda a: a[index], inputs)


def stack(items: Sequence[Any]) -> Any:
  """Stacks pytrees of one structure leaf by leaf along a new leading axis."""
  return jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(x) for x in a]), *items)


def cut(inputs: Any, size: int) -> Any:
  """``(n, size, ...)`` leaves: ``n = batch // size`` equal batches, the remainder dropped."""
  total = batch_size(inputs)
  n = total // size
  if size <= 0 or n == 0:
    raise ValueError(f"batch size {size} must be in 1..{total} (the number of examples)")
  return jax.tree_util.tree_map(
      lambda a: np.asarray(a[: n * size]).reshape(n, size, *np.shape(a)[1:]), inputs
  )


def shape_of(inputs: Any) -> Any:
  """The shapes of every leaf, as a pytree (for error messages)."""
  return jax.tree_util.tree_map(np.shape, inputs)
