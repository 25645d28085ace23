"""What a sensitivity's Δloss measures: KL to the fp32 model's predictions, label CE, or
the cosine distance of an embedding model's outputs to its fp32 embeddings.

Label cross-entropy on a few hundred examples is dominated by per-example sign flips of
the first-order term, so single-op Δloss rankings drown in noise. The default, ``kl``, is
cross-entropy against the fp32 model's own predicted distribution: its increase over the
fp32 value is KL(p_fp32 ‖ p_mode), never negative and needing no labels.

For an embedding model (a sentence embedder such as ``minilm_l6``) there are no classes:
``cosine`` measures ``1 - cos(e_mode, e_fp32)`` of each example's output vector against
its fp32 output, averaged over the examples (``cosine_distance``). It is 0 at fp32, never
negative, label-free, and it is what the embeddings' users see: retrieval ranks documents by
cosine similarity, so a text whose embedding keeps its direction keeps its neighbours. Like
``kl`` it has no first-order term at fp32 (1 - cos is minimal there), so of the gradient
methods only ``hessian`` (second order) estimates it; ``perturbation`` measures it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aprec.emulator import inputs as inputs_lib
from aprec.typing import LossFn

DEFAULT_LOSS = "kl"

__all__ = [
    "DEFAULT_LOSS",
    "LOSSES",
    "LossFn",
    "Objective",
    "cosine_distance",
    "cross_entropy",
    "objective",
    "soft_cross_entropy",
]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean cross-entropy of ``logits`` (..., classes) against integer ``labels`` (in float32).

  Example:
    >>> import jax.numpy as jnp
    >>> round(float(cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3]))), 6)  # log 4
    1.386294
  """
  return jnp.mean(
      optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  )


def soft_cross_entropy(logits: jax.Array, probs: jax.Array) -> jax.Array:
  """Mean cross-entropy against target distributions ``probs`` (..., classes).

  Against the fp32 model's own ``probs``, its increase over the fp32 value is the KL.
  """
  return jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32), probs))


def cosine_distance(outputs: jax.Array, reference: jax.Array) -> jax.Array:
  """Mean over examples of ``1 - cos`` between each output vector (last axis) and its
  reference (in float32): the Δloss of an embedding model against its fp32 embeddings.

  Computed as ``½ ‖a/‖a‖ - b/‖b‖‖²``, which equals ``1 - cos`` but keeps its relative
  precision down to the smallest distances (``1 - cos`` itself cancels: in float32 it
  cannot resolve values below ~1e-7, where bf16 and fp16 ops lie).

  Example:
    >>> import jax.numpy as jnp
    >>> e = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    >>> round(float(cosine_distance(jnp.array([[1.0, 1.0], [0.0, 1.0]]), e)), 6)  # (1-√½)/2
    0.146447
  """
  tiny = jnp.finfo(jnp.float32).tiny
  unit = lambda v: v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), tiny)
  difference = unit(outputs.astype(jnp.float32)) - unit(reference.astype(jnp.float32))
  return jnp.mean(0.5 * jnp.sum(difference * difference, axis=-1))


def _class_probabilities(outputs: jax.Array) -> jax.Array:
  return jax.nn.softmax(outputs.astype(jnp.float32))


def _embeddings(outputs: jax.Array) -> jax.Array:
  return outputs.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Objective:
  """What Δloss measures.

  Attributes:
    name: ``"kl"``, ``"ce"`` or ``"custom"``.
    loss_fn: ``loss_fn(outputs, targets) -> scalar`` on the targets of ``targets``.
    sample_labels: gradient methods draw integer labels from the targets (probabilities)
      and use ``cross_entropy``.
    reference: the targets as a function of the fp32 model's outputs (``kl``: its class
      probabilities; ``cosine``: its embeddings), or None to use the batches' own targets.
  """

  name: str
  loss_fn: LossFn
  sample_labels: bool
  reference: Callable[[jax.Array], jax.Array] | None = None

  def targets(self, apply_fn: Callable, params: Any, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The loss targets of every batch: ``reference`` of the fp32 outputs (``kl``: class
    probabilities; ``cosine``: embeddings), else the batches' own ``ys``.

    Raises:
      ValueError: ``kl`` or ``cosine`` on a model whose outputs are not ``(..., n >= 2)``
        vectors (one output, a regression): every Δloss would be 0.
    """
    if self.reference is None:
      return ys
    shape = jax.eval_shape(lambda x: apply_fn(params, x), inputs_lib.take(xs, 0))
    shape = getattr(shape, "shape", None)
    if shape is None or len(shape) < 2 or shape[-1] < 2:
      what = "class distributions" if self.name == "kl" else "output vectors' directions"
      raise ValueError(
          f"loss={self.name!r} compares {what}, but the model's outputs have "
          f"shape {shape} (not (..., n >= 2): a regression model?), so every Δloss "
          "would be 0; pass a loss: loss_fn=your_loss(outputs, targets) (e.g. mean squared "
          "error), or loss='ce' for class logits with integer labels"
      )
    reference = jax.jit(lambda x: self.reference(apply_fn(params, x)))
    count = inputs_lib.batch_size(xs)
    return np.stack([np.asarray(reference(inputs_lib.take(xs, b))) for b in range(count)])


LOSSES: dict[str, Objective] = {
    "kl": Objective("kl", soft_cross_entropy, True, _class_probabilities),
    "ce": Objective("ce", cross_entropy, False),
    "cosine": Objective("cosine", cosine_distance, False, _embeddings),
}
"""The registry of named objectives."""


def objective(loss: str = DEFAULT_LOSS, loss_fn: LossFn | None = None) -> Objective:
  """The objective named ``loss`` in ``LOSSES``, or a custom ``loss_fn`` (then ``"custom"``).

  Example:
    >>> objective("ce").sample_labels, objective(loss_fn=lambda y, t: 0.0).name
    (False, 'custom')
  """
  if loss_fn is not None:
    return Objective("custom", loss_fn, False)
  if loss in LOSSES:
    return LOSSES[loss]
  raise ValueError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)} or pass loss_fn")
