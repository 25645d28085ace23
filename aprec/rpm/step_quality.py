"""Measured per-step quality of a retrieval embedder in the closed loop.

Step ``t`` of an episode runs held-out batch ``t % n_batches`` in the assignment the policy
chose. A batch is ``pairs_per_batch`` query/document pairs of a split (``TextSplit``: the
``N`` queries, then their ``N`` documents); its quality is the task metric of those queries
ranked against the batch's documents (MRR by default, or recall@1), measured by running the
emulator on the batch's texts, never predicted from a profile. Each distinct
(assignment, batch) is embedded once and the metric reused (``cache``).

Example:
  >>> import jax, jax.numpy as jnp, numpy as np
  >>> from aprec.models import docstrings
  >>> def embed(w, inputs):  # a toy embedder: lookup, one product, masked mean
  ...   ids, mask = inputs
  ...   h = jnp.take(w["table"], ids, axis=0) @ w["proj"]
  ...   m = mask[..., None].astype(h.dtype)
  ...   return (h * m).sum(-2) / m.sum(-2)
  >>> k1, k2 = jax.random.split(jax.random.key(0))
  >>> w = {"table": jax.random.normal(k1, (30522, 8)), "proj": jax.random.normal(k2, (8, 8))}
  >>> split = docstrings.make_split(docstrings.load_pairs()[:8])
  >>> q = StepQuality(embed, w, split, pairs_per_batch=4)
  >>> fp32 = np.zeros((3, len(q.emulator.ops)), np.int32)
  >>> q.per_step(fp32).shape, q.n_batches, q.evaluations
  ((3,), 2, 2)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aprec.emulator.core import Emulator
from aprec.emulator.retrieval_scoring import retrieval_metrics

METRICS = ("mrr", "recall_at_1")


class StepQuality:
  """Per-step task metric of an emulated embedder on a split's batches (module doc).

  Args:
    apply_fn, params: the embedder ``apply_fn(params, (ids, mask))``.
    split: a ``TextSplit`` (held-out: the test split).
    pairs_per_batch: pairs per step batch (the split's pairs must divide into them).
    metric: ``"mrr"`` or ``"recall_at_1"``.
    emulator_options: passed to the ``Emulator``.
  """

  def __init__(
      self,
      apply_fn: Callable,
      params: Any,
      split: Any,
      *,
      pairs_per_batch: int = 64,
      metric: str = "mrr",
      **emulator_options: Any,
  ):
    if metric not in METRICS:
      raise ValueError(f"metric {metric!r}; use one of {', '.join(METRICS)}")
    n = split.num_pairs
    if pairs_per_batch <= 0 or n % pairs_per_batch:
      raise ValueError(
          f"pairs_per_batch = {pairs_per_batch} must be positive and divide the split's "
          f"{n} pairs"
      )
    self.metric, self.params, self.pairs_per_batch = metric, params, pairs_per_batch
    ids, mask = split.x
    self.batches = []
    for b in range(n // pairs_per_batch):
      rows = np.r_[b * pairs_per_batch : (b + 1) * pairs_per_batch]
      rows = np.concatenate([rows, n + rows])
      self.batches.append((jnp.asarray(ids[rows]), jnp.asarray(mask[rows])))
    self.emulator = Emulator(apply_fn, params, self.batches[0], **emulator_options)
    self._embed = jax.jit(self.emulator)
    self.cache: dict[tuple[bytes, int], float] = {}

  @property
  def n_batches(self) -> int:
    return len(self.batches)

  @property
  def evaluations(self) -> int:
    """Distinct (assignment, batch) pairs embedded so far."""
    return len(self.cache)

  def measure(self, modes: np.ndarray, batch: int) -> float:
    """The metric of one assignment on one batch (cached)."""
    modes = np.asarray(modes, np.int32)
    key = (modes.tobytes(), int(batch))
    if key not in self.cache:
      e = np.asarray(self._embed(self.params, self.batches[batch], jnp.asarray(modes)))
      self.cache[key] = float(getattr(retrieval_metrics(e, self.pairs_per_batch), self.metric))
    return self.cache[key]

  def per_step(self, assignments: np.ndarray, first_step: int = 0) -> np.ndarray:
    """``[T]`` the metric of every step: step ``t`` runs batch ``(first_step + t) % n``."""
    a = np.asarray(assignments, np.int32)
    return np.array([self.measure(a[t], (first_step + t) % self.n_batches) for t in range(len(a))])

  def table(self, candidates: np.ndarray) -> np.ndarray:
    """``[K, n_batches]`` the metric of every candidate on every batch."""
    return np.array([[self.measure(c, b) for b in range(self.n_batches)] for c in candidates])
