"""Versions of the libraries whose behaviour a stored result depends on."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence

LIBRARIES = (
    "aprec",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "ml_dtypes",
    "numpy",
    "scikit-learn",
)


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str]:
  """``{package: version}`` for the installed packages (``"not installed"`` otherwise).

  Example:
    >>> "jax" in library_versions()
    True
  """
  out = {}
  for name in names:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = "not installed"
  return out
