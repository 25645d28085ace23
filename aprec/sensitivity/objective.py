"""What a sensitivity's Δloss measures: KL to the fp32 model's predictions, or label CE.

Label cross-entropy on a few hundred examples is dominated by per-example sign flips of
the first-order term, so single-op Δloss rankings drown in noise. The default, ``kl``, is
cross-entropy against the fp32 model's own predicted distribution: its increase over the
fp32 value is KL(p_fp32 ‖ p_mode), never negative and needing no labels.
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


@dataclasses.dataclass(frozen=True)
class Objective:
  """What Δloss measures.

  Attributes:
    name: ``"kl"``, ``"ce"`` or ``"custom"``.
    loss_fn: ``loss_fn(outputs, targets) -> scalar`` on the targets of ``targets``.
    sample_labels: gradient methods draw integer labels from the targets (probabilities)
      and use ``cross_entropy``.
  """

  name: str
  loss_fn: LossFn
  sample_labels: bool

  def targets(self, apply_fn: Callable, params: Any, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The loss targets of every batch: the fp32 model's probabilities for ``kl``.

    Raises:
      ValueError: ``kl`` on a model without class logits (e.g. one output, a regression):
        the softmax of one value is always 1, so every Δloss would be 0.
    """
    if self.name != "kl":
      return ys
    shape = jax.eval_shape(lambda x: apply_fn(params, x), inputs_lib.take(xs, 0))
    shape = getattr(shape, "shape", None)
    if shape is None or len(shape) < 2 or shape[-1] < 2:
      raise ValueError(
          f"loss='kl' compares predicted class distributions, but the model's outputs have "
          f"shape {shape} (not (..., n_classes >= 2): a regression model?), so every Δloss "
          "would be 0; pass a loss: loss_fn=your_loss(outputs, targets) (e.g. mean squared "
          "error), or loss='ce' for class logits with integer labels"
      )
    probs = jax.jit(lambda x: jax.nn.softmax(apply_fn(params, x).astype(jnp.float32)))
    count = inputs_lib.batch_size(xs)
    return np.stack([np.asarray(probs(inputs_lib.take(xs, b))) for b in range(count)])


LOSSES: dict[str, Objective] = {
    "kl": Objective("kl", soft_cross_entropy, True),
    "ce": Objective("ce", cross_entropy, False),
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
