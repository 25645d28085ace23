"""A small flax.linen CNN for the 8x8 digits images."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

NAME = "digits_cnn"
INPUT_SHAPE = (8, 8, 1)
NUM_CLASSES = 10


class DigitsCNN(nn.Module):
  """Conv(16, 3x3) -> relu -> Conv(32, 3x3) -> relu -> avg_pool 2x2 -> flatten
  -> Dense(64) -> relu -> Dense(10), with default names Conv_0, Conv_1, Dense_0, Dense_1.

  Takes images of shape ``(..., 8, 8, 1)`` (any number of leading batch dimensions,
  including none) and returns logits of shape ``(..., 10)``.
  """

  conv_features: tuple[int, int] = (16, 32)
  hidden_features: int = 64
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for features in self.conv_features:
      x = nn.relu(nn.Conv(features, kernel_size=(3, 3), padding="SAME")(x))
    # nn.avg_pool divides by an integer count, which strict dtype promotion rejects;
    # summing and scaling by 1/4 (exact, a power of two) gives the same values.
    x = nn.pool(x, 0.0, jax.lax.add, window_shape=(2, 2), strides=(2, 2), padding="VALID") * 0.25
    x = x.reshape(x.shape[:-3] + (-1,))
    x = nn.relu(nn.Dense(self.hidden_features)(x))
    return nn.Dense(self.num_classes)(x)


def build(
    seed: int = 0, *, abstract: bool = False
) -> tuple[Callable[[Any, jax.Array], jax.Array], dict[str, Any]]:
  """Returns ``(apply_fn, variables)``: a pure ``apply_fn(variables, x) -> logits`` and
  freshly initialised variables ``{"params": ...}`` (float32), or only their shapes and
  dtypes (``jax.ShapeDtypeStruct`` leaves, nothing computed) when ``abstract``."""
  module = DigitsCNN()

  def init(key: jax.Array) -> dict[str, Any]:
    return {"params": module.init(key, jnp.zeros((1, *INPUT_SHAPE), jnp.float32))["params"]}

  key = jax.random.key(seed)
  variables = jax.eval_shape(init, key) if abstract else jax.jit(init)(key)

  def apply_fn(variables: Any, x: jax.Array) -> jax.Array:
    return module.apply(variables, x)

  return apply_fn, variables
