"""Checks of command-line input, run before any work: models, specs, output paths, steps.

Every check raises ``ValueError`` (or ``FileNotFoundError``) with one line naming the bad
value and what was expected; ``aprec.app.cli.main`` prints it without a traceback.
"""

from __future__ import annotations

import pathlib
from typing import Any

from aprec import checkpoint

MAX_STEPS = 100_000  # ~50 MB of JSONL from `aprec simulate`; more is a typo, not a run
PROFILES = pathlib.Path("runs/profiles")  # default profile directory of user models


def model_ref(ref: str) -> str:
  """A bundled model name or an importable ``package.module:factory`` (not called yet)."""
  from aprec import models

  return models.check_ref(ref)


def load_model(ref: str):
  """``aprec.models.load`` of a name or ``package.module:factory``."""
  from aprec import models

  return models.load(ref)


def spec(ref: str):
  """An ``NNPSpec`` from a preset name or a JSON spec file."""
  from aprec.hardware import specs

  return specs.get_spec(ref)


def default_profile_dir(ref: str) -> pathlib.Path:
  """Where a model's profile lives: ``<checkpoints>/<name>/profile`` beside a bundled model,
  ``runs/profiles/<module>.<factory>`` for a user factory."""
  from aprec import models

  if models.is_factory(ref):
    return PROFILES / ref.replace(":", ".")
  return models.default_checkpoint_dir() / ref / "profile"


def steps(value: int, what: str = "steps") -> int:
  """A step count in 1..``MAX_STEPS``."""
  if isinstance(value, bool) or not 1 <= value <= MAX_STEPS:
    raise ValueError(
        f"--{what} {value}; expected 1..{MAX_STEPS:,} (each step writes a line " "of metrics)"
    )
  return value


def out_dir(path: pathlib.Path, what: str) -> pathlib.Path:
  """A directory path (existing or not) that is not a file and whose parents are no files."""
  path = pathlib.Path(path).expanduser()
  for p in (path, *path.parents):
    if p.exists():
      if not p.is_dir():
        raise ValueError(f"--out {path}: {p} is a file; give a directory for the {what}")
      break
  return path


def artifact_out(path: pathlib.Path, *, overwrite: bool, marker: str, what: str) -> pathlib.Path:
  """An artifact directory ``write_directory`` will accept (see ``check_target``)."""
  return checkpoint.check_target(path, overwrite=overwrite, marker=marker, what=what)


def one_of(value: Any, known: tuple, what: str) -> Any:
  """``value`` if it is in ``known``, else a ValueError listing them."""
  if value not in known:
    raise ValueError(f"unknown {what} {value!r}; known: {', '.join(map(str, known))}")
  return value


def integer_labels(model, split: str, loss: str) -> None:
  """``--loss ce`` scores against class labels, so they must be integers."""
  import numpy as np

  if loss != "ce":
    return
  y = getattr(getattr(model.data, split, None), "y", None)
  dtype = None if y is None else np.asarray(y).dtype
  if dtype is not None and not np.issubdtype(dtype, np.integer):
    raise ValueError(
        f"--loss ce needs integer class labels, but {split} labels have dtype "
        f"{dtype}; use --loss kl (label-free) or convert the labels"
    )
