"""Precision-aware DMA: tensors in their storage formats, converted on the fly, bytes counted.

A weight stored in mode ``m`` occupies exactly what the NNP's memory would hold:

| storage | data | scales |
|---|---|---|
| fp32 | 4 bytes/element | none |
| bf16, fp16 | 2 bytes/element (the cast) | none |
| fp8_e4m3, fp8_e5m2 | 1 byte/element (the cast's bit pattern) | one float32 per output channel |
| int8 | 1 byte/element | one float32 per output channel |
| int4 | two elements per byte (low nibble first) | one float32 per output channel |

``pack`` quantizes exactly as the PAK does (``formats.quantize``), so ``unpack`` returns the
same grid values and scales bit for bit, and ``Packed.nbytes`` is the sum of the real
arrays' ``nbytes``.

Example:
  >>> import jax.numpy as jnp
  >>> w = jnp.arange(-6.0, 6.0).reshape(3, 4)
  >>> p = pack(w, "int4", channel_axes=(1,))
  >>> p.data.dtype.name, p.data.size, p.scale.size, p.nbytes
  ('uint8', 6, 4, 22)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

from aprec.emulator import formats
from aprec.emulator.formats import MODE_TABLE


@struct.dataclass
class Packed:
  """A tensor in its storage format.

  Attributes:
    data: the stored bytes/elements (uint8 for fp8/int8/int4, the float dtype otherwise).
    scale: float32 scales that broadcast against the unpacked tensor (size 0 when unscaled).
    shape: the tensor's shape.
    mode: index into ``MODE_TABLE`` of the storage format.
  """

  data: jax.Array
  scale: jax.Array
  shape: tuple[int, ...] = struct.field(pytree_node=False)
  mode: int = struct.field(pytree_node=False)

  @property
  def nbytes(self) -> int:
    """Bytes the storage occupies: data plus scales."""
    return int(
        self.data.size * self.data.dtype.itemsize + self.scale.size * self.scale.dtype.itemsize
    )

  @property
  def format(self) -> str:
    return MODE_TABLE[self.mode].name


def _mode(mode: int | str) -> int:
  return formats.mode_index(mode) if isinstance(mode, str) else int(mode)


def pack_int4(values: jax.Array) -> jax.Array:
  """Signed integers in [-8, 7] → uint8, two per byte (element 2i in the low nibble)."""
  flat = values.astype(jnp.int8).reshape(-1)
  if flat.size % 2:
    flat = jnp.concatenate([flat, jnp.zeros((1,), jnp.int8)])
  nibbles = lax.bitcast_convert_type(flat, jnp.uint8) & jnp.uint8(0x0F)
  return nibbles[0::2] | (nibbles[1::2] << 4)


def unpack_int4(data: jax.Array, size: int) -> jax.Array:
  """uint8 bytes → ``size`` signed int8 values (sign-extended nibbles)."""
  low, high = data & jnp.uint8(0x0F), data >> 4
  nibbles = jnp.stack([low, high], axis=-1).reshape(-1)[:size]
  signed = lax.bitcast_convert_type(nibbles << 4, jnp.int8) >> 4  # arithmetic shift extends
  return signed


def pack(x: jax.Array, mode: int | str, channel_axes: Sequence[int] = ()) -> Packed:
  """Store ``x`` in ``mode`` with one scale per index of ``channel_axes`` (empty: per tensor)."""
  m = _mode(mode)
  fmt = MODE_TABLE[m]
  x = jnp.asarray(x, jnp.float32)
  if any(not -x.ndim <= a < x.ndim for a in channel_axes):
    raise ValueError(f"channel_axes {tuple(channel_axes)} out of range for shape {x.shape}")
  channel_axes = tuple(a % x.ndim for a in channel_axes)
  reduce_axes = tuple(a for a in range(x.ndim) if a not in channel_axes)
  values, scale = formats.quantize(x, m, reduce_axes)
  if not fmt.scaled:
    return Packed(
        data=values.astype(fmt.dtype), scale=jnp.zeros((0,), jnp.float32), shape=x.shape, mode=m
    )
  if fmt.is_int and fmt.bits == 4:
    data = pack_int4(values)
  elif fmt.is_int:
    data = lax.bitcast_convert_type(values.astype(jnp.int8), jnp.uint8)
  else:
    data = lax.bitcast_convert_type(values.astype(fmt.dtype), jnp.uint8)
  return Packed(data=data, scale=scale, shape=x.shape, mode=m)


def unpack(packed: Packed) -> tuple[jax.Array, jax.Array]:
  """``(grid values as float32, scale)`` exactly as ``formats.quantize`` produced them."""
  fmt = MODE_TABLE[packed.mode]
  if not fmt.scaled:
    return packed.data.astype(jnp.float32), jnp.ones((1,) * len(packed.shape), jnp.float32)
  if fmt.is_int and fmt.bits == 4:
    ints = unpack_int4(packed.data, math.prod(packed.shape))
  elif fmt.is_int:
    ints = lax.bitcast_convert_type(packed.data, jnp.int8)
  else:
    ints = lax.bitcast_convert_type(packed.data, fmt.dtype)
  return ints.astype(jnp.float32).reshape(packed.shape), packed.scale


def load(packed: Packed) -> jax.Array:
  """The DMA transfer into the compute buffer: storage → float32 (values × scale)."""
  values, scale = unpack(packed)
  return values * scale


def storage_bytes(tree: Any) -> int:
  """Total bytes of a pytree whose leaves are arrays or ``Packed`` tensors."""
  leaves = jax.tree_util.tree_leaves(tree, is_leaf=lambda v: isinstance(v, Packed))
  return sum(v.nbytes if isinstance(v, Packed) else int(np.asarray(v).nbytes) for v in leaves)
