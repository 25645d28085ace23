"""Scales that respect padding and batch-mates (issue 9, item 2; issue 13, case 5)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from aprec import Emulator
from aprec.emulator import padding
from aprec.emulator.formats import MODES
from aprec.models import toy_text

SAFE_SCALINGS = ("per_example", "per_token")


class ConvNet(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


class TokenMLP(nn.Module):

  @nn.compact
  def __call__(self, x):  # (batch, tokens, features)
    return nn.Dense(3)(nn.relu(nn.Dense(8)(x)))


def _model(kind):
  if kind == "conv":
    x = jax.random.normal(jax.random.key(0), (4, 5, 5, 2))
    model = ConvNet()
  else:
    x = jax.random.normal(jax.random.key(0), (4, 3, 6))
    model = TokenMLP()
  return model.apply, model.init(jax.random.key(1), x), x


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("scaling", SAFE_SCALINGS)
def test_nan_stays_in_its_example_and_batch_mates_do_not_matter(kind, scaling):
  apply, params, x = _model(kind)
  emu = Emulator(apply, params, x, activation_scaling=scaling)
  run = jax.jit(emu)
  others = jax.random.normal(jax.random.key(2), x.shape) * 30.0
  with_nan = x.at[1].set(jnp.nan)
  mates = others.at[0].set(x[0])  # example 0 kept, every batch-mate replaced
  for mode in range(len(MODES)):
    modes = jnp.full(len(emu.ops), mode, jnp.int32)
    clean = np.asarray(run(params, x, modes))
    poisoned = np.asarray(run(params, with_nan, modes))
    assert np.isnan(poisoned[1]).all(), MODES[mode]
    keep = np.arange(len(x)) != 1
    np.testing.assert_array_equal(poisoned[keep], clean[keep], err_msg=MODES[mode])
    np.testing.assert_array_equal(
        np.asarray(run(params, mates, modes))[0], clean[0], err_msg=MODES[mode]
    )


def test_per_tensor_lets_one_nan_spread_documented():
  apply, params, x = _model("dense")
  emu = Emulator(apply, params, x, activation_scaling="per_tensor")
  out = emu(params, x.at[1].set(jnp.nan), emu.assignment("int8"))
  assert np.isnan(out[0]).all()  # why per token (or per example) is the recommended scaling


@pytest.fixture(scope="module")
def text():
  module = toy_text.TokenEncoder(rngs=nnx.Rngs(0))
  ids, mask = toy_text.example_inputs(batch=4, length=8)
  return module, ids, mask, toy_text.repad(ids, mask)


def _real_outputs(emu, ids, real, modes, **kw):
  return np.asarray(jax.jit(emu)(emu.params, (ids, real), modes, **kw))[real]


def test_padding_changes_nothing_at_the_default_scaling(text):
  module, ids, mask, repadded = text
  emu = Emulator.from_nnx(module, ids, mask)
  assert emu.mask_input == "[1]"  # found the boolean (batch, positions) input
  fp32 = _real_outputs(emu, ids, mask, emu.assignment("fp32"))
  for mode in MODES:
    modes = emu.assignment(mode)
    out = _real_outputs(emu, ids, mask, modes)
    leak = np.max(np.abs(out - _real_outputs(emu, repadded, mask, modes)))
    error = np.max(np.abs(out - fp32))
    assert leak <= 0.1 * error, (mode, leak, error)
    assert leak == 0.0, mode


def test_without_a_mask_dynamic_scales_leak_and_static_scales_do_not(text):
  module, ids, mask, repadded = text
  emu = Emulator.from_nnx(module, ids, mask, padding_mask=None)
  assert emu.mask_input is None
  int8 = emu.assignment("int8")
  leaked = _real_outputs(emu, ids, mask, int8) - _real_outputs(emu, repadded, mask, int8)
  assert np.max(np.abs(leaked)) > 0  # p·v's scale spans the padded keys
  static = emu.calibrate(emu.params, [(ids, mask), (repadded, mask)])
  for mode in MODES:
    modes = emu.assignment(mode)
    a = _real_outputs(emu, ids, mask, modes, activation_amax=static)
    b = _real_outputs(emu, repadded, mask, modes, activation_amax=static)
    np.testing.assert_array_equal(a, b, err_msg=mode)
    explicit = _real_outputs(emu, repadded, mask, modes, mask=mask)
    np.testing.assert_array_equal(
        explicit, _real_outputs(emu, ids, mask, modes, mask=mask), err_msg=mode
    )


def test_masked_amax_reference():
  x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 12.0
  mask = np.array([[True, True, False], [True, False, False]])
  got = padding.masked_amax(jnp.asarray(x), mask, (1, 2))
  ref = [np.abs(x[b][mask[b]]).max() for b in range(2)]
  np.testing.assert_array_equal(np.asarray(got).ravel(), ref)
  assert padding.masked_amax(jnp.ones((3, 5)), mask, (1,)) is None  # batch 3 is not 2


def test_from_nnx_passes_several_arguments_and_keywords(text):
  module, ids, mask, _ = text
  ref = module(ids, mask)
  positional = Emulator.from_nnx(module, ids, mask)
  keyword = Emulator.from_nnx(module, ids, mask=mask)
  # Compiled, so equal to the eager module within float32 rounding (README, "fp32 bit-exact").
  np.testing.assert_allclose(
      positional(positional.params, (ids, mask), positional.assignment("fp32")),
      ref,
      rtol=1e-5,
      atol=1e-6,
  )
  np.testing.assert_allclose(
      keyword(keyword.params, ((ids,), {"mask": mask}), keyword.assignment("fp32")),
      ref,
      rtol=1e-5,
      atol=1e-6,
  )
