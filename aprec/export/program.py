"""The inference function of an exported model: weights in their storage formats → outputs.

``build`` turns an emulator and an assignment into a ``Program``: a pure function of a flat
list of arrays (each op's stored weight bytes and scales, the calibrated ranges if any,
then the parameters no op consumes, e.g. biases) and a batch of inputs: any pytree the
emulator takes (``(ids, mask)``, a dict), every leaf sharing one symbolic batch axis. The
model's jaxpr is evaluated once more at that symbolic batch, every op running
``kernels.product`` in its fixed mode on the stored weight, with the emulator's ranges
(calibrated, over real positions under its padding mask, or dynamic); parameters that
only fed op weights are left out, so no float32 copy of a low-bit weight reaches the
program. ``Program.export`` serializes it with ``jax.export``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aprec.emulator import _jaxpr, padding
from aprec.emulator import inputs as inputs_lib
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
    role: ``"weight"`` (stored bytes/elements), ``"scale"`` (its float32 scales),
      ``"amax"`` (the calibrated ``(ops, 2)`` operand ranges) or ``"param"`` (a parameter
      read as it is, e.g. a bias).
    op: the op whose weight this is (None for parameters).
    array: the values.
  """

  name: str
  role: str
  op: str | None
  array: np.ndarray


@dataclasses.dataclass(frozen=True, kw_only=True)
class Program:
  """A model at one assignment as a pure function ``fn(arrays, inputs) -> outputs``.

  Attributes:
    fn: the function at the emulator's example inputs; ``arrays`` in the order of
      ``arrays``, ``inputs`` a pytree like the emulator's. It runs eagerly too, so
      ``jax.disable_jit()`` compares it op by op.
    symbolic_fn: the same with a symbolic batch dimension (what ``export`` serializes).
    arrays: what ``fn`` reads.
    input_spec: the inputs' pytree of shapes (batch dimension symbolic) and dtypes.
    modes: the assignment, one mode index per op of ``op_names``.
    op_names: the ops, in the emulator's order.
    stored: every op's stored weight (``Emulator.store_weights``), None without one.
    params_left_out: parameters that only fed op weights (their stored form replaces them).
    mask_input: the input leaf used as the padding mask (``Emulator.mask_input``), or None.
    calibrated: whether activations use calibrated ranges (``Emulator.calibrate``).
  """

  fn: Callable[[Sequence[jax.Array], Any], Any]
  symbolic_fn: Callable[[Sequence[jax.Array], Any], Any]
  arrays: tuple[ProgramArray, ...]
  input_spec: Any
  modes: np.ndarray
  op_names: tuple[str, ...]
  stored: tuple[Packed | None, ...]
  params_left_out: tuple[str, ...]
  mask_input: str | None = None
  calibrated: bool = False

  def __call__(self, inputs: Any) -> Any:
    return self.fn([jnp.asarray(a.array) for a in self.arrays], inputs)

  def export(self, platforms: Sequence[str] | None = DEFAULT_PLATFORMS) -> jax.export.Exported:
    """The program for ``jax.export`` (symbolic batch), lowered for ``platforms``.

    It takes ``(arrays, input leaves)``: the inputs flattened (``jax.tree_util``), so any
    pytree of inputs serializes, and the loader checks their structure itself.
    """
    specs = [jax.ShapeDtypeStruct(a.array.shape, a.array.dtype) for a in self.arrays]
    leaves, treedef = jax.tree_util.tree_flatten(self.input_spec)

    def flat_fn(arrays, input_leaves):
      return self.symbolic_fn(arrays, jax.tree_util.tree_unflatten(treedef, input_leaves))

    platforms = None if platforms is None else tuple(platforms)
    return jax.export.export(jax.jit(flat_fn), platforms=platforms)(specs, list(leaves))


def _file_name(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "." for c in name)


def _batch_symbolic(emu: Emulator) -> Any:
  """The emulator's example inputs with their shared leading (batch) axis made symbolic."""
  inputs_lib.batch_size(emu.input_specs, "the emulator's example inputs")
  (batch,) = jax.export.symbolic_shape(BATCH_SYMBOL)
  return jax.tree_util.tree_map(
      lambda s: jax.ShapeDtypeStruct((batch, *s.shape[1:]), s.dtype), emu.input_specs
  )


def _mask_leaf(emu: Emulator) -> int | None:
  """Index among the flat inputs of the emulator's padding mask (``mask_input``), or None."""
  if emu.mask_input is None:
    return None
  paths = jax.tree_util.tree_flatten_with_path(emu.input_specs)[0]
  names = [jax.tree_util.keystr(p) or "inputs" for p, _ in paths]
  return names.index(emu.mask_input)


def _forward(
    emu: Emulator,
    modes: np.ndarray,
    stored: Sequence[Packed | None],
    calibrated: bool,
    mask_leaf: int | None,
    treedef,
    leaf_specs: Sequence[jax.ShapeDtypeStruct],
    keep: Sequence[bool],
):
  """``fn(arrays, inputs)``: arrays = (data[, scale]) per stored weight, the calibrated
  ranges if ``calibrated``, then the kept parameter leaves; input leaf ``mask_leaf`` is the
  padding mask."""

  def fn(arrays: Sequence[jax.Array], inputs: Any) -> Any:
    arrays = list(arrays)
    weights: list[Packed | None] = []
    for packed in stored:
      if packed is None:
        weights.append(None)
        continue
      data = arrays.pop(0)
      scale = arrays.pop(0) if packed.scale.size else packed.scale
      weights.append(Packed(data=data, scale=scale, shape=packed.shape, mode=packed.mode))
    amax_table = arrays.pop(0) if calibrated else None
    # Left-out leaves only fed op weights, which ``compute`` replaces: dead placeholders.
    leaves = [arrays.pop(0) if k else jnp.zeros(s.shape, s.dtype) for k, s in zip(keep, leaf_specs)]
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    mask = None if mask_leaf is None else jax.tree_util.tree_leaves(inputs)[mask_leaf]

    def compute(i, contraction, lhs, rhs):
      op = emu.ops[i]
      amax = padding.operand_amax(
          (contraction.lhs_reduce_axes, contraction.rhs_reduce_axes),
          (lhs, rhs),
          op.weight_operand,
          None if amax_table is None else amax_table[i],
          mask,
      )
      return kernels.product(
          contraction, lhs, rhs, int(modes[i]), weights[i], op.weight_operand, tuple(amax)
      )

    return emu.run_with(params, inputs, compute)

  return fn


def _amax_array(emu: Emulator, activation_amax: Any) -> list[ProgramArray]:
  if activation_amax is None:
    return []
  amax = np.asarray(activation_amax, np.float32)
  if amax.shape != (len(emu.ops), 2):
    raise ValueError(
        f"activation_amax has shape {amax.shape}, expected ({len(emu.ops)}, 2) (one "
        "(lhs, rhs) range per op); use emulator.calibrate(params, batches)"
    )
  return [ProgramArray(name="activation_amax", role="amax", op=None, array=amax)]


def build(emu: Emulator, params: Any, modes: Any, *, activation_amax: Any = None) -> Program:
  """The program of ``emu``'s model with op ``i`` in mode ``modes[i]`` and ``params``' weights.

  Args:
    emu: the emulator; its inputs (any pytree whose leaves share a leading batch axis),
      activation scaling and padding mask (``mask_input``) carry over.
    params: the parameters whose weights are stored.
    modes: one mode index per op.
    activation_amax: optional ``(len(ops), 2)`` calibrated operand ranges
      (``emu.calibrate``), as ``emu(..., activation_amax=...)`` takes them.

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
  amax_arrays = _amax_array(emu, activation_amax)
  x_spec = _batch_symbolic(emu)
  symbolic = Emulator(
      emu.apply_fn,
      params,
      x_spec,
      activation_scaling=emu.activation_scaling,
      ste=emu.ste,
      padding_mask=None,  # the mask is read from ``emu``'s inputs by ``_forward``
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
  head = weight_arrays + amax_arrays
  calibrated = bool(amax_arrays)
  mask_leaf = _mask_leaf(emu)
  all_leaves = [True] * len(path_leaves)
  probe = _forward(symbolic, modes, stored, calibrated, mask_leaf, treedef, leaf_specs, all_leaves)
  specs = [jax.ShapeDtypeStruct(a.array.shape, a.array.dtype) for a in head] + leaf_specs
  live = _jaxpr.live_inputs(jax.make_jaxpr(probe)(specs, x_spec))
  keep = live[len(head) : len(head) + len(path_leaves)]
  param_arrays = [
      ProgramArray(name=n, role="param", op=None, array=np.asarray(v))
      for n, (_, v), k in zip(leaf_names, path_leaves, keep)
      if k
  ]
  return Program(
      fn=_forward(emu, modes, stored, calibrated, mask_leaf, treedef, leaf_specs, keep),
      symbolic_fn=_forward(
          symbolic, modes, stored, calibrated, mask_leaf, treedef, leaf_specs, keep
      ),
      arrays=tuple(head + param_arrays),
      input_spec=x_spec,
      modes=modes,
      op_names=emu.op_names,
      stored=tuple(stored),
      params_left_out=tuple(n for n, k in zip(leaf_names, keep) if not k),
      mask_input=emu.mask_input,
      calibrated=calibrated,
  )


def mode_names(program: Program) -> dict[str, str]:
  """``{op name: mode name}`` of a program's assignment."""
  return {name: MODES[int(m)] for name, m in zip(program.op_names, program.modes)}
