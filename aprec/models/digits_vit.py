"""A small flax.nnx vision transformer for the 8x8 digits images.

The image is cut into 2x2 patches (16 tokens of 4 pixels), embedded with a linear
layer plus a learned position embedding, passed through pre-LayerNorm transformer
blocks, mean-pooled over tokens and classified by a linear head. Parameter paths read
like ``blocks/0/attn/query/kernel``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

NAME = "digits_vit"
INPUT_SHAPE = (8, 8, 1)
NUM_CLASSES = 10


def patchify(x: jax.Array, patch_size: int) -> jax.Array:
  """Cuts images ``(..., H, W, C)`` into tokens ``(..., H/p * W/p, p * p * C)``, row-major."""
  *batch, h, w, c = x.shape
  if h % patch_size or w % patch_size:
    raise ValueError(f"Image size {h}x{w} is not a multiple of patch_size={patch_size}.")
  gh, gw = h // patch_size, w // patch_size
  x = x.reshape(*batch, gh, patch_size, gw, patch_size, c)
  x = jnp.moveaxis(x, -4, -3)  # (..., gh, gw, p, p, c)
  return x.reshape(*batch, gh * gw, patch_size * patch_size * c)


class Block(nnx.Module):
  """Pre-LayerNorm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

  def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, rngs: nnx.Rngs):
    self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(
        num_heads=num_heads, in_features=dim, qkv_features=dim, decode=False, rngs=rngs
    )
    self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
    self.mlp_in = nnx.Linear(dim, mlp_dim, rngs=rngs)
    self.mlp_out = nnx.Linear(mlp_dim, dim, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(self.ln1(x))
    return x + self.mlp_out(nnx.gelu(self.mlp_in(self.ln2(x))))


class DigitsViT(nnx.Module):
  """Vision transformer: images ``(..., 8, 8, 1)`` -> logits ``(..., 10)``."""

  def __init__(
      self,
      *,
      rngs: nnx.Rngs,
      patch_size: int = 2,
      dim: int = 32,
      depth: int = 2,
      num_heads: int = 4,
      mlp_dim: int = 64,
      num_classes: int = NUM_CLASSES,
  ):
    self.patch_size = patch_size
    h, w, c = INPUT_SHAPE
    num_tokens = (h // patch_size) * (w // patch_size)
    self.patch_embed = nnx.Linear(patch_size * patch_size * c, dim, rngs=rngs)
    self.pos_embed = nnx.Param(0.02 * jax.random.normal(rngs.params(), (num_tokens, dim)))
    # flax 0.12 refuses plain lists of modules as attributes; nnx.List makes them data.
    self.blocks = nnx.List([Block(dim, num_heads, mlp_dim, rngs=rngs) for _ in range(depth)])
    self.norm = nnx.LayerNorm(dim, rngs=rngs)
    self.head = nnx.Linear(dim, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.patch_embed(patchify(x, self.patch_size))
    # Broadcast explicitly so the model also runs with jax_numpy_rank_promotion="raise".
    x = x + jnp.broadcast_to(self.pos_embed[...], x.shape)
    for block in self.blocks:
      x = block(x)
    return self.head(jnp.mean(self.norm(x), axis=-2))


def _init_state(seed: int) -> nnx.State:
  return nnx.split(DigitsViT(rngs=nnx.Rngs(params=seed)))[1]


def build(
    seed: int = 0, *, abstract: bool = False
) -> tuple[Callable[[nnx.State, jax.Array], jax.Array], nnx.State]:
  """Returns ``(apply_fn, state)``: a pure ``apply_fn(state, x) -> logits`` and the
  freshly initialised ``nnx.State`` (float32 parameters only), or only its shapes and
  dtypes (``jax.ShapeDtypeStruct`` leaves, nothing computed) when ``abstract``."""
  graphdef, abstract_state = nnx.split(
      nnx.eval_shape(lambda: DigitsViT(rngs=nnx.Rngs(params=seed)))
  )
  state = abstract_state if abstract else jax.jit(_init_state, static_argnums=0)(seed)

  def apply_fn(state: nnx.State, x: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state)(x)

  return apply_fn, state
