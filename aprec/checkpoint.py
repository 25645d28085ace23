"""Saving and restoring model parameters with orbax, plus a JSON metadata file.

A checkpoint is a directory::

  <directory>/params/         orbax StandardCheckpointer output
  <directory>/metadata.json   free-form JSON (indent 2, sorted keys)

``save`` writes into a temporary sibling directory and swaps it into place, so an
interrupted or failed save never replaces a good checkpoint with a broken one.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PARAMS_DIR = "params"
METADATA_FILE = "metadata.json"
TRAIN_HINT = "for the shipped models, run `python scripts/train_models.py` to create it"
RETRAIN_HINT = "for the shipped models, run `python scripts/train_models.py` to recreate it"

PyTree = Any


class CheckpointError(ValueError):
  """A checkpoint exists but cannot be read, or does not match what was asked for."""


def _json_default(value: Any) -> Any:
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} value {value!r} is not JSON-serialisable")


def _encode_metadata(metadata: Mapping[str, Any]) -> str:
  if not isinstance(metadata, Mapping):
    raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}.")
  try:
    return json.dumps(dict(metadata), indent=2, sort_keys=True, default=_json_default) + "\n"
  except (TypeError, ValueError) as e:
    raise TypeError(
        f"metadata must be JSON-serialisable (str, numbers, bools, None, lists, dicts): {e}"
    ) from e


def _looks_like_checkpoint(path: pathlib.Path) -> bool:
  return (path / PARAMS_DIR).is_dir() or (path / METADATA_FILE).is_file()


def save(
    directory: str | os.PathLike[str], params: PyTree, metadata: Mapping[str, Any]
) -> pathlib.Path:
  """Writes ``params`` and ``metadata`` as a checkpoint at ``directory``, replacing any old one.

  Args:
    directory: the checkpoint directory; its parent is created if needed. An
      existing checkpoint there is replaced only once the new one is complete.
    params: a pytree of arrays (a linen variables dict, an ``nnx.State``, ...).
    metadata: JSON-serialisable dict (numpy scalars and arrays are converted).

  Returns:
    The absolute checkpoint directory.

  Raises:
    TypeError: ``metadata`` is not JSON-serialisable (nothing is written).
    ValueError: ``directory`` exists but is not a checkpoint (refusing to replace it).
  """
  directory = pathlib.Path(directory).expanduser().resolve()
  metadata_text = _encode_metadata(metadata)
  if directory.exists() and not directory.is_dir():
    raise ValueError(f"{directory} exists and is not a directory; choose another checkpoint path.")
  if directory.is_dir() and any(directory.iterdir()) and not _looks_like_checkpoint(directory):
    raise ValueError(
        f"{directory} is a non-empty directory that is not a checkpoint (no {PARAMS_DIR}/ or "
        f"{METADATA_FILE}); refusing to replace it. Choose an empty or new directory.")
  directory.parent.mkdir(parents=True, exist_ok=True)

  with replace_atomically(directory) as staging:
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(staging / PARAMS_DIR, params)
      checkpointer.wait_until_finished()
    (staging / METADATA_FILE).write_text(metadata_text)
  return directory


@contextlib.contextmanager
def replace_atomically(directory: pathlib.Path) -> Iterator[pathlib.Path]:
  """Yields an empty staging directory that replaces ``directory`` once the block succeeds.

  A failed or interrupted write removes the staging directory and leaves any previous
  ``directory`` untouched: a half-written artifact never takes a good one's place.
  """
  tag = uuid.uuid4().hex[:8]
  staging = directory.parent / f".{directory.name}.tmp-{tag}"
  backup = directory.parent / f".{directory.name}.old-{tag}"
  staging.mkdir(parents=True)
  try:
    yield staging
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  had_old = directory.exists()
  if had_old:
    os.rename(directory, backup)
  try:
    os.rename(staging, directory)
  except BaseException:
    if had_old:
      os.rename(backup, directory)
    shutil.rmtree(staging, ignore_errors=True)
    raise
  if had_old:
    shutil.rmtree(backup, ignore_errors=True)


def _check_exists(directory: pathlib.Path) -> None:
  if not directory.is_dir():
    raise FileNotFoundError(f"No checkpoint directory at {directory} ({TRAIN_HINT}).")


def load_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
  """Reads ``metadata.json`` of the checkpoint at ``directory``.

  Raises:
    FileNotFoundError: ``directory`` does not exist.
    CheckpointError: the metadata file is missing, unreadable or not a JSON object.
  """
  directory = pathlib.Path(directory).expanduser().resolve()
  _check_exists(directory)
  path = directory / METADATA_FILE
  try:
    metadata = json.loads(path.read_text())
  except FileNotFoundError as e:
    raise CheckpointError(
        f"Checkpoint {directory} has no {METADATA_FILE} ({RETRAIN_HINT}).") from e
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise CheckpointError(f"Checkpoint metadata {path} is unreadable or not valid JSON: {e}") from e
  if not isinstance(metadata, dict):
    raise CheckpointError(
        f"Checkpoint metadata {path} must hold a JSON object, found {type(metadata).__name__}.")
  return metadata


def _key_str(key: Any) -> str:
  for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _flat_specs(tree: PyTree) -> dict[tuple[str, ...], tuple[tuple[int, ...], np.dtype]]:
  """Maps each leaf's path (as strings) to its (shape, dtype)."""
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return {
      tuple(_key_str(k) for k in path): (tuple(leaf.shape), np.dtype(leaf.dtype))
      for path, leaf in leaves
  }


def _describe(path: tuple[str, ...]) -> str:
  return "/".join(path) or "<root>"


def _check_specs(
    params_dir: pathlib.Path,
    stored: dict[tuple[str, ...], tuple[tuple[int, ...], np.dtype]],
    wanted: dict[tuple[str, ...], tuple[tuple[int, ...], np.dtype]],
    what: str,
) -> None:
  missing = sorted(set(wanted) - set(stored))
  extra = sorted(set(stored) - set(wanted))
  if missing or extra:
    parts = []
    if missing:
      parts.append("missing " + ", ".join(_describe(p) for p in missing[:8]))
    if extra:
      parts.append("unexpected " + ", ".join(_describe(p) for p in extra[:8]))
    raise CheckpointError(
        f"Checkpoint {params_dir} does not match the model's parameter tree ({'; '.join(parts)}); "
        f"was it saved for a different model? ({RETRAIN_HINT}).")
  for path, (shape, dtype) in wanted.items():
    got_shape, got_dtype = stored[path]
    if got_shape != shape or got_dtype != dtype:
      raise CheckpointError(
          f"Checkpoint {params_dir}: parameter {_describe(path)} {what} "
          f"{got_dtype}{list(got_shape)}, "
          f"the model expects {dtype}{list(shape)}; "
          f"{RETRAIN_HINT}.")


def restore(directory: str | os.PathLike[str], abstract_params: PyTree) -> PyTree:
  """Restores the parameters of the checkpoint at ``directory``.

  Args:
    directory: a checkpoint written by ``save``.
    abstract_params: a pytree with the structure, shapes and dtypes wanted (arrays or
      ``jax.ShapeDtypeStruct`` leaves), e.g. freshly initialised parameters or
      ``jax.eval_shape`` of the initialiser. Its structure (``nnx.State``, dicts) is
      the structure returned.

  Returns:
    A pytree like ``abstract_params`` holding jax arrays.

  Raises:
    FileNotFoundError: ``directory`` does not exist.
    CheckpointError: the parameters are missing, unreadable, or differ from
      ``abstract_params`` in tree structure, shape or dtype.
  """
  directory = pathlib.Path(directory).expanduser().resolve()
  _check_exists(directory)
  params_dir = directory / PARAMS_DIR
  if not params_dir.is_dir():
    raise CheckpointError(
        f"Checkpoint {directory} has no {PARAMS_DIR}/ directory; "
        f"{RETRAIN_HINT}.")
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_params)
  wanted = _flat_specs(abstract)
  with ocp.StandardCheckpointer() as checkpointer:
    try:
      stored_tree = checkpointer.metadata(params_dir).item_metadata.tree
      stored = _flat_specs(stored_tree)
    except Exception as e:  # orbax raises many kinds of errors on damaged files
      raise CheckpointError(
          f"Cannot read the parameter metadata of checkpoint {params_dir}: {e}") from e
    _check_specs(params_dir, stored, wanted, "is stored as")
    try:
      params = checkpointer.restore(params_dir, abstract)
    except Exception as e:
      raise CheckpointError(f"Cannot restore the parameters of checkpoint {params_dir}: {e}") from e
  if jax.tree.structure(params) != jax.tree.structure(abstract):
    raise CheckpointError(
        f"Checkpoint {params_dir} restored with tree structure {jax.tree.structure(params)}, "
        f"expected {jax.tree.structure(abstract)}.")
  _check_specs(params_dir, _flat_specs(params), wanted, "was restored as")
  return params
