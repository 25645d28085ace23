"""The inference function of an exported model: weights in their storage formats → outputs.

``build`` turns an emulator and an assignment into a ``Program``: a pure function of a flat
list of arrays (each op's stored weight bytes and scales, then the parameters no op
consumes, e.g. biases) and a batch of inputs. The model's jaxpr is evaluated once more
with a symbolic batch dimension, every op running ``kernels.product`` in its fixed mode on
the stored weight; parameters that only fed op weights are left out, so no float32 copy
of a low-bit weight reaches the program. ``Program.export`` serializes it with
``jax.export``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aprec.emulator import _jaxpr
from aprec.emulator.core import Emulator
from aprec.emulator.dma import Packed
from aprec.emulator.formats import MODES
from aprec.export import kernels

BATCH_SYMBOL = "batch"
# None: the platform of JAX's default backend. Lowering for several (e.g. ("cpu", "cuda"))
# makes one artifact for all of them, at a cost: on XLA:CPU a (cpu, cuda) program ran
# 1.4x slower than a cpu-only one (digits_cnn, test split).
DEFAULT_PLATFORMS: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProgramArray:
  """One array the program reads.

  Attributes:
    name: file-safe name, e.g. ``Conv_0.data`` (a weight) or ``params.Conv_0.bias`` (a
      parameter's pytree path).
    role: ``"weight"`` (stored bytes/elements), ``"scale"`` (its float32 scales) or
      ``"param"`` (a parameter read as it is, e.g. a bias).
    op: the op whose weight this is (None for parameters).
    array: the values.
  """

  name: str
  role: str
  op: str | None
  array: np.ndarray


@dataclasses.dataclass(frozen=True, kw_only=True)
class Program:
  """A model at one assignment as a pure function ``fn(arrays, x) -> outputs``.

  Attributes:
    fn: the function at the emulator's example batch; ``arrays`` in the order of
      ``arrays``. It runs eagerly too, so ``jax.disable_jit()`` compares it op by op.
    symbolic_fn: the same with a symbolic batch dimension (what ``export`` serializes).
    arrays: what ``fn`` reads.
    input_spec: the input's shape (batch dimension symbolic) and dtype.
    modes: the assignment, one mode index per op of ``op_names``.
    op_names: the ops, in the emulator's order.
    stored: every op's stored weight (``Emulator.store_weights``), None without one.
    params_left_out: parameters that only fed op weights (their stored form replaces them).
  """

  fn: Callable[[Sequence[jax.Array], jax.Array], Any]
  symbolic_fn: Callable[[Sequence[jax.Array], jax.Array], Any]
  arrays: tuple[ProgramArray, ...]
  input_spec: jax.ShapeDtypeStruct
  modes: np.ndarray
  op_names: tuple[str, ...]
  stored: tuple[Packed | None, ...]
  params_left_out: tuple[str, ...]

  def __call__(self, x: jax.Array) -> Any:
    return self.fn([jnp.asarray(a.array) for a in self.arrays], x)

  def export(self, platforms: Sequence[str] | None = DEFAULT_PLATFORMS) -> jax.export.Exported:
    """The program for ``jax.export`` (symbolic batch), lowered for ``platforms``."""
    specs = [jax.ShapeDtypeStruct(a.array.shape, a.array.dtype) for a in self.arrays]
    platforms = None if platforms is None else tuple(platforms)
    return jax.export.export(jax.jit(self.symbolic_fn), platforms=platforms)(specs, self.input_spec)


def _file_name(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "." for c in name)


def _batch_symbolic(emu: Emulator) -> jax.ShapeDtypeStruct:
  leaves = jax.tree_util.tree_leaves(emu.input_specs)
  if len(leaves) != 1 or len(leaves[0].shape) < 1:
    raise ValueError(
        f"export takes models of one input array with a leading batch axis; "
        f"this emulator's inputs are {emu.input_specs}"
    )
  (batch,) = jax.export.symbolic_shape(BATCH_SYMBOL)
  return jax.ShapeDtypeStruct((batch, *leaves[0].shape[1:]), leaves[0].dtype)


def _forward(
    emu: Emulator,
    modes: np.ndarray,
    stored: Sequence[Packed | None],
    treedef,
    leaf_specs: Sequence[jax.ShapeDtypeStruct],
    keep: Sequence[bool],
):
  """``fn(arrays, x)``: arrays = (data[, scale]) per stored weight, then the kept leaves."""

  def fn(arrays: Sequence[jax.Array], x: jax.Array) -> Any:
    arrays = list(arrays)
    weights: list[Packed | None] = []
    for packed in stored:
      if packed is None:
        weights.append(None)
        continue
      data = arrays.pop(0)
      scale = arrays.pop(0) if packed.scale.size else packed.scale
      weights.append(Packed(data=data, scale=scale, shape=packed.shape, mode=packed.mode))
    # Left-out leaves only fed op weights, which ``compute`` replaces: dead placeholders.
    leaves = [arrays.pop(0) if k else jnp.zeros(s.shape, s.dtype) for k, s in zip(keep, leaf_specs)]
    params = jax.tree_util.tree_unflatten(treedef, leaves)

    def compute(i, contraction, lhs, rhs):
      op = emu.ops[i]
      return kernels.product(contraction, lhs, rhs, int(modes[i]), weights[i], op.weight_operand)

    return emu.run_with(params, x, compute)

  return fn


def build(emu: Emulator, params: Any, modes: Any) -> Program:
  """The program of ``emu``'s model with op ``i`` in mode ``modes[i]`` and ``params``' weights.

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> model, x = nn.Sequential([nn.Dense(3)]), jnp.ones((2, 4))
    >>> params = model.init(jax.random.key(0), x)
    >>> emu = Emulator(model.apply, params, x)
    >>> program = build(emu, params, emu.assignment("int4"))
    >>> [(a.name, a.array.dtype.name, a.array.size) for a in program.arrays][1:]
    [('layers_0.scale', 'float32', 3), ('params.layers_0.bias', 'float32', 3)]
    >>> program.arrays[0].name, program.arrays[0].array.dtype.name, program.arrays[0].array.size
    ('layers_0.data', 'uint8', 6)
    >>> program(x).shape
    (2, 3)
  """
  modes = np.asarray(emu.check_modes(modes))
  x_spec = _batch_symbolic(emu)
  symbolic = Emulator(
      emu.apply_fn, params, x_spec, activation_scaling=emu.activation_scaling, ste=emu.ste
  )
  if symbolic.op_names != emu.op_names:
    raise ValueError(
        f"the model's ops change with the batch size ({emu.op_names} at the "
        f"example's batch, {symbolic.op_names} at a symbolic one); export needs "
        "a model whose op table does not depend on the batch"
    )
  stored = emu.store_weights(params, modes)
  path_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  leaf_specs = [jax.ShapeDtypeStruct(np.shape(v), jnp.result_type(v)) for _, v in path_leaves]
  leaf_names = [
      _file_name(jax.tree_util.keystr(p, simple=True, separator=".")) for p, _ in path_leaves
  ]

  weight_arrays: list[ProgramArray] = []
  for op, packed in zip(emu.ops, stored):
    if packed is not None:
      weight_arrays.append(
          ProgramArray(
              name=f"{_file_name(op.name)}.data",
              role="weight",
              op=op.name,
              array=np.asarray(packed.data),
          )
      )
      if packed.scale.size:
        weight_arrays.append(
            ProgramArray(
                name=f"{_file_name(op.name)}.scale",
                role="scale",
                op=op.name,
                array=np.asarray(packed.scale),
            )
        )
  all_leaves = [True] * len(path_leaves)
  probe = _forward(symbolic, modes, stored, treedef, leaf_specs, all_leaves)
  specs = [jax.ShapeDtypeStruct(a.array.shape, a.array.dtype) for a in weight_arrays] + leaf_specs
  live = _jaxpr.live_inputs(jax.make_jaxpr(probe)(specs, x_spec))
  keep = live[len(weight_arrays) : len(weight_arrays) + len(path_leaves)]
  param_arrays = [
      ProgramArray(name=n, role="param", op=None, array=np.asarray(v))
      for n, (_, v), k in zip(leaf_names, path_leaves, keep)
      if k
  ]
  return Program(
      fn=_forward(emu, modes, stored, treedef, leaf_specs, keep),
      symbolic_fn=_forward(symbolic, modes, stored, treedef, leaf_specs, keep),
      arrays=tuple(weight_arrays + param_arrays),
      input_spec=x_spec,
      modes=modes,
      op_names=emu.op_names,
      stored=tuple(stored),
      params_left_out=tuple(n for n, k in zip(leaf_names, keep) if not k),
  )


def mode_names(program: Program) -> dict[str, str]:
  """``{op name: mode name}`` of a program's assignment."""
  return {name: MODES[int(m)] for name, m in zip(program.op_names, program.modes)}
