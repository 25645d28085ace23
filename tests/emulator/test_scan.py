"""Ops inside ``scan``: one op per layer, switched per layer, the loop kept a loop.

Every scan-stacked model here has an unrolled twin: the same blocks applied one after
another to per-layer slices of the stacked weights, laid out as lists so that the twin's
ops get the same names (``layers/3/mlp_in``). The twin is the reference.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from aprec import Emulator
from aprec.emulator import _jaxpr
from aprec.emulator.formats import MODES

N_LAYERS = 4
X = jax.random.normal(jax.random.key(0), (2, 5))
_layer = lambda tree, i: jax.tree_util.tree_map(lambda a: a[i], tree)
_unstack = lambda tree, n: [_layer(tree, i) for i in range(n)]


# --------------------------------------------------------------------------------------
# Models: linen nn.scan, nnx.scan, plain lax.scan (also nested and reversed).


class Block(nn.Module):

  @nn.compact
  def __call__(self, x, _):
    h = jax.nn.gelu(nn.Dense(8, name="mlp_in")(x))
    return x + nn.Dense(4, name="mlp_out")(h), None


class LinenNet(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(4, name="embed")(x)
    stack = nn.scan(
        Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=N_LAYERS
    )
    x, _ = stack(name="layers")(x, None)
    return nn.Dense(3, name="head")(x)


def linen_twin(params, x):
  p = params["params"]
  x = nn.Dense(4).apply({"params": p["embed"]}, x)
  for layer in p["layers"]:
    x, _ = Block().apply({"params": layer}, x, None)
  return nn.Dense(3).apply({"params": p["head"]}, x)


class NnxBlock(nnx.Module):

  def __init__(self, rngs):
    self.mlp_in = nnx.Linear(4, 8, rngs=rngs)
    self.mlp_out = nnx.Linear(8, 4, rngs=rngs)

  def __call__(self, x):
    return x + self.mlp_out(jax.nn.gelu(self.mlp_in(x)))


class NnxNet(nnx.Module):

  def __init__(self, rngs):
    self.embed = nnx.Linear(5, 4, rngs=rngs)

    @nnx.split_rngs(splits=N_LAYERS)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make(rngs):
      return NnxBlock(rngs)

    self.layers = make(rngs)
    self.head = nnx.Linear(4, 3, rngs=rngs)

  def __call__(self, x):
    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def run(x, layer):
      return layer(x)

    return self.head(run(self.embed(x), self.layers))


class NnxTwin(nnx.Module):

  def __init__(self, rngs):
    self.embed = nnx.Linear(5, 4, rngs=rngs)
    self.layers = nnx.List([NnxBlock(rngs) for _ in range(N_LAYERS)])
    self.head = nnx.Linear(4, 3, rngs=rngs)

  def __call__(self, x):
    x = self.embed(x)
    for layer in self.layers:
      x = layer(x)
    return self.head(x)


def _dense(p, x):
  return x @ p["kernel"]


def plain_block(p, x):
  h = jnp.tanh(_dense(p["mlp_in"], x))
  mix = jax.nn.softmax(h @ h.T) @ h  # two products without a weight
  return x + _dense(p["mlp_out"], mix)


def plain_init(shape_prefix=(N_LAYERS,)):
  keys = iter(jax.random.split(jax.random.key(3), 4))
  w = lambda *s: {"kernel": jax.random.normal(next(keys), s) / np.sqrt(s[-2])}
  return {
      "embed": w(5, 4),
      "layers": {"mlp_in": w(*shape_prefix, 4, 8), "mlp_out": w(*shape_prefix, 8, 4)},
      "head": w(4, 3),
  }


def plain_apply(params, x, reverse=False):
  x = _dense(params["embed"], x)
  x, _ = jax.lax.scan(lambda c, p: (plain_block(p, c), None), x, params["layers"], reverse=reverse)
  return _dense(params["head"], x)


def plain_twin(params, x, reverse=False):
  x = _dense(params["embed"], x)
  for p in (params["layers"][::-1] if reverse else params["layers"]):
    x = plain_block(p, x)
  return _dense(params["head"], x)


def nested_apply(params, x):
  """Two blocks of three layers: a scan over blocks whose body scans over layers."""
  x = _dense(params["embed"], x)
  inner = lambda c, p: jax.lax.scan(lambda c, q: (plain_block(q, c), None), c, p["layers"])
  x, _ = jax.lax.scan(inner, x, params["blocks"])
  return _dense(params["head"], x)


def nested_twin(params, x):
  x = _dense(params["embed"], x)
  for block in params["blocks"]:
    for p in block["layers"]:
      x = plain_block(p, x)
  return _dense(params["head"], x)


def _case(name):
  """(emulator, params, apply) for the scan model and the same for its unrolled twin."""
  if name == "linen":
    params = LinenNet().init(jax.random.key(1), X)
    twin_params = {
        "params": {**params["params"], "layers": _unstack(params["params"]["layers"], N_LAYERS)}
    }
    apply, twin = LinenNet().apply, linen_twin
  elif name == "nnx":
    module = NnxNet(nnx.Rngs(0))
    graphdef, state = nnx.split(module)
    apply = lambda s, x: nnx.merge(graphdef, s)(x)
    params = state
    twin_def, twin_params = nnx.split(NnxTwin(nnx.Rngs(1)))
    pure = nnx.to_pure_dict(state)
    nnx.replace_by_pure_dict(
        twin_params, {**pure, "layers": dict(enumerate(_unstack(pure["layers"], N_LAYERS)))}
    )
    twin = lambda s, x: nnx.merge(twin_def, s)(x)
  elif name in ("plain", "reversed"):
    reverse = name == "reversed"
    params = plain_init()
    twin_params = {**params, "layers": _unstack(params["layers"], N_LAYERS)}
    apply = lambda p, x: plain_apply(p, x, reverse)
    twin = lambda p, x: plain_twin(p, x, reverse)
  elif name == "nested":
    params = plain_init((2, 3))
    params["blocks"] = {"layers": params.pop("layers")}
    twin_params = {
        **params,
        "blocks": [{"layers": _unstack(b["layers"], 3)} for b in _unstack(params["blocks"], 2)],
    }
    apply, twin = nested_apply, nested_twin
  return (Emulator(apply, params, X), params, apply), (
      Emulator(twin, twin_params, X),
      twin_params,
      twin,
  )


CASES = ("linen", "nnx", "plain", "reversed", "nested")


@pytest.fixture(scope="module", params=CASES)
def case(request):
  return _case(request.param)


def _for_twin(emu, twin, modes):
  """The same per-op modes in the twin's op order (a reversed scan runs layer 3 first)."""
  return np.asarray(modes)[[emu.op_names.index(n) for n in twin.op_names]]


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# --------------------------------------------------------------------------------------


def test_one_op_per_layer_named_like_the_unrolled_twin(case):
  (emu, _, _), (twin, _, _) = case
  assert sorted(emu.op_names) == sorted(twin.op_names)
  assert emu.passthrough == ()
  for op, ref in zip(emu.ops, (twin.ops[twin.op_names.index(n)] for n in emu.op_names)):
    assert (op.macs, op.lhs_shape, op.rhs_shape, op.weight_operand, op.weight_channel_axes) == (
        ref.macs,
        ref.lhs_shape,
        ref.rhs_shape,
        ref.weight_operand,
        ref.weight_channel_axes,
    )


def test_names():
  (plain, _, _), _ = _case("plain")
  body = ("mlp_in", "mlp_in/dot_general", "mlp_in/dot_general_1", "mlp_out")
  assert plain.op_names == (
      "embed",
      *(f"layers/{i}/{n}" for i in range(N_LAYERS) for n in body),
      "head",
  )
  (nested, _, _), _ = _case("nested")
  assert nested.op_names[1:3] == (
      "blocks/0/layers/0/mlp_in",
      "blocks/0/layers/0/mlp_in/dot_general",
  )
  assert nested.op_names[-2] == "blocks/1/layers/2/mlp_out"
  assert len(nested) == 2 + 2 * 3 * 4


def test_fp32_bit_exact_op_by_op_and_close_under_jit(case):
  (emu, params, apply), _ = case
  fp32 = emu.assignment("fp32")
  with jax.disable_jit():
    np.testing.assert_array_equal(np.asarray(emu(params, X, fp32)), np.asarray(apply(params, X)))
  assert _rel(jax.jit(emu)(params, X, fp32), jax.jit(apply)(params, X)) <= 1e-6


# Scan and unrolled twin are different XLA programs: float32 sums may round differently,
# and a rounding difference can move an operand across a quantization boundary.
TWIN_RTOL = 1e-5


def test_any_assignment_matches_the_unrolled_twin(case):
  (emu, params, _), (twin, twin_params, _) = case
  rng = np.random.default_rng(0)
  ours, ref = jax.jit(emu), jax.jit(twin)
  for modes in rng.integers(0, len(MODES), (4, len(emu))).astype(np.int32):
    twin_modes = _for_twin(emu, twin, modes)
    assert _rel(ours(params, X, modes), ref(twin_params, X, twin_modes)) <= TWIN_RTOL


def test_layer_0_and_layer_3_switch_on_their_own(case):
  (emu, params, _), (twin, twin_params, _) = case
  ours, ref = jax.jit(emu), jax.jit(twin)
  first = emu.op_names[1]
  layer3 = next(
      n for n in emu.op_names if n.replace("blocks/1/layers/0", "layers/3").startswith("layers/3/")
  )
  base = np.asarray(ours(params, X, emu.assignment("fp32")))
  outs = {}
  for spec in (f"fp32,{first}=int4", f"fp32,{layer3}=int4"):
    outs[spec] = np.asarray(ours(params, X, emu.assignment(spec)))
    assert not np.allclose(outs[spec], base, rtol=1e-4, atol=0)
    assert _rel(outs[spec], ref(twin_params, X, twin.assignment(spec))) <= TWIN_RTOL
  assert not np.allclose(*outs.values(), rtol=1e-4, atol=0)


def test_thirty_switches_compile_once():
  (emu, params, _), _ = _case("linen")
  traced = jax.jit(chex.assert_max_traces(lambda p, x, m: emu(p, x, m), n=1))
  rng = np.random.default_rng(1)
  for modes in rng.integers(0, len(MODES), (30, len(emu))).astype(np.int32):
    jax.block_until_ready(traced(params, X, modes))
  assert traced._cache_size() == 1


def test_scan_body_traced_once_not_unrolled():
  products = {}
  for n_layers in (2, 6):
    params = plain_init((n_layers,))
    emu = Emulator(plain_apply, params, X)
    assert len(emu) == 2 + 4 * n_layers
    closed = jax.make_jaxpr(emu)(params, X, emu.assignment("int8"))
    (scan,) = [e for e in closed.jaxpr.eqns if e.primitive.name == "scan"]
    assert scan.params["length"] == n_layers
    products[n_layers] = _jaxpr.count_primitives(closed.jaxpr, frozenset({"dot_general"}))
    hlo = jax.jit(emu).lower(params, X, emu.assignment("int8")).as_text()
    assert hlo.count("stablehlo.while") == 1
  assert products[2] == products[6]  # the body is in the program once, whatever the depth


def test_calibration_and_stored_weights_per_layer():
  (emu, params, _), (twin, twin_params, _) = _case("plain")
  ranges = jax.jit(emu.operand_ranges)(params, X)
  np.testing.assert_array_equal(
      np.asarray(ranges), np.asarray(jax.jit(twin.operand_ranges)(twin_params, X))
  )
  modes = emu.assignment("int8,layers/2/mlp_in=int4")
  ours = jax.jit(emu)(params, X, modes, activation_amax=ranges)
  ref = jax.jit(twin)(twin_params, X, modes, activation_amax=ranges)
  assert _rel(ours, ref) <= TWIN_RTOL
  stored = emu.store_weights(params, modes)
  assert stored[emu.op_names.index("layers/2/mlp_in")] is not None
  from_storage = jax.jit(lambda s: emu(params, X, modes, stored_weights=s))(stored)
  assert _rel(from_storage, jax.jit(emu)(params, X, modes)) <= TWIN_RTOL


def test_vmap_and_grad_through_the_scan():
  (emu, params, _), (twin, twin_params, _) = _case("plain")
  modes = np.random.default_rng(2).integers(0, len(MODES), (3, len(emu))).astype(np.int32)
  batched = jax.jit(jax.vmap(emu, in_axes=(None, None, 0)))(params, X, modes)
  for row, out in zip(modes, batched):
    assert _rel(out, jax.jit(emu)(params, X, row)) <= TWIN_RTOL
  loss = lambda e, p: lambda x: jnp.sum(e(p, x, modes[0]) ** 2)
  g = jax.jit(jax.grad(loss(emu, params)))(X)
  g_twin = jax.jit(jax.grad(loss(twin, twin_params)))(X)
  assert _rel(g, g_twin) <= TWIN_RTOL


def test_sensitivity_and_planning_see_every_layer():
  from aprec import sensitivity
  from aprec.planning import planner

  params = plain_init((2,))
  labels = np.array([0, 2])
  profile = sensitivity.analyze(
      plain_apply, params, [(X, labels)], methods="perturbation,taylor", loss="ce"
  )
  emu = Emulator(plain_apply, params, X)
  assert tuple(op.name for op in profile.ops) == emu.op_names
  table = np.asarray(profile.table("perturbation"))
  assert table.shape == (len(emu), len(MODES)) and np.all(np.isfinite(table))
  # Δloss of layer 1's mlp_in alone at int4, measured directly through the scan.
  i = emu.op_names.index("layers/1/mlp_in")
  ce = lambda logits: float(-jnp.mean(jax.nn.log_softmax(logits)[np.arange(2), labels]))
  measured = ce(jax.jit(emu)(params, X, emu.assignment("fp32,layers/1/mlp_in=int4"))) - ce(
      plain_apply(params, X)
  )
  np.testing.assert_allclose(table[i, MODES.index("int4")], measured, rtol=1e-3, atol=1e-6)
  plan = planner.plan(profile, "bits=6")
  assert len(plan.assignment) == len(emu)
