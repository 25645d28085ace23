"""What makes two op tables the same model: the batch-independent part of each op record,
its SHA-256 fingerprint, and readable differences. Profiles and policies store the
fingerprint of the op table they were made for."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from aprec.emulator.ops import Op


def _identity(op: Op) -> dict[str, Any]:
  """The batch-independent part of an op's record: what makes it the same op."""
  side = op.weight_operand
  weight_shape = None if side is None else (op.lhs_shape, op.rhs_shape)[side]
  return {
      "name": op.name,
      "kind": op.kind,
      "weight_operand": op.weight_operand,
      "weight_shape": None if weight_shape is None else list(weight_shape),
      "contraction_size": op.contraction_size,
  }


def fingerprint(ops: Sequence[Op]) -> str:
  """sha256 (hex) of the op table's batch-independent part, in order: names, kinds, weight
  operands and shapes, contraction sizes. A profile computed at one batch size therefore
  fits the same model run at any other.

  Example:
    >>> len(fingerprint([]))
    64
  """
  text = json.dumps([_identity(op) for op in ops], separators=(",", ":"), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()


def op_differences(profile_ops: Sequence[Op], model_ops: Sequence[Op]) -> list[str]:
  """Readable differences between two op tables (empty when they are the same)."""
  ours = {op.name: op for op in profile_ops}
  theirs = {op.name: op for op in model_ops}
  lines = []
  for name in [n for n in ours if n not in theirs]:
    lines.append(f"op {name!r} is in the profile but not in the model")
  for name in [n for n in theirs if n not in ours]:
    lines.append(f"op {name!r} is in the model but not in the profile")
  for name in [n for n in ours if n in theirs]:
    a, b = _identity(ours[name]), _identity(theirs[name])
    for k in a:
      if a[k] != b[k]:
        lines.append(f"op {name!r}: {k} is {a[k]} in the profile, {b[k]} in the model")
  if not lines and [o.name for o in profile_ops] != [o.name for o in model_ops]:
    lines.append("the same ops in a different order")
  return lines
