"""Measured loss and accuracy of a classifier under many precision assignments at once."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aprec.emulator import batching
from aprec.emulator import inputs
from aprec.emulator.core import Emulator


class Measured(NamedTuple):
  """Per-assignment results on a split: mean cross-entropy and accuracy (fractions)."""

  loss: np.ndarray
  accuracy: np.ndarray


class Evaluator:
  """Scores assignments of an emulated classifier on one labelled split.

  ``split`` has inputs ``x`` and integer labels ``y`` (e.g. ``aprec.models.data.Split``);
  it is the emulator's example input, so every assignment runs on the same batch.
  ``measure`` runs the assignments through ``batching.sweep`` (chunks of ``chunk_size``
  per compiled, device-sharded call).

  Example:
    >>> from aprec import models
    >>> model = models.load("digits_cnn")
    >>> ev = Evaluator.for_model(model, "test")
    >>> m = ev.measure([ev.emulator.assignment("fp32"), ev.emulator.assignment("int8")])
    >>> bool(m.accuracy[0] >= 0.97)
    True
  """

  def __init__(self, emulator: Emulator, params: Any, split: Any, *, chunk_size: int = 32):
    if len(split.y) == 0:
      raise ValueError("cannot evaluate on an empty split")
    if inputs.batch_size(split.x, "split.x") != len(split.y):
      raise ValueError(
          f"split.x holds {inputs.batch_size(split.x)} examples but split.y "
          f"{len(split.y)} labels; expected one label per example"
      )
    if chunk_size <= 0:
      raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    self.emulator, self.params, self.split, self.chunk_size = emulator, params, split, chunk_size

  @classmethod
  def for_model(cls, model, split: str = "test", **kwargs) -> Evaluator:
    """An evaluator for a loaded reference model (``aprec.models.load``) on a named split."""
    data = getattr(model.data, split, None)
    if data is None:
      raise ValueError(f"unknown split {split!r}; use one of {', '.join(model.data._fields)}")
    return cls(Emulator(model.apply_fn, model.params, data.x), model.params, data, **kwargs)

  def _metrics(self, modes, params, x, y):
    logits = self.emulator(params, x, modes).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, jnp.mean(jnp.argmax(logits, -1) == y)

  def measure(self, assignments: Iterable[Any] | jax.Array, *, progress=None) -> Measured:
    """Loss and accuracy for each assignment (rows of mode indices).

    ``progress``, if given, is called with the number of assignments done after each chunk.
    """
    assignments = np.asarray(
        jnp.asarray(list(assignments) if not hasattr(assignments, "shape") else assignments),
        np.int32,
    )
    if assignments.ndim != 2 or assignments.shape[1] != len(self.emulator.ops):
      raise ValueError(
          f"assignments must have shape (n, {len(self.emulator.ops)}), " f"got {assignments.shape}"
      )
    self.emulator.check_modes(assignments.max(0))
    self.emulator.check_modes(assignments.min(0))
    loss, acc = batching.sweep(
        self._metrics,
        assignments,
        self.params,
        self.split.x,
        self.split.y,
        chunk_size=self.chunk_size,
        progress=progress,
    )
    return Measured(np.asarray(loss, np.float64), np.asarray(acc, np.float64))
