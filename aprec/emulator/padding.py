"""Padding masks: which input is the mask, and dynamic scales that ignore padded positions.

A padded batch holds real positions and padding. Dynamic activation scales computed over
both let the padding's values (and so, in a sequence model, the padded ids) move the
scales of real positions; ``masked_amax`` computes ranges over real positions only, so
real outputs do not depend on what the padding holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from aprec.emulator import ranges

MASK_NAMES = ("mask", "attention_mask", "padding_mask")


def find_mask(paths_and_leaves) -> int | None:
  """Index of the one input leaf that is a padding mask, else None.

  A mask is a rank-2 ``(batch, positions)`` leaf that is boolean or sits under a dict key
  in ``MASK_NAMES``.

  Example:
    >>> import numpy as np
    >>> leaves = jax.tree_util.tree_flatten_with_path(
    ...     {"ids": np.zeros((2, 5), np.int32), "attention_mask": np.ones((2, 5), np.int32)})[0]
    >>> find_mask(leaves)
    0
  """

  def is_mask(path, leaf):
    if np.ndim(leaf) != 2:
      return False
    named = bool(path) and getattr(path[-1], "key", None) in MASK_NAMES
    return named or jnp.result_type(leaf) == jnp.bool_

  found = [i for i, (path, leaf) in enumerate(paths_and_leaves) if is_mask(path, leaf)]
  return found[0] if len(found) == 1 else None


def masked_amax(x: jax.Array, mask: jax.Array, reduce_axes: Sequence[int]) -> jax.Array | None:
  """``max |x|`` over ``reduce_axes`` counting only real positions; None where the mask
  cannot matter.

  ``x``'s positions are its axis 0 (batch, as ``mask``'s) and its first later axis of
  ``mask``'s length (tokens: ``(batch, tokens, ...)`` activations, ``(batch, heads, queries,
  keys)`` attention weights). A tensor without such axes keeps its own dynamic range, and
  so does one whose scales are never shared across positions (neither axis is reduced
  over, as with per-token scales): a padded position's scale then covers that position
  alone, and skipping the mask saves a pass over the tensor.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[[1.0], [9.0]]])  # (batch 1, 2 positions, 1 feature)
    >>> float(masked_amax(x, jnp.array([[True, False]]), (0, 1, 2))[0, 0, 0])
    1.0
  """
  batch, positions = mask.shape
  if x.ndim < 2 or x.shape[0] != batch:
    return None
  axis = next((a for a in range(1, x.ndim) if x.shape[a] == positions), None)
  if axis is None or not {0, axis} & set(reduce_axes):
    return None
  shape = [1] * x.ndim
  shape[0], shape[axis] = batch, positions
  real = jnp.reshape(jnp.asarray(mask) != 0, shape)
  return ranges.amax_over(x, reduce_axes, where=real)


def operand_amax(
    reduce_axes: tuple[Sequence[int], Sequence[int]],
    operands: tuple[jax.Array, jax.Array],
    weight_operand: int | None,
    calibrated: jax.Array | None = None,
    mask: jax.Array | None = None,
) -> list[jax.Array | None]:
  """``[lhs_amax, rhs_amax]`` of one op for ``pak.apply``: the ranges its scales come from.

  The weight (``weight_operand``) gets None: its own per-channel range. Each activation
  gets its calibrated range (``calibrated``, this op's ``(2,)`` row of
  ``Emulator.calibrate``) if given, else its range over real positions under a padding
  ``mask`` where a scale is shared across positions (``masked_amax``), else None (its own
  dynamic range).

  Example:
    >>> import jax.numpy as jnp
    >>> x, w = jnp.array([[[1.0], [9.0]]]), jnp.ones((1, 3))  # (batch, positions, 1), weight
    >>> mask = jnp.array([[True, False]])
    >>> lhs, rhs = operand_amax(((1, 2), (0,)), (x, w), 1, mask=mask)  # shared across positions
    >>> lhs.ravel().tolist(), rhs
    ([1.0], None)
    >>> operand_amax(((2,), (0,)), (x, w), 1, mask=mask)  # per position: the mask cannot matter
    [None, None]
    >>> operand_amax(((2,), (0,)), (x, w), 1, calibrated=jnp.array([4.0, 5.0]))[0].tolist()
    4.0
  """

  def one(side: int) -> jax.Array | None:
    if side == weight_operand:
      return None
    if calibrated is not None:
      return calibrated[side]
    if mask is not None:
      return masked_amax(operands[side], mask, reduce_axes[side])
    return None

  return [one(0), one(1)]
