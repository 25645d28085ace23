"""Tiny linen models: a conv net with a weightless matmul, and an (ids, mask) encoder."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


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


class TinyEncoder(nn.Module):
  """``(ids, mask)`` → embed → masked one-head attention → MLP → masked mean → Dense."""

  @nn.compact
  def __call__(self, inputs):
    ids, mask = inputs
    x = nn.Embed(11, 8, name="embed")(ids)
    q, k, v = (nn.Dense(8, name=n)(x) for n in ("query", "key", "value"))
    scores = jnp.einsum("bqd,bkd->bqk", q, k) + jnp.where(mask, 0.0, -1e9)[:, None, :]
    x = x + nn.Dense(8, name="out")(jnp.einsum("bqk,bkd->bqd", jax.nn.softmax(scores), v))
    x = x + nn.Dense(8, name="mlp")(nn.gelu(x))
    pooled = jnp.sum(x * mask[..., None], 1) / jnp.maximum(jnp.sum(mask, 1, keepdims=True), 1)
    return nn.Dense(3, name="head")(pooled)


def tiny_encoder(batch: int = 4, length: int = 6, seed: int = 0):
  """``(module, params, (ids, mask))``: int32 ids, a bool mask with 1..length real positions
  per row, and large ids at the padded positions (the padding differs from real tokens)."""
  module = TinyEncoder()
  rng = np.random.default_rng(seed)
  real = np.arange(length)[None, :] < rng.integers(1, length + 1, (batch, 1))
  ids = np.where(real, rng.integers(0, 5, (batch, length)), 10).astype(np.int32)
  inputs = (jnp.asarray(ids), jnp.asarray(real))
  return module, module.init(jax.random.key(seed), inputs), inputs
