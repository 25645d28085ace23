"""Loss and accuracy of a classifier ``apply_fn(params, x) -> logits`` on a data split."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aprec.models import data as data_lib
from aprec.typing import ApplyFn

EVAL_BATCH_SIZE = 512


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of integer ``labels`` under ``logits`` (..., classes)."""
  return jnp.mean(
      optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  )


def evaluate(
    apply_fn: ApplyFn,
    params: Any,
    split: data_lib.Split,
    batch_size: int = EVAL_BATCH_SIZE,
) -> tuple[float, float]:
  """Returns ``(mean cross-entropy, accuracy)`` of the model on ``split``, in float32.

  The batches are fixed (split order, ``batch_size``), so the result is reproducible.
  """
  if len(split.y) == 0:
    raise ValueError("Cannot evaluate on an empty split.")

  @jax.jit
  def sums(params: Any, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    logits = apply_fn(params, x).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.sum(loss), jnp.sum(jnp.argmax(logits, axis=-1) == y)

  loss_sum, correct = 0.0, 0
  for x, y in data_lib.batches(split, batch_size):
    batch_loss, batch_correct = sums(params, x, y)
    loss_sum += float(batch_loss)
    correct += int(batch_correct)
  n = len(split.y)
  return loss_sum / n, correct / n


def accuracy(
    apply_fn: ApplyFn,
    params: Any,
    split: data_lib.Split,
    batch_size: int = EVAL_BATCH_SIZE,
) -> float:
  """Fraction of ``split`` whose arg-max logit is the label."""
  return evaluate(apply_fn, params, split, batch_size)[1]


def predictions(
    apply_fn: ApplyFn,
    params: Any,
    split: data_lib.Split,
    batch_size: int = EVAL_BATCH_SIZE,
) -> np.ndarray:
  """Arg-max class of each example of ``split``, as an int32 numpy array."""
  fn = jax.jit(lambda p, x: jnp.argmax(apply_fn(p, x), axis=-1))
  return np.concatenate(
      [np.asarray(fn(params, x), np.int32) for x, _ in data_lib.batches(split, batch_size)]
  )
