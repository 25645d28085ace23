"""Saving and loading a trained policy: orbax arrays plus a JSON record of what it fits.

A policy directory holds ``params/`` (orbax), ``policy.json`` (model, op-table fingerprint,
network and training settings, library versions), ``training_curve.json`` and
``SHA256SUMS``; it is written by ``aprec.checkpoint.write_directory`` (staged, locked,
refuses to replace a policy unless asked). ``load`` verifies the checksums, naming a file
that fails, and refuses a policy trained for another op table, naming both fingerprints.
Saving draws no figures: the training-curve PNG is the caller's (``aprec.app``).

Example:
  >>> import tempfile
  >>> import jax, numpy as np
  >>> from aprec.hardware.fit import dot_op
  >>> from aprec.rpm.learned import N_GLOBAL, N_PER_OP, Features, PolicyNet
  >>> ops = [dot_op(8, 16, 4)]
  >>> example = Features(np.zeros(N_GLOBAL, np.float32), np.zeros((1, N_PER_OP), np.float32))
  >>> params = PolicyNet(hidden=8).init(jax.random.key(0), example)
  >>> with tempfile.TemporaryDirectory() as tmp:
  ...   _ = save(f"{tmp}/policy", params, model="toy", ops=ops, hidden=8, config={})
  ...   restored, meta = load(f"{tmp}/policy", expect_ops=ops)
  >>> meta["hidden"], jax.tree.all(jax.tree.map(np.array_equal, params, restored))
  (8, True)
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from aprec import checkpoint
from aprec.emulator import settings
from aprec.emulator.ops import Op
from aprec.sensitivity.profile import fingerprint
from aprec.rpm import selector
from aprec.rpm.learned import N_GLOBAL, N_PER_OP, Features, PolicyNet
from aprec.versions import library_versions

JSON_FILE = "policy.json"
PARAMS_DIR = "params"
CURVE_FILE = "training_curve.json"


def _per_op(hidden: int, n_ops: int):
  example = Features(np.zeros(N_GLOBAL, np.float32), np.zeros((n_ops, N_PER_OP), np.float32))
  return PolicyNet(hidden=hidden), example


def _plan_selector(hidden: int, n_ops: int):
  return selector.SelectorNet(hidden=hidden), selector.example_features(1)


# kind -> (hidden, n_ops) -> (network, example input): the template ``load`` restores into
KINDS = {"per_op": _per_op, "plan_selector": _plan_selector}


class PolicyCheckpointError(ValueError):
  """A policy checkpoint cannot be read or does not fit the model it is used with."""


def save(
    directory: str | os.PathLike[str],
    params: Any,
    *,
    model: str,
    ops: Sequence[Op],
    hidden: int,
    config: dict,
    history: list[dict] | None = None,
    overwrite: bool = False,
    attachments: Mapping[str, Callable[[pathlib.Path], Any]] | None = None,
    numerics: Any = None,
    kind: str = "per_op",
) -> pathlib.Path:
  """Writes a policy through ``write_directory``; returns the absolute directory.

  ``attachments`` maps file names to writers called with the staged path (e.g. a training
  curve PNG). Raises ``ArtifactExistsError`` for a policy already there without
  ``overwrite`` and ``DirectoryLockedError`` while another process writes it. ``numerics``
  is the emulator (or its ``settings.of``) whose sensitivity table the policy was trained
  on; ``load`` refuses the policy for an emulator with other settings. ``kind`` names the
  network: ``"per_op"`` (``learned.PolicyNet``) or ``"plan_selector"``
  (``selector.SelectorNet``).
  """
  if kind not in KINDS:
    raise ValueError(f"kind = {kind!r}; expected one of {sorted(KINDS)}")
  import orbax.checkpoint as ocp

  meta = {
      "model": model,
      "fingerprint": fingerprint(tuple(ops)),
      "n_ops": len(ops),
      "op_names": [op.name for op in ops],
      "hidden": hidden,
      "kind": kind,
      "config": config,
      "numerics": settings.of(numerics if numerics is not None else settings.LEGACY),
      "versions": library_versions(),
  }
  with checkpoint.write_directory(
      directory, overwrite=overwrite, marker=JSON_FILE, what="policy"
  ) as staging:
    with ocp.StandardCheckpointer() as ckpt:
      ckpt.save(staging / PARAMS_DIR, jax.tree.map(np.asarray, params))
      ckpt.wait_until_finished()
    (staging / CURVE_FILE).write_text(json.dumps(history or [], indent=1))
    for name, write in (attachments or {}).items():
      write(staging / name)
    (staging / JSON_FILE).write_text(json.dumps(meta, indent=2, default=str))
  return pathlib.Path(directory).expanduser().resolve()


def load(
    directory: str | os.PathLike[str], expect_ops: Sequence[Op] | Any, kind: str | None = None
) -> tuple[Any, dict]:
  """``(params, metadata)`` of the policy at ``directory``, checked against ``expect_ops``
  (the ops, or an ``Emulator``: then its activation scaling and STE are checked too) and,
  when given, ``kind`` (``"per_op"`` or ``"plan_selector"``).

  Raises:
    FileNotFoundError: no policy there.
    PolicyCheckpointError: damaged, trained for another op table or other emulator
      settings, or of another kind than ``kind``.
  """
  emulator = expect_ops if hasattr(expect_ops, "ops") else None
  expect_ops = tuple(getattr(expect_ops, "ops", expect_ops))
  import orbax.checkpoint as ocp

  directory = pathlib.Path(directory).expanduser().resolve()
  try:
    checkpoint.verify(directory)
  except FileNotFoundError:
    pass  # reported below, with the hint
  except checkpoint.CheckpointError as e:
    raise PolicyCheckpointError(f"policy: {e}") from None
  if not (directory / JSON_FILE).is_file():
    raise FileNotFoundError(
        f"no policy at {directory} (no {JSON_FILE}); train one with "
        "`aprec train-policy experiments/<config>.json`"
    )
  try:
    meta = json.loads((directory / JSON_FILE).read_text())
  except Exception as e:
    raise PolicyCheckpointError(
        f"cannot read {directory / JSON_FILE}: " f"{checkpoint.short_error(e)}"
    ) from None
  want = fingerprint(tuple(expect_ops))
  if meta.get("fingerprint") != want:
    raise PolicyCheckpointError(
        f"the policy at {directory} was trained for model {meta.get('model')!r} with "
        f"{meta.get('n_ops')} ops {meta.get('op_names')} (fingerprint "
        f"{str(meta.get('fingerprint'))[:12]}), but this model's op table has {len(expect_ops)} "
        f"ops (fingerprint {want[:12]}); train a policy for this model"
    )
  if emulator is not None:
    settings.check(
        meta.get("numerics"),
        emulator,
        what=f"the policy at {directory}",
        error=PolicyCheckpointError,
    )
  saved_kind = meta.get("kind", "per_op")  # policies saved before kinds existed are per-op
  if saved_kind not in KINDS:
    raise PolicyCheckpointError(f"the policy at {directory} has unknown kind {saved_kind!r}")
  if kind is not None and saved_kind != kind:
    raise PolicyCheckpointError(
        f"the policy at {directory} is a {saved_kind} network; this needs a {kind} policy "
        f"({'aprec train-policy' if kind == 'per_op' else 'scripts/train_minilm_policy.py'})"
    )
  net, example = KINDS[saved_kind](int(meta["hidden"]), len(expect_ops))
  abstract = jax.eval_shape(net.init, jax.random.key(0), example)
  try:
    with ocp.StandardCheckpointer() as ckpt:
      params = ckpt.restore(directory / PARAMS_DIR, abstract)
  except Exception as e:
    raise PolicyCheckpointError(
        f"cannot restore the policy parameters at {directory}: " f"{checkpoint.short_error(e)}"
    ) from None
  return params, meta
