"""Measured sensitivity: the loss of every single-op assignment on every calibration batch.

``perturbation`` runs the all-fp32 assignment and every "op ``i`` alone in mode ``m``"
assignment (``single_op_assignments``) over every batch in ``batching.sweep`` and returns
the mean and standard error of the paired per-batch differences. ``batch_losses`` is the
same measurement for any assignments (validation uses it).

Example:
  >>> single_op_assignments(2)[:3].tolist()
  [[0, 0], [1, 0], [2, 0]]
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from aprec.emulator import batching
from aprec.emulator import inputs as inputs_lib
from aprec.emulator.core import Emulator
from aprec.emulator.formats import N_MODES
from aprec.sensitivity.objective import cross_entropy
from aprec.sensitivity.profile import Estimate
from aprec.typing import LossFn, Progress


def stack_batches(batches: Sequence[tuple[Any, Any]] | batching.Batches) -> tuple[Any, Any]:
  """Validates ``[(inputs, targets), ...]`` batches of one shape and stacks them leaf by
  leaf: ``(n, B, ...)``. Inputs and targets may be any pytrees of arrays whose leaves share
  the batch axis (``((ids, mask), y)``, ``({"image": x}, y)``).

  ``batching.Batches`` (from ``batching.split``) are already stacked and pass through.
  """
  if isinstance(batches, batching.Batches):
    return batches.x, batches.y
  batches = list(batches)
  if not batches:
    raise ValueError("sensitivity analysis needs at least one (inputs, labels) batch; got none")
  xs, ys = [], []
  for i, item in enumerate(batches):
    if not isinstance(item, (tuple, list)) or len(item) != 2:
      raise ValueError(f"batch {i} must be an (inputs, labels) pair, got {type(item).__name__}")
    x, y = item
    nx = inputs_lib.batch_size(x, f"batch {i}'s inputs")
    ny = inputs_lib.batch_size(y, f"batch {i}'s labels")
    if nx != ny:
      raise ValueError(
          f"batch {i} has {nx} inputs but {ny} labels; both need the same "
          "(non-zero) number of examples"
      )
    shapes = (inputs_lib.shape_of(x), inputs_lib.shape_of(y))
    if xs and shapes != (inputs_lib.shape_of(xs[0]), inputs_lib.shape_of(ys[0])):
      raise ValueError(
          f"batch {i} has shapes {shapes[0]}/{shapes[1]} but batch 0 has "
          f"{inputs_lib.shape_of(xs[0])}/{inputs_lib.shape_of(ys[0])}; use equal "
          "batches (e.g. drop the remainder)"
      )
    xs.append(x)
    ys.append(y)
  return inputs_lib.stack(xs), inputs_lib.stack(ys)


def count_batches(stacked: Any) -> int:
  """Batches in stacked inputs (the leading axis of every leaf)."""
  return inputs_lib.batch_size(stacked)


def mean_and_stderr(samples: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
  """Mean and standard error (ddof=1) along ``axis``; the error is NaN with one sample."""
  n = samples.shape[axis]
  mean = samples.mean(axis)
  if n < 2:
    return mean, np.full(mean.shape, np.nan)
  return mean, samples.std(axis, ddof=1) / np.sqrt(n)


def baseline_losses(
    emulator: Emulator, params: Any, xs: np.ndarray, ys: np.ndarray, loss_fn: LossFn = cross_entropy
) -> np.ndarray:
  """The fp32 loss of every batch; raises if the loss is not a finite scalar."""
  fp32 = emulator.assignment("fp32")
  f = jax.jit(lambda p, x, y: loss_fn(emulator(p, x, fp32), y))
  batch = lambda tree, b: inputs_lib.take(tree, b)
  shape = jax.eval_shape(f, params, batch(xs, 0), batch(ys, 0)).shape
  if shape != ():
    raise ValueError(f"loss_fn must return a scalar (the batch mean), got shape {shape}")
  losses = np.array(
      [float(f(params, batch(xs, b), batch(ys, b))) for b in range(count_batches(xs))]
  )
  bad = np.flatnonzero(~np.isfinite(losses))
  if bad.size:
    raise ValueError(
        f"the fp32 loss of calibration batch {int(bad[0])} is {losses[bad[0]]}; "
        "sensitivities need a finite loss at full precision (check the inputs, "
        "labels and parameters)"
    )
  return losses


def batch_losses(
    emulator: Emulator,
    params: Any,
    xs: np.ndarray,
    ys: np.ndarray,
    assignments: np.ndarray,
    *,
    loss_fn: LossFn = cross_entropy,
    chunk_size: int = 32,
    progress: Progress | None = None,
    task: str = "assignments",
) -> np.ndarray:
  """Loss of every assignment on every batch, ``(n_assignments, n_batches)`` float64.

  One compiled call per chunk of assignments (``batching.sweep``: the chunk sharded over
  every device) runs the chunk over all batches.
  """
  assignments = np.asarray(assignments, np.int32)
  if assignments.ndim != 2 or assignments.shape[1] != len(emulator.ops) or not len(assignments):
    raise ValueError(
        f"assignments must have shape (n >= 1, {len(emulator.ops)}), got " f"{assignments.shape}"
    )
  emulator.check_modes(assignments.max(0))
  emulator.check_modes(assignments.min(0))
  n = len(assignments)
  done = None if progress is None else (lambda k: progress(task, k, n))
  losses = batching.sweep(
      _loss_fn(emulator, loss_fn),
      assignments,
      params,
      batches=(xs, ys),
      chunk_size=chunk_size,
      progress=done,
  )
  return np.asarray(losses, np.float64)


_LOSS_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _loss_fn(emulator: Emulator, loss_fn: LossFn) -> Callable:
  # One function object per (emulator, loss) so batching.sweep's compile cache hits.
  per_loss = _LOSS_FNS.setdefault(emulator, {})
  if loss_fn not in per_loss:

    def loss(modes, params, batch):
      x, y = batch
      return loss_fn(emulator(params, x, modes), y)

    per_loss[loss_fn] = loss
  return per_loss[loss_fn]


def single_op_assignments(n_ops: int) -> np.ndarray:
  """The all-fp32 row, then op ``i`` alone in mode ``m`` for ``i`` in ops, ``m`` in 1..6."""
  rows = np.zeros((1 + n_ops * (N_MODES - 1), n_ops), np.int32)
  for i in range(n_ops):
    rows[1 + i * (N_MODES - 1) : 1 + (i + 1) * (N_MODES - 1), i] = np.arange(1, N_MODES)
  return rows


def perturbation(
    emulator: Emulator,
    params: Any,
    xs: np.ndarray,
    ts: np.ndarray,
    *,
    loss_fn: LossFn = cross_entropy,
    chunk_size: int = 32,
    progress: Progress | None = None,
) -> Estimate:
  """Measured single-op Δloss: mean and standard error of paired per-batch differences.

  Args:
    xs, ts: stacked inputs and loss targets, ``(n_batches, B, ...)``.
  """
  n_ops = len(emulator.ops)
  losses = batch_losses(
      emulator,
      params,
      xs,
      ts,
      single_op_assignments(n_ops),
      loss_fn=loss_fn,
      chunk_size=chunk_size,
      progress=progress,
      task="perturbation",
  )
  diff = (losses[1:] - losses[:1]).reshape(n_ops, N_MODES - 1, -1)
  mean, err = mean_and_stderr(diff)
  zeros = np.zeros((n_ops, 1))
  return Estimate(
      delta_loss=np.concatenate([zeros, mean], 1),
      stderr=np.concatenate([zeros, err], 1),
      n_samples=count_batches(xs),
  )
