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

from __future__ import annotations

import json
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
from aprec.sensitivity.profile_data import Estimate as Estimate
from aprec.sensitivity.profile_data import ProfileError as ProfileError
from aprec.sensitivity.profile_data import SensitivityProfile as SensitivityProfile
from aprec.sensitivity.profile_data import check_matches as check_matches
from aprec.sensitivity.profile_data import make_profile as make_profile
from aprec.sensitivity.profile_data import op_from_dict as op_from_dict

ARRAYS_DIR = "arrays"
JSON_FILE = "profile.json"


# --------------------------------------------------------------------------------------
# Saving and loading.


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
