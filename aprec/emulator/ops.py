"""The op table: one record per matrix-multiplying operation of a model."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from aprec.emulator import _jaxpr
from aprec.emulator.products import contraction_size

KINDS = ("dot_general", "conv_general_dilated")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Op:
  """One matmul or convolution of a model, as the emulator and the cost model see it.

  Attributes:
    name: stable, readable name (the weight's parameter path, e.g. ``Dense_0`` or
      ``encoder/layers/0/attn/query``; else where its operands came from).
    kind: ``"dot_general"`` or ``"conv_general_dilated"``.
    lhs_shape, rhs_shape, out_shape: operand and result shapes.
    weight_operand: 0 (lhs) or 1 (rhs) when that operand is a model parameter, else None.
    weight_channel_axes: axes of the weight operand with their own scale (output channels).
    macs: multiply-accumulates of one call.
    contraction_size: MACs per output element (the ``K`` of the product).
    weight_elements: elements of the weight operand (0 without one).
    activation_elements: elements of the non-weight operand(s).
    output_elements: elements of the result.
  """

  name: str
  kind: str
  lhs_shape: tuple[int, ...]
  rhs_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  weight_operand: int | None
  macs: int
  contraction_size: int
  weight_channel_axes: tuple[int, ...] = ()

  @property
  def has_weight(self) -> bool:
    return self.weight_operand is not None

  @property
  def weight_elements(self) -> int:
    if self.weight_operand is None:
      return 0
    return math.prod((self.lhs_shape, self.rhs_shape)[self.weight_operand])

  @property
  def activation_elements(self) -> int:
    sizes = (math.prod(self.lhs_shape), math.prod(self.rhs_shape))
    return sum(s for i, s in enumerate(sizes) if i != self.weight_operand)

  @property
  def output_elements(self) -> int:
    return math.prod(self.out_shape)

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d.update(
        has_weight=self.has_weight,
        weight_elements=self.weight_elements,
        activation_elements=self.activation_elements,
        output_elements=self.output_elements,
    )
    return d


# --------------------------------------------------------------------------------------
# Discovery: walk a model's jaxpr and record every matmul and convolution.

# Equations that only move or retype a tensor: a parameter seen through them is still the
# same weight (e.g. a kernel cast to the compute dtype, or reshaped for an einsum).
_LAYOUT = frozenset(
    {
        "convert_element_type",
        "reshape",
        "transpose",
        "broadcast_in_dim",
        "squeeze",
        "expand_dims",
        "copy",
        "copy_p",
        "reduce_precision",
        "rev",
        # One layer's slice of stacked weights (``w[i]`` in a ``fori_loop`` body).
        "slice",
        "dynamic_slice",
    }
)
_KIND_SET = frozenset(KINDS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Passthrough:
  """A matmul/conv the emulator cannot switch; it runs at full precision.

  Attributes:
    primitive: the equation that holds it (``dot_general``, or e.g. ``scan``, ``while``).
    count: matmuls/convs it holds.
    reason: why it is not emulated.
  """

  primitive: str
  count: int
  reason: str


@dataclasses.dataclass(frozen=True)
class _Info:
  """What discovery knows about a value: the weight it is, and where it came from."""

  param: str | None = None  # parameter path when the value is (a view of) one weight
  scope: str = ""  # readable provenance, used to name ops without a weight


_EMPTY = _Info()


def _common_scope(scopes) -> str:
  parts = [s.split("/") for s in scopes if s]
  if not parts:
    return ""
  prefix = parts[0]
  for p in parts[1:]:
    n = 0
    while n < min(len(prefix), len(p)) and prefix[n] == p[n]:
      n += 1
    prefix = prefix[:n]
  return "/".join(prefix)


def _contraction_size(eqn) -> int:
  lhs, rhs = (v.aval.shape for v in eqn.invars)
  return contraction_size(eqn.primitive.name, eqn.params, lhs, rhs)


def _is_float(aval) -> bool:
  return np.issubdtype(aval.dtype, np.floating)


@dataclasses.dataclass(frozen=True)
class Inline:
  """Evaluate the equation's body in its place; ``plan`` covers the body's equations."""

  plan: dict


@dataclasses.dataclass(frozen=True)
class Loop:
  """A ``scan`` whose body holds ops, run as a scan.

  Iteration ``t`` (the ``t``-th slice of the scanned-over inputs) runs the body's op ``j``
  as op ``start + t * ops_per_step + j``; ``plan`` covers the body's equations, with op
  indices counted from the start of one iteration.
  """

  start: int
  length: int
  ops_per_step: int
  plan: dict


# What ``Discovery.plan`` maps an equation to: an op index (relative to the enclosing
# body's first op), an inlined body, or a loop.
Step = int | Inline | Loop


@dataclasses.dataclass
class Discovery:
  """Result of walking a jaxpr: the op table and how to evaluate each equation.

  ``plan`` maps ``id(eqn)`` to a ``Step``; every other equation is bound unchanged. Bodies
  (of calls and scans) have plans of their own, so a body traced once and called twice
  keeps one plan per call.
  """

  ops: list[Op] = dataclasses.field(default_factory=list)
  passthrough: list[Passthrough] = dataclasses.field(default_factory=list)
  plan: dict[int, Step] = dataclasses.field(default_factory=dict)
  # Per op: position (in its name's "/"-separated parts) of its outermost layer index.
  index_at: list[int | None] = dataclasses.field(default_factory=list)
  _taken: dict[str, int] = dataclasses.field(default_factory=dict)

  def unique(self, name: str) -> str:
    n = self._taken.get(name, 0)
    self._taken[name] = n + 1
    return name if n == 0 else f"{name}_{n}"

  def add(self, op: Op, index_at: int | None = None) -> None:
    self.ops.append(op)
    self.index_at.append(index_at)


def discover(closed_jaxpr, input_infos: list[_Info]) -> Discovery:
  """Find the ops of a traced model. ``input_infos`` describe its flat inputs."""
  found = Discovery()
  _walk(closed_jaxpr.jaxpr, [_EMPTY] * len(closed_jaxpr.jaxpr.constvars) + list(input_infos), found)
  return found


def _walk(jaxpr, infos, found: Discovery) -> list[_Info]:
  env = dict(zip(list(jaxpr.constvars) + list(jaxpr.invars), infos))
  get = lambda a: env.get(a, _EMPTY) if isinstance(a, _jaxpr.Var) else _EMPTY
  for eqn in jaxpr.eqns:
    ins = [get(a) for a in eqn.invars]
    name = eqn.primitive.name
    outs = None
    if name in _KIND_SET:
      if all(_is_float(v.aval) for v in eqn.invars):
        op = _record(eqn, ins, found)
        found.plan[id(eqn)] = len(found.ops)
        found.add(op)
        outs = [_Info(scope=op.name)]
      else:
        found.passthrough.append(
            Passthrough(primitive=name, count=1, reason="integer operands are left as they are")
        )
    else:
      n_inside = sum(_jaxpr.count_primitives(sub, _KIND_SET) for sub in _jaxpr.sub_jaxprs(eqn))
      body = _jaxpr.inline_body(eqn) if n_inside else None
      scan = _jaxpr.scan_parts(eqn) if n_inside else None
      if body is not None:
        inner = Discovery(
            ops=found.ops,
            passthrough=found.passthrough,
            index_at=found.index_at,
            _taken=found._taken,
        )
        outs = _walk(body.jaxpr, [_EMPTY] * len(body.jaxpr.constvars) + ins, inner)
        found.plan[id(eqn)] = Inline(inner.plan)
      elif scan is not None and scan.length > 0:
        outs = _walk_scan(eqn, scan, ins, found)
      elif n_inside:
        found.passthrough.append(
            Passthrough(
                primitive=name,
                count=n_inside,
                reason=f"matmuls inside `{name}` run at full precision (not emulated yet)",
            )
        )
    if outs is None:
      scope = _common_scope(i.scope for i in ins)
      params = {i.param for i in ins if i.param is not None}
      layout = name in _LAYOUT and len(params) == 1
      outs = [_Info(param=params.pop() if layout else None, scope=scope)] * len(eqn.outvars)
    env.update(zip(eqn.outvars, outs))
  return [get(a) for a in jaxpr.outvars]


def _walk_scan(eqn, scan: _jaxpr.Scan, ins: list[_Info], found: Discovery) -> list[_Info]:
  """Discover a scan body's ops once, then record them once per iteration (layer)."""
  n_fixed = scan.num_consts + scan.num_carry
  carry = [_Info(scope=i.scope) for i in ins[scan.num_consts : n_fixed]]  # changes per step
  body_infos = (
      [_EMPTY] * len(scan.body.jaxpr.constvars) + ins[: scan.num_consts] + carry + ins[n_fixed:]
  )  # a slice of stacked weights is still that weight
  body = Discovery()
  outs = _walk(scan.body.jaxpr, body_infos, body)
  found.passthrough.extend(body.passthrough)
  if not body.ops:
    return outs
  found.plan[id(eqn)] = Loop(
      start=len(found.ops), length=scan.length, ops_per_step=len(body.ops), plan=body.plan
  )
  at = _layer_index_positions(body)
  for t in range(scan.length):
    for op, k in zip(body.ops, at):
      parts = op.name.split("/")
      name = "/".join(parts[:k] + [str(t)] + parts[k:])
      found.add(dataclasses.replace(op, name=found.unique(name)), k)
  return [_Info(scope=o.scope) for o in outs]


def _layer_index_positions(body: Discovery) -> list[int]:
  """Where each body op's name takes the layer index: after the path its weights share.

  The last part of a weight's path is its own module (``mlp_in``) and a nested scan's
  index belongs to the part before it, so the shared prefix stops short of both:
  ``layers/mlp_in`` and ``layers/mlp_out`` → ``layers/3/mlp_in``; in a nested scan
  ``blocks/layers/3/mlp_in`` → ``blocks/2/layers/3/mlp_in``.
  """
  parts = [op.name.split("/") for op in body.ops]
  limits = [len(p) - 1 if k is None else k - 1 for p, k in zip(parts, body.index_at)]
  weighted = [i for i, op in enumerate(body.ops) if op.has_weight] or range(len(parts))
  shared = max(0, min(limits[i] for i in weighted))
  prefix = parts[weighted[0]][:shared]
  for i in weighted:
    shared = next((n for n in range(shared) if parts[i][n] != prefix[n]), shared)
  prefix = prefix[:shared]
  positions = []
  for p, limit in zip(parts, limits):
    common = next((n for n in range(len(prefix)) if n >= len(p) or p[n] != prefix[n]), len(prefix))
    positions.append(max(0, min(common, limit)))
  return positions


def _record(eqn, ins: list[_Info], found: Discovery) -> Op:
  kind = eqn.primitive.name
  weights = [i for i in (1, 0) if ins[i].param is not None]
  weight_operand = weights[0] if weights else None
  if weight_operand is not None and ins[weight_operand].param:
    base = ins[weight_operand].param
  else:
    scope = _common_scope(i.scope for i in ins) or _jaxpr.name_stack(eqn)
    base = f"{scope}/{kind}" if scope else f"{kind}_{sum(o.kind == kind for o in found.ops)}"
  lhs, rhs = (tuple(v.aval.shape) for v in eqn.invars)
  out = tuple(eqn.outvars[0].aval.shape)
  k = _contraction_size(eqn)
  channels = () if weight_operand is None else _channel_axes(eqn, weight_operand)
  return Op(
      name=found.unique(base),
      kind=kind,
      lhs_shape=lhs,
      rhs_shape=rhs,
      out_shape=out,
      weight_operand=weight_operand,
      macs=math.prod(out) * k,
      contraction_size=k,
      weight_channel_axes=channels,
  )


def _channel_axes(eqn, side: int) -> tuple[int, ...]:
  """Axes of operand ``side`` that keep their own scale: all but the contracted ones."""
  ndim = eqn.invars[side].aval.ndim
  if eqn.primitive.name == "dot_general":
    contracting = eqn.params["dimension_numbers"][0][side]
    return tuple(a for a in range(ndim) if a not in contracting)
  return (eqn.params["dimension_numbers"].rhs_spec[0],) if side == 1 else ()


def param_name(path) -> str:
  """Readable name of the weight at a pytree path: ``("params","Dense_0","kernel")`` → ``Dense_0``.

  The leading ``params`` collection (linen) and the leaf's own name (``kernel``, and nnx's
  ``.value``) are dropped.
  """
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  if parts and parts[-1] == "value" and len(parts) > 1:
    parts = parts[:-1]
  if len(parts) > 1 and parts[0] == "params":
    parts = parts[1:]
  return "/".join(parts[:-1]) if len(parts) > 1 else "/".join(parts)
