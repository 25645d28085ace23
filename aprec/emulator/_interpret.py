"""Evaluating a traced model's jaxpr with its ops replaced: the emulator's interpreter.

Equations the op table plans are sent to ``run_op`` (a PAK call); call-like bodies holding
ops are inlined; scans holding ops run as scans whose body reads each layer's op index
from the iteration counter (or, with ``unroll``, layer by layer). Every other equation is
bound unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
from jax import lax

from aprec.emulator import _jaxpr
from aprec.emulator.ops import Inline, Loop


class Index(NamedTuple):
  """Index of a body's first op: ``value`` (a traced int32 inside a scan run as a loop)
  and ``static`` (the same where ``value`` is an int; else the first iteration's)."""

  value: Any
  static: int


def run_jaxpr(
    jaxpr, consts, args, plan: dict, run_op: Callable, base: Index, *, unroll: bool
) -> list[Any]:
  """Evaluate a jaxpr, sending planned ops to ``run_op(i, static_i, eqn, lhs, rhs)``,
  inlining planned bodies and running planned scans as scans (or, with ``unroll``, layer
  by layer)."""
  env: dict[Any, Any] = {}
  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  run_eqns(jaxpr.eqns, env, plan, run_op, base, unroll=unroll)
  return [_jaxpr.read(env, a) for a in jaxpr.outvars]


def run_eqns(eqns, env: dict, plan: dict, run_op: Callable, base: Index, *, unroll: bool) -> None:
  """``run_jaxpr``'s loop over some equations: reads their inputs from ``env`` and adds their
  outputs to it (a slice of a jaxpr runs from the values live at its start)."""
  for eqn in eqns:
    invals = [_jaxpr.read(env, a) for a in eqn.invars]
    step = plan.get(id(eqn))
    if step is None:
      outs = _jaxpr.bind(eqn, invals)
    elif isinstance(step, Inline):
      body = _jaxpr.inline_body(eqn)
      outs = run_jaxpr(body.jaxpr, body.consts, invals, step.plan, run_op, base, unroll=unroll)
    elif isinstance(step, Loop):
      run = unrolled_scan if unroll else scan_loop
      outs = run(_jaxpr.scan_parts(eqn), step, invals, run_op, base)
    else:
      outs = [run_op(base.value + step, base.static + step, eqn, *invals)]
    env.update(zip(eqn.outvars, outs))


def scan_loop(scan, loop: Loop, invals, run_op: Callable, base: Index) -> list[Any]:
  """The scan, rewritten: its body evaluated with op indices from the iteration counter."""
  n_fixed = scan.num_consts + scan.num_carry
  consts, carry, xs = invals[: scan.num_consts], invals[scan.num_consts : n_fixed], invals[n_fixed:]

  def body(carry, t_and_xs):
    t, xs_t = t_and_xs
    at = Index(base.value + loop.start + t * loop.ops_per_step, base.static + loop.start)
    outs = run_jaxpr(
        scan.body.jaxpr,
        scan.body.consts,
        [*consts, *carry, *xs_t],
        loop.plan,
        run_op,
        at,
        unroll=False,
    )
    return outs[: scan.num_carry], outs[scan.num_carry :]

  steps = jnp.arange(scan.length, dtype=jnp.int32)
  carry, ys = lax.scan(
      body,
      list(carry),
      (steps, list(xs)),
      length=scan.length,
      reverse=scan.reverse,
      unroll=scan.unroll,
  )
  return [*carry, *ys]


def unrolled_scan(scan, loop: Loop, invals, run_op: Callable, base: Index) -> list[Any]:
  """The scan as a Python loop over its iterations, each with its own static op indices."""
  n_fixed = scan.num_consts + scan.num_carry
  consts, carry, xs = invals[: scan.num_consts], invals[scan.num_consts : n_fixed], invals[n_fixed:]
  ys_by_step: list[Any] = [None] * scan.length
  for t in (reversed(range(scan.length)) if scan.reverse else range(scan.length)):
    first = loop.start + t * loop.ops_per_step
    outs = run_jaxpr(
        scan.body.jaxpr,
        scan.body.consts,
        [*consts, *carry, *(x[t] for x in xs)],
        loop.plan,
        run_op,
        Index(base.value + first, base.static + first),
        unroll=True,
    )
    carry, ys_by_step[t] = outs[: scan.num_carry], outs[scan.num_carry :]
  return [*carry, *(jnp.stack(ys) for ys in zip(*ys_by_step))]
