"""The traced model cut at op boundaries, so a change to one op reruns only what follows it.

When op ``i`` alone leaves fp32, everything the model computes before op ``i`` is the fp32
model's; only op ``i`` and what depends on it change. ``Segments`` cuts the op list into
``groups`` of consecutive ops, and the model into pieces: each group's *segment* (its first
op through its last) and the *glue* after it (up to the next group's first op, or to the
outputs). It provides

- ``record``: one fp32 pass of the model keeping the values live at each group's first op
  (the fp32 prefix, computed once per batch);
- ``piece_fn``: a piece as a function for ``batching.sweep``, either with the group's ops in
  the modes of a per-call assignment (a segment, *switched*) or all at fp32.

A change in group ``g`` then runs group ``g`` (its segment and glue, as one piece) switched
and every later group, one piece each, at fp32. (One piece per group rather than one per
segment and one per glue: fewer per-row values move between compiled calls; timed ad hoc
on the bench's MiniLM-L6 sweep, 118 s before and 100 s after.)
Pieces of identical structure (the blocks of a transformer) share one function object, so
one compilation: the sweep compiles the mode switches of one block, not of every block
(the switches are what makes the emulator slow to compile), and fp32 blocks once each.

Every op runs as in ``Emulator.__call__`` (the same PAK call, with dynamic ranges over real
positions under a padding mask; fp32 as the float product, which the PAK's fp32 mode equals:
its quantization is the identity with unit scales), so results equal the emulator's up to
floating-point reassociation between separately compiled programs.

Supported: models whose ops are all top-level equations of the traced jaxpr. An op inside a
scan or a nested call raises ``NotSegmentable`` (then run the whole model instead).

Example:
  >>> import jax, jax.numpy as jnp, flax.linen as nn
  >>> from aprec.emulator.core import Emulator
  >>> model = nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(4), nn.relu, nn.Dense(2)])
  >>> x = jnp.ones((2, 3)); params = model.init(jax.random.key(0), x)
  >>> segs = Segments(Emulator(model.apply, params, x), x)
  >>> [(g.first_op, g.n_ops) for g in segs.groups]
  [(0, 1), (1, 1), (2, 1)]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

from aprec.emulator import _interpret, _jaxpr, padding, pak
from aprec.emulator.core import Emulator

SHARED, PER_BATCH, PER_ROW = "shared", "per_batch", "per_row"
"""Where a piece's input comes from: params and consts (one value), the batch's inputs and
recorded fp32 values (one per batch), or values the sweep computed (one per row and batch)."""


class NotSegmentable(ValueError):
  """The model has an op inside a scan or a nested call; it cannot be cut at its ops."""


class Piece(NamedTuple):
  """Equations ``[start, stop)`` of the traced jaxpr.

  Attributes:
    first_op, n_ops: the ops inside (``n_ops`` 0 for glue).
    inputs: variables the piece reads and does not define, in order of first use.
    outputs: variables it defines that later equations or the model's outputs read.
    key: its structure (``_jaxpr.structure_key`` and its ops' weight operands).
  """

  start: int
  stop: int
  first_op: int
  n_ops: int
  inputs: tuple
  outputs: tuple
  key: str


class Group(NamedTuple):
  """Ops ``first_op .. first_op + n_ops - 1``: their ``segment`` and the ``glue`` after it."""

  first_op: int
  n_ops: int
  segment: Piece
  glue: Piece


def _divisors(n: int) -> list[int]:
  return [k for k in range(1, n + 1) if n % k == 0]


class Segments:
  """The emulator's model at one input shape, cut into groups of ops (see the module doc).

  Args:
    emulator: the emulated model.
    example_inputs: inputs of the shape the pieces run at (one batch).
    n_groups: how many equal groups to cut the ops into (a divisor of the op count);
      default: of the divisors up to ``2 √n_ops``, the one whose distinct segments hold the
      fewest ops (the least mode-switch code to compile), the most groups on a tie (the
      least recomputation): for a stack of identical blocks, a block per group or finer.

  Raises:
    NotSegmentable: an op sits inside a scan or a nested call.
  """

  def __init__(self, emulator: Emulator, example_inputs: Any, *, n_groups: int | None = None):
    self.emulator = emulator
    program, flat = emulator._flat_args(emulator.params, example_inputs)
    self._program, self._jaxpr = program, program.closed.jaxpr
    jaxpr = self._jaxpr
    n_inputs = len(jax.tree_util.tree_leaves(example_inputs))
    n_params = len(flat) - n_inputs
    positions = {}
    for k, eqn in enumerate(jaxpr.eqns):
      step = program.plan.get(id(eqn))
      if step is not None and not isinstance(step, int):
        raise NotSegmentable(
            f"the model has ops inside a scan or a nested call (equation {k}, "
            f"{eqn.primitive.name}); segments need every op at the top level"
        )
      if step is not None:
        positions[step] = k
    n_ops = len(emulator.ops)
    self._positions = [positions[i] for i in range(n_ops)]
    if self._positions != sorted(self._positions):
      raise NotSegmentable("the traced model runs its ops out of their index order")
    # Where each free variable of the model comes from: (kind, index).
    self._source: dict[Any, tuple[str, int]] = {
        v: ("const", k) for k, v in enumerate(jaxpr.constvars)
    }
    for k, v in enumerate(jaxpr.invars):
      self._source[v] = ("param", k) if k < n_params else ("input", k - n_params)
    self._defined_at = {v: k for k, eqn in enumerate(jaxpr.eqns) for v in eqn.outvars}
    self._out_vars = {v for v in jaxpr.outvars if isinstance(v, _jaxpr.Var)}
    if n_groups is None:
      limit = max(1, math.floor(2 * math.sqrt(n_ops)))
      candidates = [k for k in _divisors(n_ops) if k <= limit]
      n_groups = min(candidates, key=lambda k: (self._switched_ops(self._cut(k)), -k))
    if n_groups <= 0 or n_ops % n_groups:
      raise ValueError(f"n_groups = {n_groups}; expected a divisor of the {n_ops} ops")
    self.groups = self._cut(n_groups)
    self._whole = [
        self._piece(gr.segment.start, gr.glue.stop, gr.first_op, gr.n_ops) for gr in self.groups
    ]
    needed = set()
    for g in self.groups:
      for piece in self.chain(self.groups.index(g)):
        needed.update(v for v in piece.inputs if self._defined_at.get(v, -1) < g.segment.start)
    self.recorded = tuple(sorted((v for v in needed if v in self._defined_at), key=self._order))
    self._fns: dict[tuple, Callable] = {}

  def _order(self, v) -> int:
    return self._defined_at[v]

  @staticmethod
  def _switched_ops(groups: Sequence[Group]) -> int:
    return sum({g.segment.key: g.n_ops for g in groups}.values())

  def _piece(self, start: int, stop: int, first_op: int, n_ops: int) -> Piece:
    eqns = self._jaxpr.eqns[start:stop]
    inputs = tuple(_jaxpr.free_vars(eqns))
    later = set(_jaxpr.free_vars(self._jaxpr.eqns[stop:])) | self._out_vars
    outputs = tuple(v for v in _jaxpr.defined_vars(eqns) if v in later)
    ops = self.emulator.ops[first_op : first_op + n_ops]
    weights = [(op.weight_operand, op.weight_channel_axes) for op in ops]
    key = f"{_jaxpr.structure_key(eqns, inputs, outputs)}\n{weights}"
    return Piece(start, stop, first_op, n_ops, inputs, outputs, key)

  def _cut(self, n_groups: int) -> tuple[Group, ...]:
    size = len(self.emulator.ops) // n_groups
    starts = [self._positions[g * size] for g in range(n_groups)] + [len(self._jaxpr.eqns)]
    groups = []
    for g in range(n_groups):
      first = g * size
      stop = self._positions[first + size - 1] + 1
      segment = self._piece(starts[g], stop, first, size)
      groups.append(Group(first, size, segment, self._piece(stop, starts[g + 1], first, 0)))
    return tuple(groups)

  def chain(self, g: int) -> list[Piece]:
    """The pieces a change in group ``g`` reruns: group ``g`` and every later group, each
    whole (its segment and glue as one piece; groups of a stack of blocks share a structure)."""
    return [self._whole[h] for h in range(g, len(self.groups))]

  def kinds(self, piece: Piece, g: int) -> tuple[str, ...]:
    """Where each of ``piece.inputs`` comes from in a rerun after a change in group ``g``."""
    start = self.groups[g].segment.start

    def kind(v):
      source = self._source.get(v)
      if source is not None:
        return PER_BATCH if source[0] == "input" else SHARED
      return PER_BATCH if self._defined_at[v] < start else PER_ROW

    return tuple(kind(v) for v in piece.inputs)

  # ------------------------------------------------------------------------------------

  def shared_value(self, params_leaves: Sequence[Any], v) -> Any:
    """A param or const input's value."""
    kind, k = self._source[v]
    return params_leaves[k] if kind == "param" else self._program.closed.consts[k]

  def batch_value(self, input_leaves: Sequence[Any], recorded: Sequence[Any], v) -> Any:
    """An input leaf's or recorded value (stacked over batches, as given)."""
    source = self._source.get(v)
    return input_leaves[source[1]] if source is not None else recorded[self.recorded.index(v)]

  @property
  def out_tree(self) -> Any:
    """The pytree structure of the model's outputs."""
    return self._program.out_tree

  @property
  def out_vars(self) -> list:
    """The jaxpr variables of the model's outputs (leaves of ``out_tree``), in order."""
    return list(self._jaxpr.outvars)

  @property
  def mask_leaf(self) -> int | None:
    """Index of the padding mask among the input leaves (``Emulator.mask_input``), or None."""
    return self.emulator._mask_leaf

  def _run(self, eqns, env: dict, modes: Callable[[int], Any] | None, mask) -> None:
    """Runs ``eqns`` on ``env``: op ``i`` in mode ``modes(i)``, or every op at fp32 (the
    float product, without a switch over modes) when ``modes`` is None."""
    emu, ops = self.emulator, self._program.ops

    def run_op(i, static_i, eqn, lhs, rhs):
      op = ops[static_i]
      contraction = emu.contraction(op, eqn, lhs, rhs)
      if modes is None:
        return contraction.float_product(lhs, rhs)
      reduce_axes = (contraction.lhs_reduce_axes, contraction.rhs_reduce_axes)
      amax = padding.operand_amax(reduce_axes, (lhs, rhs), op.weight_operand, None, mask)
      return pak.apply(contraction, lhs, rhs, modes(i), *amax)

    _interpret.run_eqns(eqns, env, self._program.plan, run_op, _interpret.Index(0, 0), unroll=True)

  @functools.cached_property
  def record(self) -> Callable[[Any, Any], tuple[Any, tuple]]:
    """``record(params, inputs) -> (outputs, recorded values)``: one fp32 pass (jitted)."""
    jaxpr, consts = self._jaxpr, self._program.closed.consts

    def run(params, inputs):
      x_leaves = jax.tree_util.tree_leaves(inputs)
      env = dict(zip(jaxpr.constvars, consts))
      env.update(zip(jaxpr.invars, jax.tree_util.tree_leaves(params) + x_leaves))
      mask = None if self.mask_leaf is None else x_leaves[self.mask_leaf]
      self._run(jaxpr.eqns, env, None, mask)
      outs = [_jaxpr.read(env, a) for a in jaxpr.outvars]
      return (
          jax.tree_util.tree_unflatten(self._program.out_tree, outs),
          tuple(env[v] for v in self.recorded),
      )

    return jax.jit(run)

  def piece_fn(self, piece: Piece, kinds: Sequence[str], *, switched: bool) -> Callable:
    """``piece`` as ``fn(a, shared, per_batch, per_row, mask, b) -> outputs`` for
    ``batching.sweep`` over ``a`` with ``batches=`` batch indices ``b``.

    ``a`` is the group's modes ``(n_ops,)`` when ``switched`` (its ops run in them), else a
    row index (every op at fp32). ``shared``, ``per_batch``, ``per_row`` hold the values of
    ``piece.inputs`` of each kind (``kinds``), in order: as they are, indexed ``[b]``, and
    indexed ``[a, b]``; ``mask`` (or None) is indexed ``[b]``. Pieces of equal structure and
    input kinds share one function object (so one compilation).
    """
    key = (piece.key, tuple(kinds), switched)
    if key not in self._fns:
      self._fns[key] = self._make_fn(piece, tuple(kinds), switched)
    return self._fns[key]

  def _make_fn(self, piece: Piece, kinds: tuple[str, ...], switched: bool) -> Callable:
    eqns = self._jaxpr.eqns[piece.start : piece.stop]
    by_kind = {k: [v for v, kind in zip(piece.inputs, kinds) if kind == k] for k in kinds}
    first = piece.first_op

    def fn(a, shared, per_batch, per_row, mask, b):
      env = dict(zip(by_kind.get(SHARED, ()), shared))
      env.update(zip(by_kind.get(PER_BATCH, ()), (x[b] for x in per_batch)))
      env.update(zip(by_kind.get(PER_ROW, ()), (x[a, b] for x in per_row)))
      modes = (lambda i: a[i - first]) if switched else None
      self._run(eqns, env, modes, None if mask is None else mask[b])
      return tuple(env[v] for v in piece.outputs)

    return fn
