"""Type aliases used across aprec, in one place (as chex's ``pytypes``).

Example:
  >>> from aprec.typing import LossFn
  >>> import optax
  >>> loss: LossFn = lambda logits, labels: optax.softmax_cross_entropy_with_integer_labels(
  ...     logits, labels).mean()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
PyTree = Any
"""Nested lists, tuples, dicts and dataclasses of arrays (parameters, inputs)."""
Modes = Array
"""An assignment: one int32 mode index per op (``aprec.emulator.formats.MODES``)."""
Assignments = np.ndarray | Array
"""A stack of assignments, ``(n, n_ops)``."""
ApplyFn = Callable[[PyTree, Any], Array]
"""``apply_fn(params, x) -> outputs``, the model as the emulator takes it."""
LossFn = Callable[[Array, Array], Array]
"""``loss_fn(outputs, targets) -> scalar``, a batch-mean loss."""
Progress = Callable[[str, int, int], None]
"""``progress(task, done, total)``."""
Shifts = Sequence[Array | None]
"""One additive shift per op (an op output's shape, or None for no shift)."""
OperandShifts = Sequence[tuple[Array | None, Array | None]]
"""Per op, shifts of its (lhs, rhs) operands (None: no shift)."""
