"""A tiny token encoder taking ``(ids, mask)``: the sequence model of tests and benchmarks.

One pre-norm transformer block (masked self-attention, MLP) over token embeddings with a
per-token classification head, randomly initialised (nothing to download or train). It has
what padding-safety needs checking on: two inputs, padded positions, and attention's
weightless products ``q·kᵀ`` and ``p·v``.

Example:
  >>> ids, mask = example_inputs(batch=2, length=6)
  >>> model = TokenEncoder(rngs=nnx.Rngs(0))
  >>> model(ids, mask).shape
  (2, 6, 4)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

VOCAB = 64


class TokenEncoder(nnx.Module):
  """``(ids [B, T] int32, mask [B, T] bool) -> logits``: per token ``[B, T, classes]``, or
  with ``pooled=True`` per example ``[B, classes]`` (the mean over real positions)."""

  def __init__(
      self,
      *,
      vocab: int = VOCAB,
      features: int = 16,
      heads: int = 2,
      classes: int = 4,
      max_length: int = 32,
      pooled: bool = False,
      rngs: nnx.Rngs,
  ):
    self.pooled = pooled
    self.embed = nnx.Embed(vocab, features, rngs=rngs)
    self.position = nnx.Param(0.1 * jax.random.normal(rngs.params(), (max_length, features)))
    self.norm_attn = nnx.LayerNorm(features, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(
        num_heads=heads, in_features=features, decode=False, rngs=rngs
    )
    self.norm_mlp = nnx.LayerNorm(features, rngs=rngs)
    self.up = nnx.Linear(features, 2 * features, rngs=rngs)
    self.down = nnx.Linear(2 * features, features, rngs=rngs)
    self.head = nnx.Linear(features, classes, rngs=rngs)

  def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
    x = self.embed(ids) + self.position[...][None, : ids.shape[1]]
    attend = nnx.make_attention_mask(mask, mask)  # a padded key gets weight exactly 0
    x = x + self.attn(self.norm_attn(x), mask=attend)
    x = x + self.down(jax.nn.gelu(self.up(self.norm_mlp(x))))
    if self.pooled:
      real = mask[..., None].astype(x.dtype)
      x = jnp.sum(x * real, 1) / jnp.maximum(jnp.sum(real, 1), 1.0)
    return self.head(x)


def example_inputs(
    batch: int = 4, length: int = 12, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """Random ids with each row's last ``0..length/2`` positions padded (id 0, mask False)."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, VOCAB, (batch, length)).astype(np.int32)
  real = length - rng.integers(0, length // 2 + 1, batch)
  mask = np.arange(length)[None, :] < real[:, None]
  return np.where(mask, ids, 0).astype(np.int32), mask


def repad(ids: np.ndarray, mask: np.ndarray, *, seed: int = 1) -> np.ndarray:
  """``ids`` with every padded position replaced by a random id (real positions kept)."""
  rng = np.random.default_rng(seed)
  return np.where(mask, ids, rng.integers(1, VOCAB, ids.shape)).astype(np.int32)


def labels(ids: np.ndarray) -> np.ndarray:
  """A fixed per-token target (``id mod 4``), for losses in tests."""
  return (jnp.asarray(ids) % 4).astype(jnp.int32)
