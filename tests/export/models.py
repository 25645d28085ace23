"""A tiny linen model with a conv, a weightless matmul between activations and dense layers."""

import flax.linen as nn
import jax
import jax.numpy as jnp


class Tiny(nn.Module):
  """Conv → relu → Dense → per-example h·hᵀ (no weight) → Dense."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
    h = nn.Dense(8, name="embed")(x.reshape(x.shape[0], -1)).reshape(x.shape[0], 2, 4)
    s = jnp.einsum("bik,bjk->bij", h, h)
    return nn.Dense(3, name="head")(s.reshape(x.shape[0], -1))


def tiny(batch: int = 5, seed: int = 0):
  """``(module, params, x)`` with random inputs of shape ``(batch, 6, 6, 1)``."""
  module = Tiny()
  x = jax.random.normal(jax.random.key(seed + 1), (batch, 6, 6, 1), jnp.float32)
  return module, module.init(jax.random.key(seed), x), x
