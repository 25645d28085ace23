import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from aprec import Emulator
from aprec.emulator.formats import MODES


class TinyCNN(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    x = nn.relu(nn.Conv(6, (3, 3), strides=2)(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(8)(x))
    return nn.Dense(3)(x)


class TinyAttention(nnx.Module):

  def __init__(self, rngs):
    self.ln = nnx.LayerNorm(8, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(
        num_heads=2, in_features=8, qkv_features=8, decode=False, rngs=rngs
    )
    self.blocks = nnx.List([nnx.Linear(8, 8, rngs=rngs) for _ in range(2)])
    self.head = nnx.Linear(8, 3, rngs=rngs)

  def __call__(self, x):
    x = x + self.attn(self.ln(x))
    for block in self.blocks:
      x = jax.nn.gelu(block(x))
    return self.head(x.mean(1))


@pytest.fixture(scope="module")
def cnn():
  x = jax.random.normal(jax.random.key(0), (3, 6, 6, 1))
  model = TinyCNN()
  params = model.init(jax.random.key(1), x)
  return Emulator(model.apply, params, x), params, x, model.apply


@pytest.fixture(scope="module")
def vit():
  x = jax.random.normal(jax.random.key(2), (2, 5, 8))
  module = TinyAttention(nnx.Rngs(0))
  emu = Emulator.from_nnx(module, x)
  graphdef, _ = nnx.split(module)
  return emu, emu.params, x, lambda s, x: nnx.merge(graphdef, s)(x)


def test_linen_op_table(cnn):
  emu = cnn[0]
  assert emu.op_names == ("Conv_0", "Conv_1", "Dense_0", "Dense_1")
  conv0, conv1, dense0, dense1 = emu.ops
  assert conv0.kind == "conv_general_dilated" and dense0.kind == "dot_general"
  assert conv0.macs == 3 * 6 * 6 * 4 * (3 * 3 * 1)
  assert conv1.out_shape == (3, 3, 3, 6) and conv1.macs == 3 * 3 * 3 * 6 * (3 * 3 * 4)
  assert dense0.macs == 3 * 54 * 8 and dense0.contraction_size == 54
  assert dense1.weight_elements == 8 * 3 and dense1.activation_elements == 3 * 8
  assert all(op.weight_operand == 1 for op in emu.ops)
  assert emu.passthrough == ()


def test_nnx_names_unique_and_stable(vit):
  emu = vit[0]
  assert emu.op_names == (
      "attn/query",
      "attn/key",
      "attn/value",
      "attn/dot_general",
      "attn/dot_general_1",
      "attn/out",
      "blocks/0",
      "blocks/1",
      "head",
  )
  assert [op.has_weight for op in emu.ops] == [True] * 3 + [False] * 2 + [True] * 4
  again = Emulator.from_nnx(TinyAttention(nnx.Rngs(5)), vit[2])
  assert again.op_names == emu.op_names
  assert len(set(emu.op_names)) == len(emu.op_names)


@pytest.mark.parametrize("which", ["cnn", "vit"])
def test_fp32_reproduces_original(which, request):
  emu, params, x, apply = request.getfixturevalue(which)
  fp32 = emu.assignment("fp32")
  with jax.disable_jit():
    assert np.array_equal(emu(params, x, fp32), apply(params, x))  # op by op: bit for bit
  ours, ref = jax.jit(emu)(params, x, fp32), jax.jit(apply)(params, x)
  np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6 * float(jnp.abs(ref).max()))


def test_fifty_assignments_one_compilation(cnn):
  emu, params, x, _ = cnn
  f = jax.jit(emu)
  rng = np.random.default_rng(0)
  outs = {
      tuple(m): f(params, x, jnp.asarray(m, jnp.int32))
      for m in rng.integers(0, len(MODES), (50, len(emu.ops)))
  }
  assert f._cache_size() == 1
  assert len({np.asarray(o).tobytes() for o in outs.values()}) > 40  # modes really differ


def test_vmap_over_assignments_equals_loop(vit):
  emu, params, x, _ = vit
  assignments = jnp.asarray(
      np.random.default_rng(1).integers(0, len(MODES), (6, len(emu.ops))), jnp.int32
  )
  batched = jax.jit(jax.vmap(emu, in_axes=(None, None, 0)))(params, x, assignments)
  f = jax.jit(emu)
  for i, m in enumerate(assignments):
    np.testing.assert_allclose(batched[i], f(params, x, m), rtol=1e-5, atol=1e-6)


def test_gradients_at_fp32_equal_unquantized_and_finite_elsewhere(cnn):
  emu, params, x, apply = cnn
  loss = lambda p, m: jnp.mean(jnp.square(emu(p, x, m)))
  g = jax.jit(jax.grad(loss))(params, emu.assignment("fp32"))
  g_ref = jax.jit(jax.grad(lambda p: jnp.mean(jnp.square(apply(p, x)))))(params)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  for name in MODES:
    for leaf in jax.tree.leaves(jax.jit(jax.grad(loss))(params, emu.assignment(name))):
      assert np.isfinite(leaf).all(), name


def test_low_precision_changes_output_in_order(cnn):
  emu, params, x, apply = cnn
  ref = apply(params, x)
  err = {n: float(jnp.abs(emu(params, x, emu.assignment(n)) - ref).max()) for n in MODES}
  assert err["fp32"] == 0
  assert 0 < err["fp16"] < err["bf16"] < err["int4"]
  assert err["int8"] < err["int4"]


def test_mixed_assignment_and_spec_parsing(cnn):
  emu = cnn[0]
  m = emu.assignment("int8,Dense_1=fp32")
  assert m.tolist() == [5, 5, 5, 0]
  assert emu.assignment({"Conv_0": "int4"}, default="fp16").tolist() == [6, 2, 2, 2]
  with pytest.raises(ValueError, match="unknown op name.*Dense_9.*Conv_0, Conv_1"):
    emu.assignment("Dense_9=int8")
  with pytest.raises(ValueError, match="unknown precision mode 'int2'"):
    emu.assignment("int2")


def test_bad_modes_are_rejected(cnn):
  emu, params, x, _ = cnn
  with pytest.raises(ValueError, match=r"shape \(4,\).*got shape \(3,\)"):
    emu(params, x, jnp.zeros(3, jnp.int32))
  with pytest.raises(TypeError, match="integer array.*float32"):
    emu(params, x, jnp.zeros(4, jnp.float32))
  with pytest.raises(ValueError, match=r"modes\[2\] = 7 \(op 'Dense_0'\).*0\.\.6"):
    emu(params, x, jnp.array([0, 0, 7, 0]))
  with pytest.raises(ValueError, match=r"modes\[0\] = -1"):
    emu(params, x, np.array([-1, 0, 0, 0]))


def test_bad_inputs_and_params_are_rejected(cnn):
  emu, params, x, _ = cnn
  fp32 = emu.assignment("fp32")
  with pytest.raises(ValueError, match="inputs have structure"):
    emu(params, [x], fp32)
  with pytest.raises(ValueError, match="params do not have the structure"):
    emu({"params": {}}, x, fp32)


def test_model_without_matmul_is_rejected():
  with pytest.raises(ValueError, match="found no matmul"):
    Emulator(lambda p, x: jnp.tanh(x * p), jnp.ones(3), jnp.ones(3))


def test_unsupported_primitives_are_reported():
  w = jnp.ones((3, 3))

  def f(p, x):
    y = jax.lax.while_loop(lambda c: c[0] < 2, lambda c: (c[0] + 1, c[1] @ p), (0, x))[1]
    idx = jnp.ones((2, 3), jnp.int32) @ jnp.ones((3, 3), jnp.int32)
    return y @ p + idx

  emu = Emulator(f, w, jnp.ones((2, 3)))
  assert emu.op_names == ("dot_general_0",)  # the weight is the unnamed root: kind_index
  assert emu.ops[0].weight_operand == 1
  reasons = {p.primitive: p for p in emu.passthrough}
  assert reasons["while"].count == 1 and "full precision" in reasons["while"].reason
  assert reasons["dot_general"].reason.startswith("integer operands")


def test_nan_and_inf_propagate_like_fp32(cnn):
  emu, params, x, apply = cnn
  bad = x.at[0, 0, 0, 0].set(jnp.nan).at[1, 2, 2, 0].set(jnp.inf)
  ours = emu(params, bad, emu.assignment("fp32"))
  ref = apply(params, bad)
  assert np.array_equal(np.isnan(ours), np.isnan(ref))
  assert np.isnan(emu(params, bad, emu.assignment("int8"))).any()


def test_static_calibration(cnn):
  _, params, x, apply = cnn
  emu = Emulator(apply, params, x, activation_scaling="per_tensor")  # ranges are per tensor
  ranges = emu.calibrate(params, [x, x * 0.5])
  assert ranges.shape == (len(emu.ops), 2)
  np.testing.assert_allclose(ranges[0, 0], jnp.abs(x).max())
  int8 = emu.assignment({"Conv_0": "int8"})  # the first op sees the calibration batch
  static = emu(params, x, int8, activation_amax=ranges)
  dynamic = emu(params, x, int8)
  np.testing.assert_array_equal(static, dynamic)
  halved = emu(params, x, int8, activation_amax=ranges * 0.5)  # saturates: differs
  assert not np.allclose(halved, dynamic)
  with pytest.raises(ValueError, match="activation_amax must have shape"):
    emu(params, x, int8, activation_amax=ranges[:2])


def test_sharded_sweep_equals_unsharded(cnn):
  emu, params, x, _ = cnn
  assert len(jax.devices()) == 4  # set in conftest
  assignments = np.random.default_rng(2).integers(0, len(MODES), (6, len(emu.ops)))
  sharded = emu.sweep(params, x, assignments)
  single = emu.sweep(params, x, assignments, devices=jax.devices()[:1])
  assert sharded.shape == (6, 3, 3)
  np.testing.assert_array_equal(np.asarray(sharded), np.asarray(single))
  f = jax.jit(emu)
  for i in (0, 5):
    np.testing.assert_allclose(
        sharded[i], f(params, x, jnp.asarray(assignments[i])), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("name", ["digits_cnn", "digits_vit"])
def test_reference_models_fp32_bit_exact(name):
  from aprec import models

  model = models.load(name)
  x = model.data.test.x[:16]
  emu = Emulator(model.apply_fn, model.params, x)
  fp32 = emu.assignment("fp32")
  with jax.disable_jit():
    assert np.array_equal(emu(model.params, x, fp32), model.apply_fn(model.params, x))
  ours = jax.jit(emu)(model.params, x, fp32)
  ref = jax.jit(model.apply_fn)(model.params, x)
  assert float(jnp.max(jnp.abs(ours - ref) / jnp.maximum(jnp.abs(ref), 1e-6))) <= 1e-6
  assert len(set(emu.op_names)) == len(emu.ops)
