"""``Emulator(integer_fast_path=True)``: an all-integer assignment runs a program without
per-op branches, and every assignment gives the general program's bits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.extend import core as jax_core

from aprec import Emulator
from aprec.emulator.formats import MODES, mode_index

INT8, INT4, BF16 = (mode_index(m) for m in ("int8", "int4", "bf16"))


class Layer(nn.Module):

  @nn.compact
  def __call__(self, c, _):
    return jnp.tanh(nn.Dense(4)(c)), None


class Mixer(nn.Module):
  """A convolution, a dense op on a shared input (q and k), a weightless product, a scan."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x)).reshape(x.shape[0], 9, 4)
    q, k = nn.Dense(6, name="q")(x), nn.Dense(6, name="k")(x)
    x = jax.nn.softmax(q @ k.transpose(0, 2, 1)) @ x
    layers = nn.scan(Layer, variable_axes={"params": 0}, split_rngs={"params": True}, length=2)
    x, _ = layers()(x, None)
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def pair():
  x = jax.random.normal(jax.random.key(0), (2, 3, 3, 1))
  model = Mixer()
  params = model.init(jax.random.key(1), x)
  general = Emulator(model.apply, params, x)
  fast = Emulator(model.apply, params, x, integer_fast_path=True)
  return general, fast, params, x


@pytest.fixture(scope="module")
def compiled(pair):
  """``jax.jit`` of both emulators, compiled once for the module."""
  general, fast, _, _ = pair
  return jax.jit(general), jax.jit(fast)


def _cases(n_ops):
  rng = np.random.default_rng(0)
  mixed_int = rng.choice([INT8, INT4], n_ops)
  with_float = mixed_int.copy()
  with_float[1] = BF16
  bad = mixed_int.copy()
  bad[2] = len(MODES)  # out of range: NaN either way
  return {
      "int8": np.full(n_ops, INT8),
      "int4": np.full(n_ops, INT4),
      "mixed_int": mixed_int,
      "with_float": with_float,
      "out_of_range": bad,
  }


def _conds(jaxpr):
  """The ``cond`` equations of a jaxpr, nested ones included, each with its branches."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "cond":
      found.append(eqn)
    for sub in jax_core.jaxprs_in_params(eqn.params):
      found.extend(_conds(sub))
  return found


def test_every_assignment_gives_the_general_programs_bits(pair, compiled):
  general, fast, params, x = pair
  jg, jf = compiled
  for name, modes in _cases(len(general.ops)).items():
    modes = jnp.asarray(modes, jnp.int32)
    want, got = jg(params, x, modes), jf(params, x, modes)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=name)
    # (The general program's own agreement with op-by-op evaluation: test_core_compiled.)
    assert bool(jnp.all(jnp.isnan(got) if name == "out_of_range" else jnp.isfinite(got))), name


def test_gradients_and_sweeps_match(pair, compiled):
  general, fast, params, x = pair
  modes = jnp.asarray(_cases(len(general.ops))["mixed_int"], jnp.int32)
  loss = lambda emu: jax.jit(jax.grad(lambda p: jnp.sum(emu(p, x, modes) ** 2)))
  g_general, g_fast = loss(general)(params), loss(fast)(params)
  jax.tree.map(np.testing.assert_array_equal, g_fast, g_general)
  rows = np.stack(list(_cases(len(general.ops)).values())[:4])
  for row, out in zip(rows, fast.sweep(params, x, rows)):
    np.testing.assert_array_equal(np.asarray(out), np.asarray(compiled[0](params, x, row)))


def test_one_branch_around_the_model_and_none_inside_its_integer_side(pair):
  general, fast, params, x = pair
  modes = jnp.full(len(general.ops), INT8, jnp.int32)
  per_op = _conds(jax.make_jaxpr(general)(params, x, modes).jaxpr)
  top = jax.make_jaxpr(fast)(params, x, modes).jaxpr.eqns
  (outer,) = [e for e in top if e.primitive.name == "cond"]
  false_side, true_side = outer.params["branches"]
  assert not _conds(true_side.jaxpr)  # the all-integer program
  assert len(_conds(false_side.jaxpr)) == len(per_op) > 0  # the general one, as without


def test_calibrated_ranges_stored_weights_and_vmap_match(pair, compiled):
  general, fast, params, x = pair
  cases = _cases(len(general.ops))
  amax = general.calibrate(params, [x, 2 * x])
  modes = jnp.asarray(cases["mixed_int"], jnp.int32)  # the all-integer program's case
  stored = general.store_weights(params, modes)  # the scan then runs layer by layer
  for kwargs in ({"activation_amax": amax}, {"stored_weights": stored}):
    want = jax.jit(lambda p, v, m, kw=kwargs: general(p, v, m, **kw))(params, x, modes)
    got = jax.jit(lambda p, v, m, kw=kwargs: fast(p, v, m, **kw))(params, x, modes)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=str(list(kwargs)))
  # Raw vmap over assignments: the branch becomes a select over both programs, same rows.
  rows = jnp.asarray(np.stack([cases["int8"], cases["with_float"]]), jnp.int32)
  got = jax.jit(jax.vmap(fast, in_axes=(None, None, 0)))(params, x, rows)
  for row, out in zip(rows, got):
    np.testing.assert_array_equal(np.asarray(out), np.asarray(compiled[0](params, x, row)))


def test_a_concrete_assignment_picks_its_program_on_the_host(pair, compiled):
  general, _, params, x = pair
  fast = Emulator(general.apply_fn, params, x, integer_fast_path=True)
  traced = []  # which program each trace built: True for the all-integer one
  emulate_ops = fast._emulate_ops
  fast._emulate_ops = lambda args, integer_only: traced.append(integer_only) or emulate_ops(
      args, integer_only
  )
  cases = _cases(len(general.ops))
  for name in ("int8", "int4", "mixed_int"):
    got = fast(params, x, cases[name])  # no jit: concrete modes, read on the host
    np.testing.assert_array_equal(np.asarray(got), np.asarray(compiled[0](params, x, cases[name])))
  assert traced == [True]  # one program, no outer cond: no general program traced
  got = fast(params, x, cases["with_float"])
  np.testing.assert_array_equal(
      np.asarray(got), np.asarray(compiled[0](params, x, cases["with_float"]))
  )
  assert traced == [True, False]
  with pytest.raises(ValueError, match="mode"):  # a concrete bad index fails at the boundary
    fast(params, x, cases["out_of_range"])
