"""The sensitivity profile: per-op, per-mode predicted loss increase, saved beside a model.

A profile directory holds::

  <directory>/arrays/        orbax: {method: {"delta_loss", "stderr"}} float64 (n_ops, n_modes)
  <directory>/profile.json   everything, readable: op table, values by op and mode, metadata
  <directory>/*.png          figures written with it (heatmap, validation scatter)

``save`` goes through ``aprec.checkpoint.write_directory`` (staged, locked, checksummed,
refuses to replace a profile unless asked). ``load`` verifies the checksums, checks the
profile's op-table fingerprint against the model it is meant for (naming the ops that
differ) and, given the parameters, their hash against the one the profile was made with.

Example:
  >>> import numpy as np
  >>> from aprec.emulator.ops import Op
  >>> op = Op(name="dense", kind="dot_general", lhs_shape=(1, 2), rhs_shape=(2, 3),
  ...         out_shape=(1, 3), weight_operand=1, macs=6, contraction_size=2)
  >>> est = Estimate(delta_loss=np.zeros((1, 7)), stderr=np.zeros((1, 7)), n_samples=1)
  >>> p = make_profile(model="toy", ops=[op], estimates={"perturbation": est},
  ...                  dataset="toy/train", n_batches=1, batch_size=1, baseline_loss=0.5,
  ...                  loss="ce")
  >>> p.op_names, p.method
  (('dense',), 'perturbation')
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from aprec import checkpoint
from aprec.emulator import settings
from aprec.emulator.formats import MODES
from aprec.emulator.ops import Op
from aprec.sensitivity.op_identity import fingerprint as fingerprint
from aprec.sensitivity.op_identity import op_differences as op_differences
from aprec.versions import library_versions

ARRAYS_DIR = "arrays"
JSON_FILE = "profile.json"
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
    loss: what Δloss measures: ``"kl"``, ``"ce"`` or ``"custom"`` (see ``sensitivity``).
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


# --------------------------------------------------------------------------------------
# Saving and loading.


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


def save(
    profile: SensitivityProfile,
    directory: str | os.PathLike[str],
    *,
    attachments: Mapping[str, Callable[[pathlib.Path], Any]] | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
  """Writes ``profile`` to ``directory`` through ``aprec.checkpoint.write_directory``.

  ``attachments`` maps file names to writers called with the staged path (e.g. a heatmap
  PNG): they land together with the profile or not at all. Returns the absolute directory.
  Raises ``ArtifactExistsError`` for a profile already there without ``overwrite`` (or
  anything else there) and ``DirectoryLockedError`` while another process writes it.
  """
  import orbax.checkpoint as ocp

  text = json.dumps(profile.to_json(), indent=2, sort_keys=True) + "\n"
  arrays = {
      k: {"delta_loss": np.asarray(e.delta_loss), "stderr": np.asarray(e.stderr)}
      for k, e in profile.estimates.items()
  }
  with checkpoint.write_directory(
      directory, overwrite=overwrite, marker=JSON_FILE, what="sensitivity profile"
  ) as staging:
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(staging / ARRAYS_DIR, arrays)
      checkpointer.wait_until_finished()
    for name, write in (attachments or {}).items():
      write(staging / name)
    (staging / JSON_FILE).write_text(text)
  return pathlib.Path(directory).expanduser().resolve()


def check_params(
    profile: SensitivityProfile, params: Any, where: str = "", *, allow_other_params: bool = False
) -> None:
  """Raises ``ProfileError`` if ``profile`` was computed with weights other than ``params``
  (warns instead with ``allow_other_params``). Profiles without a hash are not checked."""
  if profile.params_hash is None or params is None:
    return
  if (got := checkpoint.params_hash(params)) == profile.params_hash:
    return
  message = (
      f"the sensitivity profile{' at ' + where if where else ''} was computed with "
      f"other weights (parameter hash {profile.params_hash[:12]}, these weights "
      f"{got[:12]}): its Δloss describes that model, not this one"
  )
  if not allow_other_params:
    raise ProfileError(
        message + "; recompute it with `aprec analyze MODEL`, or pass "
        "allow_other_params=True (--allow-other-weights) to use it anyway"
    )
  warnings.warn(message, stacklevel=3)


def load(
    directory: str | os.PathLike[str],
    expect: Sequence[Op] | Any | None = None,
    *,
    params: Any = None,
    allow_other_params: bool = False,
) -> SensitivityProfile:
  """Reads a profile written by ``save``, verifying its checksums.

  Args:
    directory: the profile directory.
    expect: the ops (or an ``Emulator``) of the model it will be used with; a profile
      for another op table raises ``ProfileError`` naming the ops that differ, and one
      made with other emulator settings (activation scaling, STE) than an ``Emulator``'s
      raises ``ProfileError`` naming the setting.
    params: the weights it will be used with; a profile made with other weights raises
      ``ProfileError`` (warns with ``allow_other_params``).

  Raises:
    FileNotFoundError: no profile at ``directory``.
    ProfileError: unreadable, damaged (a file fails its checksum), or for another model.
  """
  import orbax.checkpoint as ocp

  directory = pathlib.Path(directory).expanduser().resolve()
  path = directory / JSON_FILE
  try:
    checkpoint.verify(directory)
  except FileNotFoundError:
    pass  # reported below, with the hint
  except checkpoint.CheckpointError as e:
    raise ProfileError(f"sensitivity profile: {e}") from None
  if not path.is_file():
    raise FileNotFoundError(
        f"no sensitivity profile at {directory} (no {JSON_FILE}); create "
        "one with `aprec analyze MODEL`"
    )
  try:
    meta = json.loads(path.read_text())
    ops = tuple(op_from_dict(d) for d in meta["ops"])
    with ocp.StandardCheckpointer() as checkpointer:
      arrays = checkpointer.restore(directory / ARRAYS_DIR)
    estimates = {
        k: Estimate(
            delta_loss=np.asarray(arrays[k]["delta_loss"]),
            stderr=np.asarray(arrays[k]["stderr"]),
            n_samples=int(v["n_samples"]),
        )
        for k, v in meta["estimates"].items()
    }
    profile = SensitivityProfile(
        model=meta["model"],
        ops=ops,
        modes=tuple(meta["modes"]),
        method=meta["method"],
        estimates=estimates,
        dataset=meta["dataset"],
        n_batches=int(meta["n_batches"]),
        batch_size=int(meta["batch_size"]),
        baseline_loss=float("nan") if meta["baseline_loss"] is None else meta["baseline_loss"],
        loss=meta["loss"],
        versions=meta["versions"],
        fingerprint=meta["fingerprint"],
        details=meta["details"],
        params_hash=meta.get("params_hash"),
    )
  except ProfileError as e:  # names the file: the fingerprint error does not know it
    raise ProfileError(f"{path}: {e}") from None
  except KeyError as e:
    raise ProfileError(f"{path} lacks the key {e}; it is incomplete") from None
  except Exception as e:  # orbax and json raise many kinds of errors on damaged files
    raise ProfileError(
        f"cannot read the sensitivity profile at {directory}: " f"{checkpoint.short_error(e)}"
    ) from None
  if tuple(profile.modes) != tuple(MODES):
    raise ProfileError(
        f"profile at {directory} has modes {profile.modes}, this aprec has "
        f"{MODES}; recompute it with `aprec analyze MODEL`"
    )
  if expect is not None:
    check_matches(profile, getattr(expect, "ops", expect), where=str(directory))
    if hasattr(expect, "activation_scaling"):
      settings.check(
          profile.numerics,
          expect,
          what=f"the sensitivity profile at {directory}",
          error=ProfileError,
      )
  check_params(profile, params, str(directory), allow_other_params=allow_other_params)
  return profile
