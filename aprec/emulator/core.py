"""The NNP emulator: runs any JAX/Flax model with one precision mode per op.

The model is traced once to a jaxpr; calling the emulator evaluates that jaxpr with every
matmul and convolution replaced by a PAK call in the op's mode. The assignment is an int32
array, an argument like any other: a call compiles once per input shape for all
assignments (no ``jax.jit`` needed; wrapping in ``jit`` works too), ``vmap`` runs many
assignments in one call, and ``grad`` flows through straight-through quantizers. Under
``jax.disable_jit()`` the call runs op by op, for debugging.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from aprec.emulator import _interpret
from aprec.emulator import assignments
from aprec.emulator import dma
from aprec.emulator import formats
from aprec.emulator import padding
from aprec.emulator import pak
from aprec.emulator.dma import Packed
from aprec.emulator.formats import STE
from aprec.emulator.measure import Measurements
from aprec.emulator.ops import Op, Passthrough, _Info, discover, param_name
from aprec.emulator.pak import DEFAULT_ACTIVATION_SCALING, ActivationScaling


class _Program(NamedTuple):
  """The traced model at one input shape: its jaxpr, which equations are ops, and the ops."""

  closed: Any
  plan: dict[int, int]
  ops: tuple[Op, ...]
  passthrough: tuple[Passthrough, ...]
  out_tree: Any


def _avals(leaves: Sequence[Any]) -> tuple[jax.ShapeDtypeStruct, ...]:
  return tuple(jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)) for x in leaves)


class Emulator(Measurements):
  """A model whose matmuls and convolutions run in per-op precision modes.

  Calling it compiles once per input shape and dtype, for every assignment: switching
  modes never recompiles, and inputs of another batch size trace and compile once more
  (their ops must have the same names). Called with tracers (inside ``jit``, ``vmap``,
  ``grad``) it is traced like any function; under ``jax.disable_jit()`` it runs op by op.

  Args:
    apply_fn: ``apply_fn(params, inputs) -> outputs``, any JAX-traceable function
      (a linen ``module.apply``, an ``nnx.merge`` wrapper, plain JAX).
    params: example parameters (their pytree paths name the ops); kept as ``.params``.
    example_inputs: example inputs; ``ops`` describe the model at their shapes.
    activation_scaling: which activation elements share a dynamic scale
      (``ActivationScaling``; default ``pak.DEFAULT_ACTIVATION_SCALING``, per token).
    ste: straight-through estimator for gradients, identity (default) or clipped.
    padding_mask: where the padding mask is among the inputs (see ``__call__``'s
      ``mask``): ``"auto"`` (default) takes the one input leaf that is a
      ``(batch, positions)`` boolean array, or a dict entry named ``mask``,
      ``attention_mask`` or ``padding_mask`` (nonzero = real); ``None`` uses none.
    integer_fast_path: compile an all-integer program beside the general one, for long
      runs of large models. With a traced assignment each op picks its integer or float
      side with a ``lax.cond``, which costs XLA:CPU some overlap between ops. With this on,
      a call whose ops are all in integer modes (int8, int4, mixed) runs a program with no
      per-op branch instead. The bits are the same either way. A call with a concrete
      assignment (the emulator's own call) picks the program on the host and compiles
      only the programs it runs; traced (inside ``jit``), one ``lax.cond`` around the whole
      model picks it, and the first call compiles both. Off by default: the
      README's *Against qwix* has the measurements (on MiniLM-L6, uniform int8 in
      0.93-0.97x the time; first call 4.2-4.7 s from the emulator's own call, 10.4-11.0 s
      under ``jit``, against the default setting's 6.3-6.8 s). Under ``vmap``
      over assignments the branch becomes a select that runs both programs; ``sweep`` maps
      over assignments instead.

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> model = nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(2)])
    >>> x = jnp.ones((2, 3)); params = model.init(jax.random.key(0), x)
    >>> emu = Emulator(model.apply, params, x)
    >>> [op.name for op in emu.ops]
    ['layers_0', 'layers_2']
    >>> y = emu(params, x, emu.assignment("int8,layers_2=fp16"))  # compiles once
    >>> y = emu(params, x, emu.assignment("int4"))                  # no recompilation
    >>> emu(params, jnp.ones((5, 3)), emu.assignment("fp16")).shape  # another batch size
    (5, 2)
  """

  def __init__(
      self,
      apply_fn: Callable,
      params: Any,
      example_inputs: Any,
      *,
      activation_scaling: ActivationScaling = DEFAULT_ACTIVATION_SCALING,
      ste: STE = STE.IDENTITY,
      padding_mask: str | None = "auto",
      integer_fast_path: bool = False,
  ):
    self.apply_fn = apply_fn
    self.integer_fast_path = bool(integer_fast_path)
    self.params = params
    self.activation_scaling = ActivationScaling(activation_scaling)
    self.ste = STE(ste)
    path_leaves, self._params_tree = jax.tree_util.tree_flatten_with_path(params)
    self._param_paths = [jax.tree_util.keystr(path) for path, _ in path_leaves]
    self._param_avals = _avals([leaf for _, leaf in path_leaves])
    self._param_names = [param_name(path) for path, _ in path_leaves]
    input_paths, self._inputs_tree = jax.tree_util.tree_flatten_with_path(example_inputs)
    input_leaves = [leaf for _, leaf in input_paths]
    if padding_mask not in ("auto", None):
      raise ValueError(f"padding_mask must be 'auto' or None, got {padding_mask!r}")
    self._mask_leaf = padding.find_mask(input_paths) if padding_mask == "auto" else None
    self._input_avals = list(_avals(input_leaves))
    self._programs: dict[tuple, _Program] = {}
    program = self._trace(tuple(self._input_avals))
    if not program.ops:
      raise ValueError(
          "found no matmul (dot_general) or convolution (conv_general_dilated) with float "
          "operands in apply_fn, so there is nothing to emulate; pass a model with Dense, "
          "Conv, einsum or attention layers"
      )
    self._programs[tuple(self._input_avals)] = program
    self.ops: tuple[Op, ...] = program.ops
    self.passthrough: tuple[Passthrough, ...] = program.passthrough
    self._compiled = jax.jit(self._emulate)  # compiles once per input shape, not per assignment
    # With integer_fast_path, a call with a concrete assignment picks its program on the
    # host: no lax.cond around the model, and only the programs used are compiled.
    self._compiled_family = {
        integer: jax.jit(lambda *args, integer=integer: self._emulate_ops(args, integer))
        for integer in (True, False)
    }

  def _trace(self, input_avals: tuple[jax.ShapeDtypeStruct, ...]) -> _Program:
    """Trace ``apply_fn`` at the given input shapes and find its ops."""
    params = jax.tree_util.tree_unflatten(self._params_tree, self._param_avals)
    inputs = jax.tree_util.tree_unflatten(self._inputs_tree, input_avals)
    closed, out_shape = jax.make_jaxpr(self.apply_fn, return_shape=True)(params, inputs)
    infos = [_Info(param=n, scope=n) for n in self._param_names] + [_Info()] * len(input_avals)
    found = discover(closed, infos)
    return _Program(
        closed,
        found.plan,
        tuple(found.ops),
        tuple(found.passthrough),
        jax.tree_util.tree_structure(out_shape),
    )

  def _program(self, input_avals: tuple[jax.ShapeDtypeStruct, ...]) -> _Program:
    """The traced model for these input shapes (traced on first use, then cached)."""
    program = self._programs.get(input_avals)
    if program is None:
      program = self._trace(input_avals)
      names = tuple(op.name for op in program.ops)
      if names != self.op_names:
        raise ValueError(
            f"at input shape(s) {[a.shape for a in input_avals]} the model has ops "
            f"{list(names)}, but at the example shape(s) {[a.shape for a in self._input_avals]}"
            f" it has {list(self.op_names)}; build an Emulator for this shape"
        )
      self._programs[input_avals] = program
    return program

  @classmethod
  def from_nnx(
      cls,
      module,
      *args: Any,
      activation_scaling: ActivationScaling = DEFAULT_ACTIVATION_SCALING,
      ste: STE = STE.IDENTITY,
      padding_mask: str | None = "auto",
      integer_fast_path: bool = False,
      **kwargs: Any,
  ) -> Emulator:
    """An emulator for a ``flax.nnx`` module called as ``module(*args, **kwargs)``.

    The module's state is ``emulator.params``. The emulator's ``inputs`` are the one
    argument itself (``module(x)``), the tuple of positional arguments when there are
    several (``module(ids, mask)`` → ``inputs=(ids, mask)``), or ``(args, kwargs)`` when
    keyword arguments are given. ``activation_scaling``, ``ste``, ``padding_mask`` and
    ``integer_fast_path`` are the emulator's own options (as for ``Emulator``); every other
    keyword goes to the module.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> emu = Emulator.from_nnx(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), jnp.ones((2, 3)))
      >>> y = emu(emu.params, jnp.ones((2, 3)), emu.assignment("fp8_e4m3"))
      >>> attn = nnx.MultiHeadAttention(num_heads=1, in_features=3, decode=False,
      ...                               rngs=nnx.Rngs(0))
      >>> q, kv = jnp.ones((2, 4, 3)), jnp.ones((2, 5, 3))
      >>> two = Emulator.from_nnx(attn, q, kv)  # calls attn(q, kv)
      >>> two(two.params, (q, kv), two.assignment("int8")).shape
      (2, 4, 3)
    """
    from flax import nnx

    graphdef, state = nnx.split(module)
    if kwargs:
      example, call = (args, kwargs), lambda m, inputs: m(*inputs[0], **inputs[1])
    elif len(args) == 1:
      example, call = args[0], lambda m, inputs: m(inputs)
    else:
      example, call = args, lambda m, inputs: m(*inputs)

    def apply_fn(state, inputs):
      return call(nnx.merge(graphdef, state), inputs)

    return cls(
        apply_fn,
        state,
        example,
        activation_scaling=activation_scaling,
        ste=ste,
        padding_mask=padding_mask,
        integer_fast_path=integer_fast_path,
    )

  # ------------------------------------------------------------------------------------

  @property
  def mask_input(self) -> str | None:
    """The input leaf used as the padding mask (its pytree path), or None."""
    if self._mask_leaf is None:
      return None
    paths = jax.tree_util.tree_flatten_with_path(self._example_inputs())[0]
    return jax.tree_util.keystr(paths[self._mask_leaf][0]) or "inputs"

  @property
  def numerics(self) -> dict[str, str]:
    """The settings results depend on: ``{"activation_scaling": ..., "ste": ...}``."""
    return {"activation_scaling": self.activation_scaling.value, "ste": self.ste.value}

  @property
  def op_names(self) -> tuple[str, ...]:
    return tuple(op.name for op in self.ops)

  @property
  def input_specs(self) -> Any:
    """Shapes and dtypes of the inputs the emulator was built for (``jax.ShapeDtypeStruct``)."""
    return jax.tree_util.tree_unflatten(self._inputs_tree, self._input_avals)

  def __len__(self) -> int:
    return len(self.ops)

  def __repr__(self) -> str:
    return (
        f"Emulator({len(self.ops)} ops, {sum(o.macs for o in self.ops):,} MACs, "
        f"{sum(p.count for p in self.passthrough)} passed through)"
    )

  def assignment(
      self, modes: str | Mapping[str, str] | None = None, *, default: str = "fp32"
  ) -> jax.Array:
    """An int32 assignment from mode names (``assignments.parse``): one mode for every op
    (``"int8"``), a comma list where a bare mode sets the default and ``name=mode`` sets
    one op (``"int8,Dense_1=fp32"``), or a mapping of op names to modes."""
    return assignments.parse(self.op_names, modes, default=default)

  def check_modes(self, modes: Any) -> jax.Array:
    """Validates an assignment at the boundary (``assignments.check``); traced values get
    shape/dtype checks only (under ``jit``/``vmap`` an out-of-range index makes that op's
    output NaN)."""
    return assignments.check(self.ops, modes)

  def _flat_args(self, params: Any, inputs: Any) -> tuple[_Program, list[Any]]:
    """The program for these inputs' shapes, and the flat (params, inputs) leaves."""
    p_leaves, p_tree = jax.tree_util.tree_flatten(params)
    if p_tree != self._params_tree:
      raise ValueError(
          "params do not have the structure the emulator was built with:\n"
          f"  expected {self._params_tree}\n  got      {p_tree}"
      )
    for leaf, ref, path in zip(p_leaves, self._param_avals, self._param_paths):
      if np.shape(leaf) != ref.shape:
        raise ValueError(f"params{path} has shape {np.shape(leaf)}, expected {ref.shape}")
    x_leaves, x_tree = jax.tree_util.tree_flatten(inputs)
    if x_tree != self._inputs_tree:
      raise ValueError(f"inputs have structure {x_tree}, expected {self._inputs_tree}")
    return self._program(_avals(x_leaves)), p_leaves + x_leaves

  def __call__(
      self,
      params: Any,
      inputs: Any,
      modes: Any,
      *,
      activation_amax: jax.Array | None = None,
      mask: jax.Array | None = None,
      stored_weights: Sequence[Packed | None] | None = None,
  ) -> Any:
    """Run the model with op ``i`` in mode ``modes[i]``.

    Compiles on the first call per input shape; with tracers or under ``disable_jit`` it
    evaluates the model directly.

    Args:
      params: parameters with the structure and leaf shapes of ``self.params``.
      inputs: inputs with the structure of the example inputs (any shapes the model takes).
      modes: int32 array of shape ``(len(ops),)``, indices into ``aprec.MODES``.
      activation_amax: optional ``(len(ops), 2)`` fixed ranges of the (lhs, rhs) operands
        from ``calibrate`` (static scales, as deployed NNPs use); weights keep their own
        per-channel scales.
      mask: ``(batch, positions)``, nonzero/True at real positions, zero at padding.
        Dynamic activation scales then ignore padded positions, so real positions'
        outputs do not depend on what the padding holds (``padding.masked_amax``).
        Default: the input found by ``padding_mask="auto"`` (``mask_input``), if any.
      stored_weights: optional per-op weights in their storage formats (``store_weights``);
        the DMA converts each on the fly (``dma.load``) in place of the params' weight.
    """
    modes = self.check_modes(modes)
    if mask is None and self._mask_leaf is not None:
      mask = jax.tree_util.tree_leaves(inputs)[self._mask_leaf]
    if activation_amax is not None and np.shape(activation_amax) != (len(self.ops), 2):
      raise ValueError(
          f"activation_amax must have shape ({len(self.ops)}, 2), "
          f"got {np.shape(activation_amax)}; use emulator.calibrate(...)"
      )
    if mask is not None and np.ndim(mask) != 2:
      raise ValueError(f"mask must have shape (batch, positions), got {np.shape(mask)}")
    if stored_weights is not None and len(stored_weights) != len(self.ops):
      raise ValueError(
          f"stored_weights must have one entry per op ({len(self.ops)}), got "
          f"{len(stored_weights)}; use emulator.store_weights(params, modes)"
      )
    args = (params, inputs, modes, activation_amax, stored_weights, mask)
    if jax.config.jax_disable_jit or assignments.is_traced(args):
      return self._emulate(*args)
    if self.integer_fast_path:  # a concrete assignment, valid (check_modes): read on the host
      integer = bool(np.all(np.asarray(formats.MODE_IS_INT)[np.asarray(modes)]))
      return self._compiled_family[integer](*args)
    return self._compiled(*args)

  def _emulate(
      self,
      params: Any,
      inputs: Any,
      modes: jax.Array,
      activation_amax: jax.Array | None,
      stored_weights: Sequence[Packed | None] | None,
      mask: jax.Array | None = None,
  ) -> Any:
    """The emulated model as a traceable function of its arguments: the general
    program, or with a traced assignment and ``integer_fast_path``, one ``lax.cond``
    between it and the all-integer program."""
    args = (params, inputs, modes, activation_amax, stored_weights, mask)
    run = lambda integer_only: self._emulate_ops(args, integer_only)
    if not self.integer_fast_path:
      return run(False)
    # An out-of-range index is not an integer mode: the general program makes it NaN.
    index, valid = formats.lookup_index(modes)
    all_integer = jnp.all(jnp.asarray(formats.MODE_IS_INT)[index] & valid)
    return lax.cond(all_integer, lambda: run(True), lambda: run(False))

  def _emulate_ops(self, args: tuple, integer_only: bool) -> Any:
    """The model with every op a PAK call, ``args`` being ``_emulate``'s; with
    ``integer_only``, every mode is known to be an integer one
    (``pak.ProductSpec.integer_only``)."""
    params, inputs, modes, activation_amax, stored_weights, mask = args

    def compute(
        i, op: Op, contraction: pak.ProductSpec, lhs: jax.Array, rhs: jax.Array
    ) -> jax.Array:
      if integer_only:
        contraction = dataclasses.replace(contraction, integer_only=True)
      if stored_weights is not None and stored_weights[i] is not None:
        operands = [lhs, rhs]
        weight = operands[op.weight_operand]
        operands[op.weight_operand] = dma.load(stored_weights[i]).astype(weight.dtype)
        lhs, rhs = operands
      amax = padding.operand_amax(
          (contraction.lhs_reduce_axes, contraction.rhs_reduce_axes),
          (lhs, rhs),
          op.weight_operand,
          None if activation_amax is None else activation_amax[i],
          mask,
      )
      return pak.apply(contraction, lhs, rhs, modes[i], *amax)

    # Per-op weights in storage formats differ in structure from layer to layer, so with
    # them a scan runs layer by layer; otherwise each layer's mode is read inside the loop.
    return self._run_ops(params, inputs, compute, unroll=stored_weights is not None)

  def run_with(
      self,
      params: Any,
      inputs: Any,
      compute: Callable[[int, pak.ProductSpec, jax.Array, jax.Array], jax.Array],
  ) -> Any:
    """Run the traced model with op ``i`` computed by ``compute(i, contraction, lhs, rhs)``.

    ``contraction`` is the op's ``pak.ProductSpec``; ``contraction.float_product(lhs, rhs)``
    is the op exactly as the model computes it. This is the hook for analyses that look
    inside the model
    (``aprec.sensitivity.probes`` adds shifts at op outputs and operands to differentiate by them).
    ``i`` is always a Python int: a ``scan`` whose body holds ops is run here layer by
    layer (under ``jit``, unrolled), each layer's ops with their own indices.
    """
    return self._run_ops(
        params, inputs, lambda i, op, c, lhs, rhs: compute(i, c, lhs, rhs), unroll=True
    )

  def contraction(self, op: Op, eqn: Any, lhs: jax.Array, rhs: jax.Array) -> pak.ProductSpec:
    """The PAK's description of ``op`` (its equation ``eqn`` in the traced model) at these
    operands, with the emulator's activation scaling and straight-through estimator."""
    return pak.product_spec(
        eqn.primitive,
        eqn.params,
        lhs.shape,
        rhs.shape,
        eqn.outvars[0].aval.ndim,
        weight_operand=op.weight_operand,
        activation_scaling=self.activation_scaling,
        ste=self.ste,
    )

  def _run_ops(self, params: Any, inputs: Any, compute: Callable, *, unroll: bool) -> Any:
    """``run_with`` with ``compute(i, op, contraction, lhs, rhs)``.

    Unless ``unroll``, scans stay scans and ``i`` is a traced int32 inside their bodies
    (``op`` is then the first layer's record, whose kind, shapes and weight operand every
    layer shares).
    """
    program, flat = self._flat_args(params, inputs)

    def run_op(i, static_i: int, eqn, lhs, rhs):
      op = program.ops[static_i]
      return compute(i, op, self.contraction(op, eqn, lhs, rhs), lhs, rhs)

    closed = program.closed
    outs = _interpret.run_jaxpr(
        closed.jaxpr,
        closed.consts,
        flat,
        program.plan,
        run_op,
        _interpret.Index(0, 0),
        unroll=unroll,
    )
    return jax.tree_util.tree_unflatten(program.out_tree, outs)
