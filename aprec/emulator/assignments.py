"""Assignments: one mode index per op, parsed from mode names and checked at the boundary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aprec.emulator import formats
from aprec.emulator.formats import MODES, N_MODES
from aprec.emulator.ops import Op


def is_traced(tree: Any) -> bool:
  """Whether any leaf of ``tree`` is a JAX tracer (inside ``jit``/``vmap``/``grad``)."""
  return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


def parse(
    op_names: Sequence[str], modes: str | Mapping[str, str] | None = None, *, default: str = "fp32"
) -> jax.Array:
  """An int32 assignment for ops ``op_names`` from mode names.

  ``modes`` is one mode for every op (``"int8"``), a comma list where a bare mode sets the
  default and ``name=mode`` sets one op (``"int8,Dense_1=fp32"``), or a mapping of op
  names to modes.

  Example:
    >>> parse(["a", "b"], "int8,b=fp16").tolist()
    [5, 2]
  """
  overrides: dict[str, str] = {}
  if isinstance(modes, str):
    tokens = [t.strip() for t in modes.split(",")]
    if "" in tokens:
      raise ValueError(
          f"modes {modes!r} has an empty entry; write one mode (int8) or a comma "
          "list such as 'int8,Dense_1=fp32'"
      )
    defaults = [t for t in tokens if "=" not in t]
    if len(defaults) > 1:
      raise ValueError(
          f"modes {modes!r} sets the default mode {len(defaults)} times "
          f"({', '.join(defaults)}); give one bare mode and NAME=MODE per op"
      )
    for token in tokens:
      if "=" in token:
        name, mode = (s.strip() for s in token.split("=", 1))
        if name in overrides:
          raise ValueError(f"modes {modes!r} sets op {name!r} twice")
        overrides[name] = mode
      else:
        default = token
  elif modes is not None:
    overrides = dict(modes)
  unknown = sorted(set(overrides) - set(op_names))
  if unknown:
    raise ValueError(
        f"unknown op name(s) {unknown}; this model's ops are: " f"{', '.join(op_names)}"
    )
  return jnp.asarray(formats.mode_indices([overrides.get(n, default) for n in op_names]))


def check(ops: Sequence[Op], modes: Any) -> jax.Array:
  """Validates an assignment at the boundary; traced values get shape/dtype checks only
  (under ``jit``/``vmap`` an out-of-range index makes that op's output NaN)."""
  if isinstance(modes, (list, tuple)) and is_traced(modes):
    raise TypeError(
        f"modes is a Python {type(modes).__name__} of {len(modes)} traced values (jax.jit "
        "passes each element of a list as its own argument); pass one int32 array, e.g. "
        "emulator.assignment('int8') or jnp.asarray([...], jnp.int32)"
    )
  shape, dtype = np.shape(modes), jnp.result_type(modes) if hasattr(modes, "dtype") else None
  if dtype is None:
    arr = np.asarray(modes)
    dtype = arr.dtype
  if not np.issubdtype(dtype, np.integer):
    raise TypeError(
        f"modes must be an integer array of mode indices (0..{N_MODES - 1}: "
        f"{', '.join(MODES)}), got dtype {dtype}; build one with "
        f"emulator.assignment('int8') or aprec.emulator.formats.mode_indices([...])"
    )
  if shape != (len(ops),):
    raise ValueError(
        f"modes must have shape ({len(ops)},), one entry per op "
        f"({', '.join(o.name for o in ops)}), got shape {shape}"
    )
  if not isinstance(modes, jax.core.Tracer):
    arr = np.asarray(modes)
    bad = np.flatnonzero((arr < 0) | (arr >= N_MODES))
    if bad.size:
      i = int(bad[0])
      raise ValueError(
          f"modes[{i}] = {int(arr[i])} (op {ops[i].name!r}) is not a mode "
          f"index; valid indices are 0..{N_MODES - 1} ({', '.join(MODES)})"
      )
  return jnp.asarray(modes, jnp.int32)
