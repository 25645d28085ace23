"""Scale-out: a batch of precision assignments, sharded over devices, one compiled call."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "assignments"


@functools.lru_cache(maxsize=64)
def _compiled(fn: Callable, n_args: int, mesh: Mesh) -> Callable:
  # Each device runs its shard of assignments one after another (lax.map). A batched
  # mode index would turn every per-mode branch into a select over all modes, and a
  # batched weight into a grouped convolution; one assignment at a time runs only the
  # branch it needs. Cached on the function so repeated sweeps reuse one compilation.
  def local(assignments, *args):
    return lax.map(lambda a: fn(a, *args), assignments)

  specs = (PartitionSpec(AXIS),) + (PartitionSpec(),) * n_args
  return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(AXIS),
                               check_vma=False))


def sweep(fn: Callable, assignments: Any, *args: Any, devices: Sequence[Any] | None = None) -> Any:
  """``[fn(a, *args) for a in assignments]`` as one compiled call, stacked.

  The assignment axis is padded to a multiple of the device count and sharded over a 1-D
  mesh of ``devices`` (default ``jax.devices()``); ``args`` are replicated. With many
  hosts, call ``jax.distributed.initialize()`` first and every device of every host joins.

  Example:
    >>> import jax.numpy as jnp
    >>> sweep(lambda a, x: a * x, jnp.arange(3.0), 2.0).tolist()
    [0.0, 2.0, 4.0]
  """
  devices = list(jax.devices() if devices is None else devices)
  assignments = jnp.asarray(assignments)
  n = assignments.shape[0]
  if n == 0:
    raise ValueError("sweep needs at least one assignment")
  padded_n = -(-n // len(devices)) * len(devices)
  if padded_n != n:  # repeat the last row; padded results are dropped below
    pad = jnp.broadcast_to(assignments[-1:], (padded_n - n,) + assignments.shape[1:])
    assignments = jnp.concatenate([assignments, pad])
  mesh = Mesh(np.array(devices), (AXIS,))
  assignments = jax.device_put(assignments, NamedSharding(mesh, PartitionSpec(AXIS)))
  args = jax.device_put(args, NamedSharding(mesh, PartitionSpec()))
  out = _compiled(fn, len(args), mesh)(assignments, *args)
  return jax.tree_util.tree_map(lambda y: y[:n], out)
