"""What flows through an emulator's ops: operand ranges, calibration, stored weights, sweeps.

``Measurements`` is a base of ``aprec.emulator.Emulator``; its methods read the traced model
through ``Emulator.run_with`` at fp32 (or run it at many assignments, ``sweep``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aprec.emulator import dma
from aprec.emulator.dma import Packed


class Measurements:
  """The emulator's measurement methods (mixed into ``Emulator``)."""

  def _observe(self, params: Any, inputs: Any, fn: Callable) -> list[Any]:
    """``[fn(op, lhs, rhs) for each op]`` from one fp32 pass of the model."""
    seen: dict[int, Any] = {}

    def compute(i, contraction, lhs, rhs):
      seen[i] = fn(self.ops[i], lhs, rhs)
      return contraction.float_product(lhs, rhs)

    self.run_with(params, inputs, compute)
    return [seen[i] for i in range(len(self.ops))]

  def operand_ranges(self, params: Any, inputs: Any) -> jax.Array:
    """``max |operand|`` of every op's (lhs, rhs) at fp32, shape ``(len(ops), 2)``."""
    amax = lambda op, lhs, rhs: jnp.stack([jnp.max(jnp.abs(lhs)), jnp.max(jnp.abs(rhs))])
    return jnp.stack(self._observe(params, inputs, amax)).astype(jnp.float32)

  def store_weights(self, params: Any, modes: Any) -> tuple[Packed | None, ...]:
    """Every op's weight in the storage format of its mode (None for ops without one).

    Example:
      ``dma.storage_bytes`` of the result is what the NNP's memory holds: a 16 x 4 weight
      at int4 is 32 bytes of nibbles plus 4 float32 channel scales (256 bytes at fp32).

      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> from aprec.emulator import dma
      >>> model, x = nn.Dense(4), jnp.ones((2, 16))
      >>> params = model.init(jax.random.key(0), x)
      >>> from aprec.emulator import Emulator
      >>> emu = Emulator(model.apply, params, x)
      >>> dma.storage_bytes(emu.store_weights(params, emu.assignment("int4")))
      48
    """
    modes = np.asarray(self.check_modes(modes))
    weights = self._observe(
        params,
        self._example_inputs(),
        lambda op, lhs, rhs: (lhs, rhs)[op.weight_operand] if op.has_weight else None,
    )
    return tuple(
        None if w is None else dma.pack(w, int(m), op.weight_channel_axes)
        for op, w, m in zip(self.ops, weights, modes)
    )

  def _example_inputs(self) -> Any:
    zeros = [jnp.zeros(a.shape, a.dtype) for a in self._input_avals]
    return jax.tree_util.tree_unflatten(self._inputs_tree, zeros)

  def calibrate(self, params: Any, batches: Iterable[Any]) -> jax.Array:
    """Static operand ranges: the maximum of ``operand_ranges`` over calibration batches."""
    ranges_fn = jax.jit(self.operand_ranges)
    result = None
    for inputs in batches:
      r = ranges_fn(params, inputs)
      result = r if result is None else jnp.maximum(result, r)
    if result is None:
      raise ValueError("calibrate needs at least one batch of inputs")
    return result

  def sweep(self, params: Any, inputs: Any, assignments: Any, *, devices=None) -> Any:
    """Outputs for assignments ``(n, len(ops))`` in one compiled call, sharded over
    ``devices`` (default: all), each device running its share in turn (``batching.sweep``)."""
    from aprec.emulator import batching

    rows = np.asarray(assignments)
    if rows.ndim != 2 or len(rows) == 0:
      raise ValueError(
          f"assignments must have shape (n, {len(self.ops)}) with n >= 1, got " f"{rows.shape}"
      )
    self.check_modes(rows.max(0))  # range checks on the extremes cover every row
    self.check_modes(rows.min(0))
    # A bound method (equal across calls) so batching.sweep's compile cache hits.
    return batching.sweep(self._modes_first, rows, params, inputs, devices=devices)

  def _modes_first(self, modes, params, inputs):
    return self(params, inputs, modes)
