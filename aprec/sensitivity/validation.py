"""How well a sensitivity profile predicts measured loss increases on held-out data.

Two checks, both against the emulator's measured loss on batches the profile never saw
(the test split, while profiles calibrate on train or val):

- **single op**: Spearman ρ between each method's Δloss and the measured Δloss of op
  ``i`` alone in mode ``m``, over the pairs whose mode is in ``pair_modes`` (pooled, and
  within each mode's column: does it rank the ops of one mode?): by default
  every mode but fp32, whose Δloss is 0 by construction for every method and measurement
  (those ties would only inflate ρ). This is meaningful for the default ``"kl"`` loss,
  whose Δ is non-negative and resolvable down to bf16/fp16 (~1e-6). With ``"ce"`` the
  measured Δ of all but the coarsest pairs is noise on a few hundred held-out examples
  (its first-order term ``∂L/∂y·Δy`` has a random sign per example), so expect a low ρ
  there whatever the method; narrowing ``pair_modes`` to ``("int4",)`` shows the ranking
  of the resolvable pairs.
- **additivity**: over random mixed assignments, Spearman ρ and R² between the sum of
  per-op predictions and the measured Δloss of the whole assignment. Each assignment
  lowers a uniformly drawn number ``k`` of ops (1..n_ops), chosen at random, to modes
  drawn uniformly from ``MODES[1:]``; the rest stay fp32. ``r2`` takes the prediction as it
  is (1 - SS_res/SS_tot), ``pearson_r2`` is the squared correlation (scale-free).

Example:
  >>> spearman([1, 2, 3, 4], [10, 20, 30, 25])
  0.8
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from aprec.sensitivity import measured as measured_lib
from aprec.sensitivity import reuse
from aprec.sensitivity.objective import DEFAULT_LOSS, objective
from aprec.typing import LossFn, Progress
from aprec.emulator import inputs as inputs_lib
from aprec.emulator import settings
from aprec.emulator.core import Emulator
from aprec.emulator.formats import MODES, N_MODES, mode_index
from aprec.sensitivity.profile import ProfileError, SensitivityProfile, check_matches

PAIR_MODES = MODES[1:]
N_ASSIGNMENTS = 128


def rankdata(a: Sequence[float]) -> np.ndarray:
  """Ranks from 1, ties sharing their average rank (as ``scipy.stats.rankdata``)."""
  a = np.asarray(a, np.float64).ravel()
  order = np.argsort(a, kind="mergesort")
  ranks = np.empty(len(a), np.float64)
  sorted_a = a[order]
  start = 0
  for end in range(1, len(a) + 1):
    if end == len(a) or sorted_a[end] != sorted_a[start]:
      ranks[order[start:end]] = 0.5 * (start + end - 1) + 1
      start = end
  return ranks


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
  """Pearson correlation; NaN when either side is constant or has < 2 values."""
  a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
  if a.shape != b.shape:
    raise ValueError(f"need equal-length sequences, got {a.shape} and {b.shape}")
  if len(a) < 2:
    return float("nan")
  a, b = a - a.mean(), b - b.mean()
  denom = np.sqrt(np.dot(a, a) * np.dot(b, b))
  return float(np.dot(a, b) / denom) if denom > 0 else float("nan")


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
  """Spearman rank correlation (Pearson of average ranks); NaN if a side is constant."""
  return pearson(rankdata(a), rankdata(b))


def r2(predicted: Sequence[float], measured: Sequence[float]) -> float:
  """Coefficient of determination of ``measured`` by ``predicted`` taken as is."""
  p, m = np.asarray(predicted, np.float64).ravel(), np.asarray(measured, np.float64).ravel()
  if p.shape != m.shape:
    raise ValueError(f"need equal-length sequences, got {p.shape} and {m.shape}")
  total = np.sum(np.square(m - m.mean()))
  return float(1.0 - np.sum(np.square(m - p)) / total) if total > 0 else float("nan")


def random_mixed_assignments(n_ops: int, n: int, *, seed: int = 0) -> np.ndarray:
  """``n`` assignments lowering ``k ~ U{1..n_ops}`` random ops to random non-fp32 modes."""
  if n_ops <= 0 or n <= 0:
    raise ValueError(f"need n_ops > 0 and n > 0, got n_ops={n_ops}, n={n}")
  rng = np.random.default_rng(seed)
  out = np.zeros((n, n_ops), np.int32)
  for row in out:
    k = rng.integers(1, n_ops + 1)
    ops = rng.choice(n_ops, size=k, replace=False)
    row[ops] = rng.integers(1, N_MODES, size=k)
  return out


def additive_prediction(table: np.ndarray, assignments: np.ndarray) -> np.ndarray:
  """``Σ_i table[i, a_i]`` for every assignment row ``a``."""
  assignments = np.asarray(assignments)
  return np.asarray(table)[np.arange(assignments.shape[1]), assignments].sum(-1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MethodScores:
  """One method's validation numbers (see the module docstring)."""

  method: str
  spearman_single_op: float
  n_pairs: int
  spearman_single_op_by_mode: dict[str, float]
  spearman_additive: float
  r2_additive: float
  pearson_r2_additive: float
  n_assignments: int


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Validation:
  """Measured single-op and mixed Δloss on held-out data, and every method's scores.

  Attributes:
    dataset, n_batches, batch_size: the held-out data.
    loss: the loss measured (``"kl"``, ``"ce"``, ``"custom"``).
    pair_modes: modes of the single-op pairs in the ρ.
    measured_single, measured_single_stderr: ``(n_ops, n_modes)`` measured Δloss.
    assignments: ``(n, n_ops)`` the random mixed assignments.
    measured_additive, measured_additive_stderr: their measured Δloss.
    predicted_single: method → ``(n_ops, n_modes)`` table from the profile.
    predicted_additive: method → ``(n,)`` summed predictions.
    scores: method → ``MethodScores``.
  """

  dataset: str
  loss: str
  n_batches: int
  batch_size: int
  pair_modes: tuple[str, ...]
  measured_single: np.ndarray
  measured_single_stderr: np.ndarray
  assignments: np.ndarray
  measured_additive: np.ndarray
  measured_additive_stderr: np.ndarray
  predicted_single: Mapping[str, np.ndarray]
  predicted_additive: Mapping[str, np.ndarray]
  scores: Mapping[str, MethodScores]

  @property
  def pair_mask(self) -> np.ndarray:
    cols = np.isin(np.arange(N_MODES), [mode_index(m) for m in self.pair_modes])
    return np.broadcast_to(cols, self.measured_single.shape)

  def summary(self) -> dict[str, Any]:
    """Scores by method plus what they were measured on (JSON-serialisable)."""
    return {
        "dataset": self.dataset,
        "loss": self.loss,
        "n_batches": self.n_batches,
        "batch_size": self.batch_size,
        "pair_modes": list(self.pair_modes),
        "scores": {k: dataclasses.asdict(v) for k, v in self.scores.items()},
    }

  def to_json(self) -> dict[str, Any]:
    """Everything, arrays as lists."""
    return {
        **self.summary(),
        "measured_single": self.measured_single.tolist(),
        "measured_single_stderr": self.measured_single_stderr.tolist(),
        "assignments": self.assignments.tolist(),
        "measured_additive": self.measured_additive.tolist(),
        "measured_additive_stderr": self.measured_additive_stderr.tolist(),
        "predicted_additive": {k: v.tolist() for k, v in self.predicted_additive.items()},
    }


def score(
    method: str,
    table: np.ndarray,
    measured_single: np.ndarray,
    mask: np.ndarray,
    assignments: np.ndarray,
    measured_additive: np.ndarray,
) -> MethodScores:
  """Scores of one Δloss table against measurements."""
  pred = additive_prediction(table, assignments)
  columns = np.flatnonzero(mask.any(0))
  return MethodScores(
      method=method,
      spearman_single_op=spearman(table[mask], measured_single[mask]),
      n_pairs=int(mask.sum()),
      spearman_single_op_by_mode={
          MODES[c]: spearman(table[:, c], measured_single[:, c]) for c in columns
      },
      spearman_additive=spearman(pred, measured_additive),
      r2_additive=r2(pred, measured_additive),
      pearson_r2_additive=pearson(pred, measured_additive) ** 2,
      n_assignments=len(assignments),
  )


def measure_single_ops(
    apply_fn: Callable,
    params: Any,
    batches: Sequence[tuple[Any, Any]],
    *,
    loss: str = DEFAULT_LOSS,
    loss_fn: LossFn | None = None,
    chunk_size: int = 32,
    progress: Progress | None = None,
    expect: SensitivityProfile | None = None,
    **emulator_options: Any,
) -> tuple[np.ndarray, np.ndarray]:
  """Measured Δloss of op ``i`` alone in mode ``m`` on ``batches``: mean and standard error
  ``(n_ops, n_modes)``, by the prefix-reuse sweep (``reuse.perturbation``; the whole model
  per assignment where the model cannot be cut at its ops). Arguments as for
  ``measure_assignments``."""
  obj = objective(loss, loss_fn)
  xs, ys = measured_lib.stack_batches(batches)
  emulator = Emulator(apply_fn, params, inputs_lib.take(xs, 0), **emulator_options)
  if expect is not None:
    check_matches(expect, emulator.ops)
    settings.check(
        expect.numerics, emulator, what=f"the {expect.model} profile", error=ProfileError
    )
  ts = obj.targets(apply_fn, params, xs, ys)
  measured_lib.baseline_losses(emulator, params, xs, ts, obj.loss_fn)
  kwargs = dict(loss_fn=obj.loss_fn, chunk_size=chunk_size, progress=progress)
  try:
    est = reuse.perturbation(emulator, params, xs, ts, **kwargs)
  except reuse.NotSegmentable:
    est = measured_lib.perturbation(emulator, params, xs, ts, **kwargs)
  return est.delta_loss, est.stderr


def measure_assignments(
    apply_fn: Callable,
    params: Any,
    batches: Sequence[tuple[Any, Any]],
    assignments: np.ndarray,
    *,
    loss: str = DEFAULT_LOSS,
    loss_fn: LossFn | None = None,
    chunk_size: int = 32,
    progress: Progress | None = None,
    expect: SensitivityProfile | None = None,
    **emulator_options: Any,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
  """Measured Δloss (against all-fp32) of every assignment on ``batches``.

  Args:
    apply_fn, params: the model.
    batches: ``[(x, y), ...]`` of equal shapes.
    assignments: ``(n, n_ops)`` mode indices.
    loss, loss_fn: what to measure, as in ``aprec.sensitivity.analyze``.
    expect: a profile the model must match (``ProfileError`` otherwise).

  Returns:
    ``(mean, stderr, (n_batches, batch_size))``; mean and stderr over batches, ``(n,)``.
  """
  obj = objective(loss, loss_fn)
  xs, ys = measured_lib.stack_batches(batches)
  emulator = Emulator(apply_fn, params, inputs_lib.take(xs, 0), **emulator_options)
  if expect is not None:
    check_matches(expect, emulator.ops)
    settings.check(
        expect.numerics, emulator, what=f"the {expect.model} profile", error=ProfileError
    )
  ts = obj.targets(apply_fn, params, xs, ys)
  measured_lib.baseline_losses(emulator, params, xs, ts, obj.loss_fn)
  rows = np.concatenate(
      [
          np.zeros((1, len(emulator.ops)), np.int32),
          np.asarray(assignments, np.int32).reshape(-1, len(emulator.ops)),
      ]
  )
  losses = measured_lib.batch_losses(
      emulator,
      params,
      xs,
      ts,
      rows,
      loss_fn=obj.loss_fn,
      chunk_size=chunk_size,
      progress=progress,
      task="measure",
  )
  mean, err = measured_lib.mean_and_stderr(losses[1:] - losses[:1])
  return mean, err, (measured_lib.count_batches(xs), inputs_lib.batch_size(inputs_lib.take(xs, 0)))


def validate(
    profile: SensitivityProfile,
    apply_fn: Callable,
    params: Any,
    batches: Sequence[tuple[Any, Any]],
    *,
    dataset: str = "held-out",
    n_assignments: int = N_ASSIGNMENTS,
    seed: int = 0,
    pair_modes: Sequence[str] = PAIR_MODES,
    extra_tables: Mapping[str, np.ndarray] | None = None,
    loss: str | None = None,
    loss_fn: LossFn | None = None,
    chunk_size: int = 32,
    progress: Progress | None = None,
    **emulator_options: Any,
) -> Validation:
  """Measures single-op and mixed assignments on ``batches`` and scores every method.

  Args:
    profile: the profile (all its methods are scored).
    apply_fn, params: the model it belongs to.
    batches: held-out ``[(x, y), ...]`` (e.g. the test split), not the calibration data.
    dataset: recorded name of the held-out data.
    n_assignments: random mixed assignments for the additivity check (>= 2).
    seed: draws the mixed assignments.
    pair_modes: modes of the single-op pairs in the ρ.
    extra_tables: more Δloss tables to score beside the profile's, by name.
    loss: the loss to measure (default: the profile's, ``profile.loss``).
    loss_fn: the custom loss of a ``"custom"`` profile.
    chunk_size, progress, emulator_options: as for ``aprec.sensitivity.analyze``.

  Raises:
    ProfileError: the profile belongs to another model.
    ValueError: a custom-loss profile without ``loss_fn``.
  """
  if n_assignments < 2:
    raise ValueError(f"n_assignments must be >= 2 for a rank correlation, got {n_assignments}")
  for m in pair_modes:
    mode_index(m)
  loss = profile.loss if loss is None else loss
  if loss == "custom" and loss_fn is None:
    raise ValueError("the profile was computed with a custom loss_fn; pass the same loss_fn")
  n_ops = len(profile.ops)
  mixed = random_mixed_assignments(n_ops, n_assignments, seed=seed)
  options = dict(
      loss=loss, loss_fn=loss_fn, chunk_size=chunk_size, progress=progress, expect=profile
  )
  measured, measured_err = measure_single_ops(
      apply_fn, params, batches, **options, **emulator_options
  )
  mean, err, (n_batches, batch_size) = measure_assignments(
      apply_fn, params, batches, mixed, **options, **emulator_options
  )
  tables = {name: est.delta_loss for name, est in profile.estimates.items()}
  tables.update(extra_tables or {})
  mask = np.broadcast_to(
      np.isin(np.arange(N_MODES), [mode_index(m) for m in pair_modes]), measured.shape
  )
  scores = {name: score(name, t, measured, mask, mixed, mean) for name, t in tables.items()}
  return Validation(
      dataset=dataset,
      loss=loss,
      n_batches=n_batches,
      batch_size=batch_size,
      pair_modes=tuple(pair_modes),
      measured_single=measured,
      measured_single_stderr=measured_err,
      assignments=mixed,
      measured_additive=mean,
      measured_additive_stderr=err,
      predicted_single=tables,
      predicted_additive={n: additive_prediction(t, mixed) for n, t in tables.items()},
      scores=scores,
  )
