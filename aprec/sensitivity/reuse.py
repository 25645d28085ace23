"""The single-op perturbation sweep with the fp32 prefix computed once and reused.

The plain sweep (``measured.perturbation``) runs the whole model for every "op ``i`` alone
in mode ``m``" assignment. Everything before op ``i`` is then the fp32 model's, the same
for every mode of op ``i`` and every later op. This sweep cuts the model into groups of ops
(``aprec.emulator.segments.Segments``: one group per transformer block or finer), runs the
model once at fp32 per batch keeping the values live at each group's first op, and for each
group runs only its slice (its ops in every single-op assignment) and the fp32 rest of the
model from there. Groups of identical structure share one compiled slice, so the mode
switches of one block are compiled once, not once per block.

For a stack of ``L`` identical blocks the work is about ``(L + 1) / 2L`` of the plain
sweep's (plus the recomputed ops of a group before the changed one), and the compiled
switch code ``1 / L`` of it. Results equal the plain sweep's up to floating-point
reassociation between separately compiled programs (a test compares both).

Example:
  >>> import jax, jax.numpy as jnp, flax.linen as nn, numpy as np
  >>> from aprec.emulator.core import Emulator
  >>> from aprec.sensitivity.objective import cosine_distance
  >>> model = nn.Sequential([nn.Dense(6), nn.relu, nn.Dense(6), nn.relu, nn.Dense(3)])
  >>> xs = jax.random.normal(jax.random.key(0), (2, 8, 6))
  >>> params = model.init(jax.random.key(1), xs[0])
  >>> emu = Emulator(model.apply, params, xs[0])
  >>> ts = np.stack([jax.jit(model.apply)(params, x) for x in xs])
  >>> est = perturbation(emu, params, xs, ts, loss_fn=cosine_distance)  # 3 groups of 1 op
  >>> est.delta_loss.shape, bool(est.delta_loss[2, 6] > est.delta_loss[2, 1])  # int4 > bf16
  ((3, 7), True)
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from aprec.emulator import batching
from aprec.emulator import inputs as inputs_lib
from aprec.emulator.core import Emulator
from aprec.emulator.formats import N_MODES
from aprec.emulator.segments import NotSegmentable as NotSegmentable
from aprec.emulator.segments import PER_BATCH, PER_ROW, SHARED, Segments
from aprec.sensitivity.measured import count_batches, mean_and_stderr, single_op_assignments
from aprec.sensitivity.objective import cross_entropy
from aprec.sensitivity.profile import Estimate
from aprec.typing import LossFn, Progress


def losses(
    emulator: Emulator,
    params: Any,
    xs: Any,
    ts: Any,
    *,
    loss_fn: LossFn = cross_entropy,
    chunk_size: int = 32,
    n_groups: int | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """The fp32 loss of every batch ``(n_batches,)`` and the loss with op ``i`` alone in mode
  ``m`` ``(n_ops, N_MODES - 1, n_batches)`` (modes 1..6), float64.

  Args:
    xs, ts: stacked inputs and loss targets, ``(n_batches, B, ...)``.
    chunk_size: single-op assignments run together (per-row values of a chunk are held
      in memory between pieces: ``chunk_size × n_batches`` activations).

  Raises:
    NotSegmentable: the model's ops are not all top-level equations (use the plain sweep).
  """
  segs = Segments(emulator, inputs_lib.take(xs, 0), n_groups=n_groups)
  n_batches = count_batches(xs)
  x_leaves = jax.tree_util.tree_leaves(xs)
  p_leaves = jax.tree_util.tree_leaves(params)
  mask = None if segs.mask_leaf is None else x_leaves[segs.mask_leaf]
  # The fp32 pass: outputs and the values live at each group's first op, per batch.
  records = [segs.record(params, inputs_lib.take(xs, b)) for b in range(n_batches)]
  recorded = [np.stack([np.asarray(r[k]) for _, r in records]) for k in range(len(segs.recorded))]
  batch_loss = jax.jit(loss_fn)
  baseline = np.array(
      [float(batch_loss(out, inputs_lib.take(ts, b))) for b, (out, _) in enumerate(records)]
  )
  row_loss = jax.jit(jax.vmap(jax.vmap(loss_fn), in_axes=(0, None)))
  batch_index = np.arange(n_batches)
  out = np.zeros((len(emulator.ops), N_MODES - 1, n_batches))
  total = out.shape[0] * (N_MODES - 1)
  for g, group in enumerate(segs.groups):
    rows = single_op_assignments(group.n_ops)[1:]  # the group's ops, one at a time
    chain = segs.chain(g)
    needed = [set(segs.out_vars)]  # needed[k]: what the pieces after chain[k] read
    for piece in reversed(chain[1:]):
      needed.insert(0, needed[0] | set(piece.inputs))
    size = min(chunk_size, len(rows))
    group_losses = []
    for start in range(0, len(rows), size):
      chunk = rows[start : start + size]
      done = len(chunk)
      if done < size:  # one shape for every chunk: pad with the last row, drop its results
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - done, 0)])
      computed: dict[Any, Any] = {}  # per-row values: (size, n_batches, ...)
      for k, piece in enumerate(chain):
        kinds = segs.kinds(piece, g)
        args = {SHARED: [], PER_BATCH: [], PER_ROW: []}
        for v, kind in zip(piece.inputs, kinds):
          if kind == SHARED:
            args[kind].append(segs.shared_value(p_leaves, v))
          elif kind == PER_BATCH:
            args[kind].append(segs.batch_value(x_leaves, recorded, v))
          else:
            args[kind].append(computed[v])
        fn = segs.piece_fn(piece, kinds, switched=k == 0)
        outs = batching.sweep(
            fn,
            chunk if k == 0 else np.arange(size),
            tuple(args[SHARED]),
            tuple(args[PER_BATCH]),
            tuple(args[PER_ROW]),
            mask,
            batches=batch_index,
            chunk_size=size,
        )
        computed.update(zip(piece.outputs, outs))
        for v in [v for v in computed if v not in needed[k]]:
          del computed[v]  # dead after this piece: free its (rows, batches, ...) array
      outputs = jax.tree_util.tree_unflatten(segs.out_tree, [computed[v] for v in segs.out_vars])
      chunk_losses = np.asarray(row_loss(outputs, ts), np.float64)
      group_losses.append(chunk_losses[:done])
      if progress is not None:
        progress("perturbation", group.first_op * (N_MODES - 1) + start + done, total)
    first = group.first_op
    out[first : first + group.n_ops] = np.concatenate(group_losses).reshape(
        group.n_ops, N_MODES - 1, n_batches
    )
  return baseline, out


def perturbation(
    emulator: Emulator,
    params: Any,
    xs: Any,
    ts: Any,
    *,
    loss_fn: LossFn = cross_entropy,
    chunk_size: int = 32,
    n_groups: int | None = None,
    progress: Progress | None = None,
) -> Estimate:
  """Measured single-op Δloss as ``measured.perturbation`` computes it, from ``losses``.

  Raises:
    NotSegmentable: the model's ops are not all top-level equations (use the plain sweep).
  """
  baseline, per_op = losses(
      emulator,
      params,
      xs,
      ts,
      loss_fn=loss_fn,
      chunk_size=chunk_size,
      n_groups=n_groups,
      progress=progress,
  )
  mean, err = mean_and_stderr(per_op - baseline)
  zeros = np.zeros((len(emulator.ops), 1))
  return Estimate(
      delta_loss=np.concatenate([zeros, mean], 1),
      stderr=np.concatenate([zeros, err], 1),
      n_samples=count_batches(xs),
  )
