"""The reference models that ship trained: a linen CNN and an nnx ViT on 8x8 digits.

``load(name)`` restores a shipped checkpoint and returns a pure
``apply_fn(params, x) -> logits`` with its parameters, the data splits and the
training metadata. Checkpoints live in ``<repo>/checkpoints/<name>/`` unless
``checkpoint_dir`` or the ``APREC_CHECKPOINTS`` environment variable says otherwise;
``python scripts/train_models.py`` recreates them.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from aprec import checkpoint
from aprec.models import data as data_lib
from aprec.models import digits_cnn, digits_vit
from aprec.models.metrics import accuracy, cross_entropy, evaluate

NAMES = ("digits_cnn", "digits_vit")
CHECKPOINTS_ENV = "APREC_CHECKPOINTS"
DATA_SEED = 0

_BUILDERS = {
    digits_cnn.NAME: digits_cnn.build,
    digits_vit.NAME: digits_vit.build,
}

__all__ = [
    "NAMES", "LoadedModel", "accuracy", "build", "cross_entropy", "default_checkpoint_dir",
    "evaluate", "load",
]


class LoadedModel(NamedTuple):
  """A trained model: ``apply_fn(params, x) -> logits`` and what it was trained with.

  Attributes:
    apply_fn: pure function of ``(params, x)``, ``x`` of shape ``(..., 8, 8, 1)``
      float32; traceable by ``jax.jit``, ``jax.grad``, ``jax.vmap``, ``jax.make_jaxpr``.
    params: the trained parameters (a linen variables dict ``{"params": ...}`` or an
      ``nnx.State``).
    data: the dataset splits the model was trained and evaluated on.
    metadata: the checkpoint's ``metadata.json`` (accuracies, hyper-parameters, ...).
    name: one of ``NAMES``.
  """

  apply_fn: Callable[[Any, jax.Array], jax.Array]
  params: Any
  data: data_lib.DatasetSplits
  metadata: dict[str, Any]
  name: str


def _check_name(name: str) -> None:
  if name not in _BUILDERS:
    raise ValueError(f"Unknown model {name!r}; known models: {', '.join(NAMES)}.")


def build(
    name: str, seed: int = 0, *, abstract: bool = False
) -> tuple[Callable[[Any, jax.Array], jax.Array], Any]:
  """Returns ``(apply_fn, params)`` with freshly initialised (untrained) parameters.

  With ``abstract=True`` the params are ``jax.ShapeDtypeStruct`` leaves (no compute),
  e.g. to restore a checkpoint into.
  """
  _check_name(name)
  return _BUILDERS[name](seed, abstract=abstract)


def default_checkpoint_dir() -> pathlib.Path:
  """``$APREC_CHECKPOINTS`` if set, else the repository's ``checkpoints/`` directory."""
  env = os.environ.get(CHECKPOINTS_ENV)
  if env:
    return pathlib.Path(env).expanduser()
  return pathlib.Path(__file__).resolve().parents[2] / "checkpoints"


def load(name: str, checkpoint_dir: str | os.PathLike[str] | None = None) -> LoadedModel:
  """Loads a shipped, trained model.

  Args:
    name: one of ``NAMES``.
    checkpoint_dir: the directory holding ``<name>/``; defaults to
      ``default_checkpoint_dir()``.

  Raises:
    ValueError: unknown ``name``.
    FileNotFoundError: no checkpoint for ``name`` (run ``python scripts/train_models.py``).
    aprec.checkpoint.CheckpointError: the checkpoint is damaged or does not fit the model.
  """
  _check_name(name)
  root = default_checkpoint_dir() if checkpoint_dir is None else pathlib.Path(checkpoint_dir)
  directory = root / name
  metadata = checkpoint.load_metadata(directory)
  apply_fn, abstract = build(name, abstract=True)
  params = checkpoint.restore(directory, abstract)
  seed = metadata.get("data_seed", DATA_SEED)
  return LoadedModel(
      apply_fn=apply_fn,
      params=params,
      data=data_lib.load_digits_splits(int(seed)),
      metadata=metadata,
      name=name,
  )
