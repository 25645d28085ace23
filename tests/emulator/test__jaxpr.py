import jax
import jax.numpy as jnp
import numpy as np

from aprec.emulator import _jaxpr

KINDS = frozenset({"dot_general"})


def _eqns(f, *args):
  return jax.make_jaxpr(f)(*args).jaxpr.eqns


def test_inline_body_for_jit_remat_and_custom_jvp():
  w = jnp.ones((3, 3))
  relu = jax.custom_jvp(lambda x: jnp.maximum(x, 0))
  relu.defjvp(lambda p, t: (relu(p[0]), t[0] * (p[0] > 0)))
  f = lambda x: relu(jax.checkpoint(lambda y: jax.jit(lambda z: z @ w)(y))(x))
  eqns = _eqns(f, jnp.ones((2, 3)))
  names = [e.primitive.name for e in eqns]
  assert names[-1] == "custom_jvp_call"
  for eqn in eqns:
    body = _jaxpr.inline_body(eqn)
    assert body is not None and len(body.jaxpr.invars) == len(eqn.invars)
  assert sum(_jaxpr.count_primitives(s, KINDS) for e in eqns for s in _jaxpr.sub_jaxprs(e)) == 1


def test_scan_is_not_inlinable_but_counted():
  w = jnp.ones((3, 3))
  f = lambda x: jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=2)[0]
  (eqn,) = [e for e in _eqns(f, jnp.ones((2, 3))) if e.primitive.name == "scan"]
  assert _jaxpr.inline_body(eqn) is None
  assert sum(_jaxpr.count_primitives(s, KINDS) for s in _jaxpr.sub_jaxprs(eqn)) == 1


def test_scan_parts_split_operands_into_consts_carry_and_xs():
  w, ws = jnp.ones((3, 3)), jnp.ones((4, 3, 3))
  f = lambda x: jax.lax.scan(lambda c, v: (c @ w @ v, c.sum()), x, ws, reverse=True)
  (eqn,) = [e for e in _eqns(f, jnp.ones((2, 3))) if e.primitive.name == "scan"]
  scan = _jaxpr.scan_parts(eqn)
  assert (scan.num_consts, scan.num_carry, scan.length, scan.reverse) == (1, 1, 4, True)
  assert len(eqn.invars) == scan.num_consts + scan.num_carry + 1
  assert [v.aval.shape for v in scan.body.jaxpr.invars] == [(3, 3), (2, 3), (3, 3)]
  assert len(scan.body.jaxpr.outvars) == 2  # carry, y
  while_eqn = _eqns(
      lambda x: jax.lax.while_loop(lambda c: c.sum() < 9, lambda c: c @ w, x), jnp.ones((2, 3))
  )[0]
  assert _jaxpr.scan_parts(while_eqn) is None


def test_bind_reproduces_each_equation():
  f = lambda x: jax.nn.relu(jax.jit(jnp.sin)(x) * 2.0).sum()
  x = jnp.linspace(-2, 2, 7)
  closed = jax.make_jaxpr(f)(x)
  env = {closed.jaxpr.invars[0]: x}
  for eqn in closed.jaxpr.eqns:
    outs = _jaxpr.bind(eqn, [_jaxpr.read(env, a) for a in eqn.invars])
    env.update(zip(eqn.outvars, outs))
  assert float(_jaxpr.read(env, closed.jaxpr.outvars[0])) == float(f(x))


def test_name_stack_drops_transforms():
  with jax.named_scope("block"):
    eqns = _eqns(jax.vmap(lambda x: x * 2.0), jnp.ones((2, 3)))
  assert _jaxpr.name_stack(eqns[0]) in ("block", "")
  assert "(" not in _jaxpr.name_stack(eqns[0])


def test_read_literal():
  eqn = _eqns(lambda x: x + 1.0, jnp.ones(2))[0]
  assert np.asarray(_jaxpr.read({}, eqn.invars[1])) == 1.0


def test_live_inputs_follows_dead_chains():
  def f(a, b, c):
    dead = jnp.sin(b) * 2.0  # computed, never returned
    del dead
    return a + 1.0, jnp.cos(c)

  closed = jax.make_jaxpr(f)(1.0, 2.0, 3.0)
  assert _jaxpr.live_inputs(closed) == [True, False, True]
