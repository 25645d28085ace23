"""Saving and restoring model parameters with orbax, plus a JSON metadata file.

A checkpoint is a directory::

  <directory>/params/         orbax StandardCheckpointer output
  <directory>/metadata.json   free-form JSON (indent 2, sorted keys)
  <directory>/SHA256SUMS      checksums of every file, verified at load

``save`` goes through ``write_directory``: staged, locked, swapped in only when complete,
and an existing checkpoint is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from aprec.checkpoint._directory import CheckpointError, verify, write_directory
from aprec.typing import PyTree

PARAMS_DIR = "params"
METADATA_FILE = "metadata.json"
TRAIN_HINT = "for the shipped models, run `python scripts/train_models.py` to create it"
RETRAIN_HINT = "for the shipped models, run `python scripts/train_models.py` to recreate it"


_MAX_ERROR_CHARS = 300


def short_error(error: BaseException) -> str:
  """The first line of ``error``, cut to a few hundred characters (TensorStore and orbax
  errors run to pages)."""
  text = (str(error).strip().splitlines() or [type(error).__name__])[0]
  return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + " ..."


def params_hash(params: PyTree) -> str:
  """SHA-256 (hex) of a parameter pytree: every leaf's path, dtype, shape and bytes.

  Example:
    >>> a = {"w": np.zeros(2, np.float32)}
    >>> params_hash(a) == params_hash({"w": np.zeros(2, np.float32)})
    True
    >>> params_hash(a) == params_hash({"w": np.ones(2, np.float32)})
    False
  """
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    value = np.ascontiguousarray(np.asarray(leaf))
    digest.update(f"{jax.tree_util.keystr(path)}:{value.dtype.str}:{value.shape};".encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


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


def save(
    directory: str | os.PathLike[str],
    params: PyTree,
    metadata: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> pathlib.Path:
  """Writes ``params`` and ``metadata`` as a checkpoint at ``directory``.

  Args:
    directory: the checkpoint directory; its parent is created if needed.
    params: a pytree of arrays (a linen variables dict, an ``nnx.State``, ...).
    metadata: JSON-serialisable dict (numpy scalars and arrays are converted).
    overwrite: replace a checkpoint already there (only once the new one is complete).

  Returns:
    The absolute checkpoint directory.

  Raises:
    TypeError: ``metadata`` is not JSON-serialisable (nothing is written).
    ArtifactExistsError: ``directory`` holds a checkpoint and ``overwrite`` is False, or
      holds something that is not a checkpoint.
    DirectoryLockedError: another process is writing ``directory``.
  """
  metadata_text = _encode_metadata(metadata)
  with write_directory(
      directory, overwrite=overwrite, marker=METADATA_FILE, what="checkpoint"
  ) as staging:
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(staging / PARAMS_DIR, params)
      checkpointer.wait_until_finished()
    (staging / METADATA_FILE).write_text(metadata_text)
  return pathlib.Path(directory).expanduser().resolve()


def _check_exists(directory: pathlib.Path) -> None:
  """Raises unless ``directory`` is a checkpoint whose files all pass their checksums."""
  try:
    verify(directory)
  except FileNotFoundError:
    raise FileNotFoundError(f"No checkpoint directory at {directory} ({TRAIN_HINT}).") from None


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
    raise CheckpointError(f"Checkpoint {directory} has no {METADATA_FILE} ({RETRAIN_HINT}).") from e
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise CheckpointError(f"Checkpoint metadata {path} is unreadable or not valid JSON: {e}") from e
  if not isinstance(metadata, dict):
    raise CheckpointError(
        f"Checkpoint metadata {path} must hold a JSON object, found {type(metadata).__name__}."
    )
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
        f"was it saved for a different model? ({RETRAIN_HINT})."
    )
  for path, (shape, dtype) in wanted.items():
    got_shape, got_dtype = stored[path]
    if got_shape != shape or got_dtype != dtype:
      raise CheckpointError(
          f"Checkpoint {params_dir}: parameter {_describe(path)} {what} "
          f"{got_dtype}{list(got_shape)}, "
          f"the model expects {dtype}{list(shape)}; "
          f"{RETRAIN_HINT}."
      )


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
        f"Checkpoint {directory} has no {PARAMS_DIR}/ directory; " f"{RETRAIN_HINT}."
    )
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_params)
  wanted = _flat_specs(abstract)
  with ocp.StandardCheckpointer() as checkpointer:
    try:
      stored_tree = checkpointer.metadata(params_dir).item_metadata.tree
      stored = _flat_specs(stored_tree)
    except Exception as e:  # orbax raises many kinds of errors on damaged files
      raise CheckpointError(
          f"Cannot read the parameter metadata of checkpoint {params_dir}: " f"{short_error(e)}"
      ) from None
    _check_specs(params_dir, stored, wanted, "is stored as")
    try:
      params = checkpointer.restore(params_dir, abstract)
    except Exception as e:
      raise CheckpointError(
          f"Cannot restore the parameters of checkpoint {params_dir}: " f"{short_error(e)}"
      ) from None
  if jax.tree.structure(params) != jax.tree.structure(abstract):
    raise CheckpointError(
        f"Checkpoint {params_dir} restored with tree structure {jax.tree.structure(params)}, "
        f"expected {jax.tree.structure(abstract)}."
    )
  _check_specs(params_dir, _flat_specs(params), wanted, "was restored as")
  return params
