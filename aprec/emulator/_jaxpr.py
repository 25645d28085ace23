"""The one place aprec touches JAX internals: jaxpr structures and primitive binding.

JAX's jaxpr API moves between releases (``Primitive.get_bind_params`` returned
``(subfuns, params)`` before 0.10 and ``params`` after; the jit primitive was renamed
``pjit`` → ``jit``). Everything version-dependent lives here and is tested in
``tests/test__jaxpr.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

try:  # jax >= 0.4.30 exposes the jaxpr types here.
  from jax.extend import core as _core
except ImportError:  # pragma: no cover
  from jax import core as _core  # type: ignore[no-redef]

ClosedJaxpr = _core.ClosedJaxpr
Jaxpr = _core.Jaxpr
JaxprEqn = _core.JaxprEqn
Literal = _core.Literal
Var = _core.Var

# Primitives whose body can be evaluated in place of the call without changing the
# forward value. Inlining a custom_jvp/custom_vjp call drops its custom derivative, so
# callers inline only bodies that contain an op they must replace.
INLINABLE = frozenset(
    {
        "jit",
        "pjit",
        "closed_call",
        "core_call",
        "remat",
        "remat2",
        "checkpoint",
        "custom_jvp_call",
        "custom_vjp_call",
        "custom_vjp_call_jaxpr",
    }
)
_BODY_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


def read(env: dict, atom: Any) -> Any:
  """The value of a jaxpr atom: a literal's constant, or a variable's entry in ``env``."""
  return atom.val if isinstance(atom, Literal) else env[atom]


def as_closed(jaxpr: Jaxpr | ClosedJaxpr) -> ClosedJaxpr:
  return jaxpr if isinstance(jaxpr, ClosedJaxpr) else ClosedJaxpr(jaxpr, [])


def inline_body(eqn: JaxprEqn) -> ClosedJaxpr | None:
  """The body of a call-like equation whose inputs map one-to-one onto its invars."""
  if eqn.primitive.name not in INLINABLE:
    return None
  for key in _BODY_PARAMS:
    body = eqn.params.get(key)
    if isinstance(body, (Jaxpr, ClosedJaxpr)):
      body = as_closed(body)
      if len(body.jaxpr.invars) == len(eqn.invars):
        return body
  return None


class Scan(NamedTuple):
  """The parts of a ``scan`` equation: its operands are ``consts + carry + xs``, its body
  maps ``consts + carry + xs[t]`` to ``carry + ys[t]``."""

  body: ClosedJaxpr
  num_consts: int
  num_carry: int
  length: int
  reverse: bool
  unroll: int | bool


def scan_parts(eqn: JaxprEqn) -> Scan | None:
  """The parts of a ``scan`` equation (linen ``nn.scan``, ``nnx.scan``, ``lax.scan``), else None."""
  if eqn.primitive.name != "scan":
    return None
  p = eqn.params
  return Scan(
      body=as_closed(p["jaxpr"]),
      num_consts=p["num_consts"],
      num_carry=p["num_carry"],
      length=p["length"],
      reverse=p["reverse"],
      unroll=p.get("unroll", 1),
  )


def sub_jaxprs(eqn: JaxprEqn) -> Iterator[Jaxpr]:
  """Every jaxpr nested in an equation's parameters (bodies of jit, scan, cond, ...)."""
  for value in eqn.params.values():
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
      if isinstance(v, ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, Jaxpr):
        yield v


def count_primitives(jaxpr: Jaxpr, names: frozenset[str]) -> int:
  """How many equations named in ``names`` the jaxpr holds, nested bodies included."""
  total = 0
  for eqn in jaxpr.eqns:
    total += eqn.primitive.name in names
    total += sum(count_primitives(sub, names) for sub in sub_jaxprs(eqn))
  return total


def bind(eqn: JaxprEqn, invals: Sequence[Any]) -> list[Any]:
  """Apply an equation's primitive to values, as ``jax.core.eval_jaxpr`` does."""
  bind_params = eqn.primitive.get_bind_params(eqn.params)
  subfuns: Sequence[Any] = ()
  if isinstance(bind_params, tuple):  # jax < 0.10: (subfuns, params)
    subfuns, bind_params = bind_params
  ctx = getattr(eqn, "ctx", None)
  manager = getattr(ctx, "manager", None)
  if manager is not None:
    with manager:
      out = eqn.primitive.bind(*subfuns, *invals, **bind_params)
  else:  # pragma: no cover - older jax without equation contexts
    out = eqn.primitive.bind(*subfuns, *invals, **bind_params)
  return list(out) if eqn.primitive.multiple_results else [out]


def name_stack(eqn: JaxprEqn) -> str:
  """The equation's name stack with transform wrappers (``vmap(...)``, ``jvp(...)``) dropped."""
  parts = str(eqn.source_info.name_stack).split("/")
  return "/".join(p for p in parts if p and "(" not in p)


def live_inputs(closed: ClosedJaxpr) -> list[bool]:
  """Which inputs of a jaxpr its outputs depend on (equations with effects count as live).

  A nested call that is live keeps all of its inputs live: conservative, never wrong.
  """
  jaxpr = closed.jaxpr
  live = {v for v in jaxpr.outvars if isinstance(v, Var)}
  for eqn in reversed(jaxpr.eqns):
    if eqn.effects or any(v in live for v in eqn.outvars):
      live.update(v for v in eqn.invars if isinstance(v, Var))
  return [v in live for v in jaxpr.invars]


def free_vars(eqns: Sequence[JaxprEqn]) -> list[Var]:
  """The variables ``eqns`` read but do not define, in order of first use."""
  defined: set[Var] = set()
  seen: dict[Var, None] = {}
  for eqn in eqns:
    for v in eqn.invars:
      if isinstance(v, Var) and v not in defined:
        seen.setdefault(v)
    defined.update(eqn.outvars)
  return list(seen)


def defined_vars(eqns: Sequence[JaxprEqn]) -> list[Var]:
  """The variables ``eqns`` define, in order."""
  return [v for eqn in eqns for v in eqn.outvars]


def structure_key(eqns: Sequence[JaxprEqn], inputs: Sequence[Var], outputs: Sequence[Var]) -> str:
  """A text equal for two slices of equations exactly when they compute the same function of
  their ``inputs`` (in order) to their ``outputs``: every variable is named by its first
  appearance, each equation written with its primitive, parameters, shapes and literals.
  (Parameters are compared by their text; two that print alike are treated as equal.)
  """
  names: dict[Var, str] = {}

  def name(atom: Any) -> str:
    if isinstance(atom, Literal):
      return f"lit({atom.val!r}:{atom.aval})"
    if atom not in names:
      names[atom] = f"v{len(names)}:{atom.aval}"
    return names[atom]

  lines = ["in " + " ".join(name(v) for v in inputs)]
  for eqn in eqns:
    ins = " ".join(name(a) for a in eqn.invars)
    outs = " ".join(name(v) for v in eqn.outvars)
    params = sorted((k, str(v)) for k, v in eqn.params.items())
    lines.append(f"{outs} = {eqn.primitive.name}[{params}] {ins}")
  lines.append("out " + " ".join(name(v) for v in outputs))
  return "\n".join(lines)
