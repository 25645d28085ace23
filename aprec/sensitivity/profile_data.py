"""The sensitivity profile as data: per-op, per-mode Δloss estimates and their provenance.

``aprec.sensitivity.profile`` saves and loads these (and re-exports them).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aprec import checkpoint
from aprec.emulator import settings
from aprec.emulator.formats import MODES
from aprec.emulator.ops import Op
from aprec.sensitivity.op_identity import fingerprint
from aprec.sensitivity.op_identity import op_differences
from aprec.versions import library_versions

FORMAT_VERSION = 1
_OP_KEYS = (
    "name",
    "kind",
    "lhs_shape",
    "rhs_shape",
    "out_shape",
    "weight_operand",
    "macs",
    "contraction_size",
)


def _num(v: Any) -> float | None:
  v = float(v)
  return v if math.isfinite(v) else None


def _jsonable(value: Any) -> Any:
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return _jsonable(value.tolist())
  if isinstance(value, (np.integer, bool, np.bool_)):
    return value.item() if isinstance(value, np.generic) else value
  if isinstance(value, (float, np.floating)):
    return _num(value)
  return value


class ProfileError(ValueError):
  """A profile cannot be read, or does not belong to the model it is used with."""


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Estimate:
  """One method's prediction: Δloss per (op, mode) with its standard error.

  Attributes:
    delta_loss: float64 ``(n_ops, n_modes)``, predicted loss increase.
    stderr: float64 ``(n_ops, n_modes)``; NaN where no error could be estimated.
    n_samples: calibration batches (or Hessian probes) the error is over.
  """

  delta_loss: np.ndarray
  stderr: np.ndarray
  n_samples: int

  def __post_init__(self):
    d = np.array(self.delta_loss, np.float64)
    s = np.array(self.stderr, np.float64)
    if d.ndim != 2 or d.shape != s.shape:
      raise ValueError(
          f"delta_loss and stderr must be equal (n_ops, n_modes) arrays, got "
          f"{d.shape} and {s.shape}"
      )
    d.flags.writeable = s.flags.writeable = False
    object.__setattr__(self, "delta_loss", d)
    object.__setattr__(self, "stderr", s)

  def __eq__(self, other: object) -> bool:
    return (
        isinstance(other, Estimate)
        and self.n_samples == other.n_samples
        and np.array_equal(self.delta_loss, other.delta_loss, equal_nan=True)
        and np.array_equal(self.stderr, other.stderr, equal_nan=True)
    )


def op_from_dict(d: Mapping[str, Any]) -> Op:
  """Rebuilds an ``Op`` from ``Op.to_dict()`` (or its JSON form)."""
  kw = {k: d[k] for k in _OP_KEYS}
  for k in ("lhs_shape", "rhs_shape", "out_shape"):
    kw[k] = tuple(int(v) for v in kw[k])
  return Op(**kw)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class SensitivityProfile:
  """Predicted loss increase of every op in every mode, with how it was obtained.

  Attributes:
    model: the model's name.
    ops: the op table the profile was computed for (shapes and MACs at ``batch_size``).
    modes: mode names, the column order of every table (``aprec.MODES``).
    method: the primary method; ``delta_loss``/``stderr`` are its table.
    estimates: every computed method's table, by method name.
    dataset: where the calibration batches came from, e.g. ``"digits/train"``.
    n_batches, batch_size: calibration batches and examples per batch.
    baseline_loss: mean fp32 loss over the calibration batches.
    loss: what Δloss measures: ``"kl"``, ``"ce"``, ``"cosine"`` or ``"custom"`` (see
      ``sensitivity``).
    versions: library versions that produced it.
    fingerprint: ``fingerprint(ops)``.
    params_hash: ``aprec.checkpoint.params_hash`` of the weights it was computed with
      (None when unknown).
    details: JSON-serialisable extras (Hessian traces, fallbacks, timings, validation).
  """

  model: str
  ops: tuple[Op, ...]
  modes: tuple[str, ...]
  method: str
  estimates: Mapping[str, Estimate]
  dataset: str
  n_batches: int
  batch_size: int
  baseline_loss: float
  loss: str
  versions: Mapping[str, str]
  fingerprint: str
  details: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  params_hash: str | None = None

  def __post_init__(self):
    if self.method not in self.estimates:
      raise ValueError(
          f"primary method {self.method!r} has no estimate; computed: "
          f"{', '.join(self.estimates)}"
      )
    shape = (len(self.ops), len(self.modes))
    for name, est in self.estimates.items():
      if est.delta_loss.shape != shape:
        raise ValueError(
            f"estimate {name!r} has shape {est.delta_loss.shape}, expected {shape} " "(ops x modes)"
        )
    if fingerprint(self.ops) != self.fingerprint:
      raise ProfileError(
          f"the profile's fingerprint {self.fingerprint[:12]} does not match its "
          f"op table ({fingerprint(self.ops)[:12]}); it is damaged"
      )

  @property
  def op_names(self) -> tuple[str, ...]:
    return tuple(op.name for op in self.ops)

  @property
  def delta_loss(self) -> np.ndarray:
    return self.estimates[self.method].delta_loss

  @property
  def stderr(self) -> np.ndarray:
    return self.estimates[self.method].stderr

  @property
  def numerics(self) -> dict[str, str]:
    """The emulator settings it was made with (``aprec.emulator.settings``)."""
    return settings.of(self.details.get("numerics") or settings.LEGACY)

  @property
  def macs(self) -> np.ndarray:
    return np.array([op.macs for op in self.ops], np.int64)

  @property
  def weight_elements(self) -> np.ndarray:
    return np.array([op.weight_elements for op in self.ops], np.int64)

  def table(self, method: str | None = None) -> np.ndarray:
    """Δloss table ``(n_ops, n_modes)`` of ``method`` (default: the primary one)."""
    method = self.method if method is None else method
    if method not in self.estimates:
      raise ValueError(f"profile has no {method!r} estimate; it has: {', '.join(self.estimates)}")
    return self.estimates[method].delta_loss

  def with_primary(self, method: str) -> SensitivityProfile:
    """The same profile with another computed method as the primary one."""
    self.table(method)
    return dataclasses.replace(self, method=method)

  def with_details(self, **extra: Any) -> SensitivityProfile:
    """The same profile with entries added to ``details``."""
    return dataclasses.replace(self, details={**self.details, **extra})

  def to_json(self) -> dict:
    """The readable form: metadata, op table and every table keyed by op and mode."""

    def by_op(a: np.ndarray) -> dict:
      return {
          op.name: {m: _num(a[i, j]) for j, m in enumerate(self.modes)}
          for i, op in enumerate(self.ops)
      }

    return {
        "format_version": FORMAT_VERSION,
        "model": self.model,
        "method": self.method,
        "dataset": self.dataset,
        "n_batches": self.n_batches,
        "batch_size": self.batch_size,
        "baseline_loss": _num(self.baseline_loss),
        "loss": self.loss,
        "versions": dict(self.versions),
        "fingerprint": self.fingerprint,
        "params_hash": self.params_hash,
        "modes": list(self.modes),
        "ops": _jsonable([op.to_dict() for op in self.ops]),
        "estimates": {
            k: {
                "n_samples": e.n_samples,
                "delta_loss": by_op(e.delta_loss),
                "stderr": by_op(e.stderr),
            }
            for k, e in self.estimates.items()
        },
        "details": _jsonable(dict(self.details)),
    }

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, SensitivityProfile):
      return NotImplemented
    same_json = json.dumps(self.to_json(), sort_keys=True) == json.dumps(
        other.to_json(), sort_keys=True
    )
    return same_json and dict(self.estimates) == dict(other.estimates)


def make_profile(
    *,
    model: str,
    ops: Sequence[Op],
    estimates: Mapping[str, Estimate],
    dataset: str,
    n_batches: int,
    batch_size: int,
    baseline_loss: float,
    loss: str = "kl",
    method: str | None = None,
    details: Mapping[str, Any] | None = None,
    params: Any = None,
) -> SensitivityProfile:
  """A profile stamped with the op-table fingerprint, the library versions and (given
  ``params``) the hash of the weights it was computed with."""
  ops = tuple(ops)
  return SensitivityProfile(
      model=model,
      ops=ops,
      modes=tuple(MODES),
      method=method or next(iter(estimates)),
      estimates=dict(estimates),
      dataset=dataset,
      n_batches=int(n_batches),
      batch_size=int(batch_size),
      baseline_loss=float(baseline_loss),
      loss=str(loss),
      versions=library_versions(),
      fingerprint=fingerprint(ops),
      details=dict(details or {}),
      params_hash=None if params is None else checkpoint.params_hash(params),
  )


# --------------------------------------------------------------------------------------
# Checking a profile against a model.


def check_matches(profile: SensitivityProfile, ops: Sequence[Op], where: str = "") -> None:
  """Raises ``ProfileError`` naming the ops that differ if ``profile`` is for other ops."""
  if profile.fingerprint == fingerprint(tuple(ops)):
    return
  diff = op_differences(profile.ops, ops)
  shown = "\n  ".join(diff[:12]) + (f"\n  ... and {len(diff) - 12} more" if len(diff) > 12 else "")
  raise ProfileError(
      f"the sensitivity profile{' at ' + where if where else ''} was computed for model "
      f"{profile.model!r} with a different op table:\n  {shown}\n"
      "recompute it for this model with `aprec analyze MODEL` (or sensitivity.analyze)"
  )
