"""The one sweep loop: many precision assignments over many batches, compiled once.

``sweep`` is the mechanism every measurement over assignments goes through (the
emulator's ``sweep``, the evaluator, sensitivity's perturbation and validation sweeps, the
RPM's accuracy of what each step ran): the assignments are cut into chunks, each chunk
padded to one compiled shape and sharded over the devices, and each device runs its share
one assignment after another over every batch. ``split`` is the one way data is cut into
equal batches.

Example:
  >>> import jax.numpy as jnp, numpy as np
  >>> b = split(np.arange(10.0), np.arange(10), batch_size=4)   # remainder dropped
  >>> b.x.shape
  (2, 4)
  >>> out = sweep(lambda a, batch: a * batch[0].sum(), jnp.arange(3.0), batches=b)
  >>> out.tolist()                                              # (assignment, batch)
  [[0.0, 0.0], [6.0, 22.0], [12.0, 44.0]]
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from aprec.emulator import inputs as inputs_lib
from aprec.typing import PyTree

AXIS = "assignments"


class Batches(NamedTuple):
  """Data cut into equal batches: ``x [n_batches, batch, ...]`` (a pytree), ``y [n_batches,
  batch, ...]``."""

  x: PyTree
  y: Any


def split(x: PyTree, y: Any, batch_size: int, n_batches: int | None = None) -> Batches:
  """The first ``n_batches`` (default: all) consecutive equal batches; the remainder dropped.

  ``x`` may be a pytree of arrays sharing the leading example axis; leaves that disagree
  on it (or with ``y``) raise ``ValueError`` naming each leaf's size.
  """
  n = len(y)
  if inputs_lib.batch_size(x) != n:
    raise ValueError(
        f"the inputs hold {inputs_lib.batch_size(x)} examples but there are {n} "
        "targets; expected one target per example"
    )
  if batch_size <= 0 or batch_size > n:
    raise ValueError(f"batch_size must be in 1..{n} (the number of examples), got {batch_size}")
  count = n // batch_size if n_batches is None else min(n_batches, n // batch_size)
  if count <= 0:
    raise ValueError(f"n_batches must be positive, got {n_batches}")
  cut = lambda a: np.asarray(a)[: count * batch_size].reshape(count, batch_size, *np.shape(a)[1:])
  return Batches(jax.tree.map(cut, x), cut(y))


@functools.lru_cache(maxsize=64)
def _compiled(fn: Callable, n_args: int, over_batches: bool, mesh: Mesh) -> Callable:
  # Each device runs its shard of assignments one after another (lax.map). A batched
  # mode index would turn every per-mode branch into a select over all modes, and a
  # batched weight into a grouped convolution; one assignment at a time runs only the
  # branch it needs. Cached on the function so repeated sweeps reuse one compilation.
  def one(a, args):
    if not over_batches:
      return fn(a, *args)
    *args, batches = args
    return lax.map(lambda batch: fn(a, *args, batch), batches)

  def local(assignments, *args):
    return lax.map(lambda a: one(a, args), assignments)

  n_in = n_args + over_batches
  specs = (PartitionSpec(AXIS),) + (PartitionSpec(),) * n_in
  return jax.jit(
      jax.shard_map(
          local, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(AXIS), check_vma=False
      )
  )


def _chunk_size(n: int, chunk_size: int | None) -> int:
  if chunk_size is None:
    return n
  if chunk_size <= 0:
    raise ValueError(f"chunk_size must be positive, got {chunk_size}")
  # Fewer assignments than a chunk: the next power of two, so sweeps of a few assignments
  # share a handful of compiled shapes.
  return min(chunk_size, 1 << (n - 1).bit_length())


def sweep(
    fn: Callable,
    assignments: Any,
    *args: Any,
    batches: PyTree | None = None,
    chunk_size: int | None = None,
    devices: Sequence[Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Any:
  """``[fn(a, *args) for a in assignments]`` (or ``[[fn(a, *args, b) for b in batches] ...]``)
  in compiled calls, stacked.

  Args:
    fn: a jittable ``fn(assignment, *args[, batch])``; pass the same function object
      each time so its compilation is reused.
    assignments: ``(n, ...)``; row ``i`` is ``fn``'s first argument.
    *args: replicated on every device.
    batches: a pytree with a leading batch axis; ``fn`` then runs on every batch in turn
      and the results get a batch axis after the assignment axis.
    chunk_size: assignments per compiled call (default: all in one); every chunk is
      padded to one shape (repeating the last row), so one compilation serves all.
    devices: the 1-D mesh the chunk is sharded over (default ``jax.devices()``). With
      many hosts, call ``jax.distributed.initialize()`` first and every device joins.
    progress: called with the number of assignments done after each chunk.

  Example:
    >>> import jax.numpy as jnp
    >>> sweep(lambda a, x: a * x, jnp.arange(3.0), 2.0).tolist()
    [0.0, 2.0, 4.0]
  """
  devices = list(jax.devices() if devices is None else devices)
  assignments = np.asarray(assignments)
  n = assignments.shape[0]
  if n == 0:
    raise ValueError("sweep needs at least one assignment")
  size = _chunk_size(n, chunk_size)
  size = -(-size // len(devices)) * len(devices)
  mesh = Mesh(np.array(devices), (AXIS,))
  replicated = NamedSharding(mesh, PartitionSpec())
  inputs = args if batches is None else (*args, batches)
  inputs = jax.device_put(inputs, replicated)
  compiled = _compiled(fn, len(args), batches is not None, mesh)
  outs = []
  for start in range(0, n, size):
    chunk = assignments[start : start + size]
    done = len(chunk)
    if done < size:  # one compiled shape: pad with the last row, drop its results below
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - done, 0)])
    chunk = jax.device_put(chunk, NamedSharding(mesh, PartitionSpec(AXIS)))
    outs.append(jax.tree.map(lambda y: y[:done], compiled(chunk, *inputs)))
    if progress is not None:
      progress(start + done)
  if len(outs) == 1:
    return outs[0]
  return jax.tree.map(lambda *ys: jnp.concatenate(ys), *outs)
