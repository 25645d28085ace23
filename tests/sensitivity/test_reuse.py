import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aprec import Emulator
from aprec.emulator.segments import NotSegmentable, Segments
from aprec.sensitivity import measured, reuse
from aprec.sensitivity.objective import cosine_distance


class Block(nn.Module):
  """A residual block: a weight, then a mix over the unmasked positions (a weightless op
  whose dynamic range spans positions, so the padding mask matters)."""

  @nn.compact
  def __call__(self, x, key_bias):
    h = nn.Dense(4)(x)
    weights = jax.nn.softmax(jnp.tanh(x.sum(-1))[:, None, :] + key_bias, axis=-1)
    return x + jnp.tanh(jnp.einsum("bts,bsd->btd", weights, h))


class Stack(nn.Module):
  """Two identical blocks over padded sequences, mean-pooled to an embedding."""

  @nn.compact
  def __call__(self, inputs):
    x, mask = inputs
    key_bias = jnp.where(mask, 0.0, -1e9)[:, None, :]
    for _ in range(2):
      x = Block()(x, key_bias)
    return (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def stack():
  x = jax.random.normal(jax.random.key(0), (2, 3, 5, 4))  # 2 batches of 3 sequences of 5
  mask = np.arange(5)[None, None, :] < np.array([[5, 3, 2], [4, 5, 1]])[..., None]
  xs = (np.asarray(x), mask)
  model = Stack()
  params = model.init(jax.random.key(1), (x[0], mask[0]))
  apply = jax.jit(model.apply)
  ts = np.stack([np.asarray(apply(params, (x[b], mask[b]))) for b in range(2)])
  emu = Emulator(model.apply, params, (x[0], mask[0]))
  return emu, params, xs, ts


def test_reuse_sweep_equals_the_plain_sweep(stack):
  emu, params, xs, ts = stack
  assert emu.mask_input is not None  # the boolean mask is found: masked dynamic ranges
  plain = measured.perturbation(emu, params, xs, ts, loss_fn=cosine_distance)
  reused = reuse.perturbation(emu, params, xs, ts, loss_fn=cosine_distance)  # 4 groups
  scale = np.abs(plain.delta_loss).max()
  assert scale > 1e-3  # the table is not trivially zero
  np.testing.assert_allclose(reused.delta_loss, plain.delta_loss, rtol=0, atol=1e-6 * scale)
  np.testing.assert_allclose(reused.stderr, plain.stderr, rtol=0, atol=1e-6 * scale)


def test_identical_blocks_share_one_segment_and_the_default_cuts_finer(stack):
  emu, _, xs, _ = stack
  first = jax.tree.map(lambda a: a[0], xs)
  by_block = Segments(emu, first, n_groups=2)
  assert [g.n_ops for g in by_block.groups] == [2, 2]
  assert len({g.segment.key for g in by_block.groups}) == 1  # one compiled switch block
  default = Segments(emu, first)
  assert len(default.groups) == 4 and len({g.segment.key for g in default.groups}) == 2
  with pytest.raises(ValueError, match="divisor of the 4 ops"):
    Segments(emu, first, n_groups=3)


def test_a_scanned_model_is_not_segmentable():
  class Scanned(nn.Module):

    @nn.compact
    def __call__(self, x):
      body = nn.scan(
          lambda mdl, c, _: (nn.Dense(3)(c), None),
          variable_axes={"params": 0},
          split_rngs={"params": True},
          length=2,
      )
      return body(self, x, None)[0]

  x = jnp.ones((2, 3))
  model = Scanned()
  params = model.init(jax.random.key(0), x)
  with pytest.raises(NotSegmentable, match="scan"):
    Segments(Emulator(model.apply, params, x), x)
