"""Measured retrieval quality and embedding fidelity of an emulated sentence embedder.

For each assignment the split's texts are embedded in fixed row batches (one compiled shape),
then scored two ways: the task (recall@1, recall@10, MRR of each query's document among the
split's documents) and fidelity to full precision (the mean cosine between each text's
embedding and its fp32 embedding; ``1 - cos`` is what a lower precision costs).

Ranks are exact functions of the embeddings: a document's rank is 1 + the number of
documents scored strictly higher than the true one (ties count in the query's favour),
computed in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aprec.emulator.core import Emulator
from aprec.emulator.formats import mode_index
from aprec.emulator.pak import ActivationScaling


class RetrievalMetrics(NamedTuple):
  """Recall@1, recall@10 and mean reciprocal rank, as fractions in ``[0, 1]``."""

  recall_at_1: float
  recall_at_10: float
  mrr: float


def ranks(queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
  """Rank (1 = best) of document ``i`` for query ``i`` by cosine similarity, float64.

  Example:
    >>> q = np.array([[1.0, 0.0], [0.0, 1.0]]); d = np.array([[0.6, 0.8], [0.0, 1.0]])
    >>> ranks(q, d).tolist()
    [1, 1]
  """
  q = np.asarray(queries, np.float64)
  d = np.asarray(documents, np.float64)
  if q.ndim != 2 or q.shape != d.shape:
    raise ValueError(f"queries {q.shape} and documents {d.shape} must be matching (n, dim) arrays")
  q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
  d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
  scores = q @ d.T
  true = np.diagonal(scores)
  return 1 + np.sum(scores > true[:, None], axis=1)


def metrics_from_ranks(rank: np.ndarray) -> RetrievalMetrics:
  """Recall@1, recall@10 and MRR of an array of ranks."""
  rank = np.asarray(rank)
  if rank.size == 0:
    raise ValueError("no queries to score")
  return RetrievalMetrics(
      recall_at_1=float(np.mean(rank <= 1)),
      recall_at_10=float(np.mean(rank <= 10)),
      mrr=float(np.mean(1.0 / rank)),
  )


def retrieval_metrics(embeddings: np.ndarray, num_pairs: int) -> RetrievalMetrics:
  """Metrics of a split's embeddings: rows ``[0, n)`` are queries, ``[n, 2n)`` their documents.

  Example:
    >>> e = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.2, 0.8]])
    >>> retrieval_metrics(e, 2)
    RetrievalMetrics(recall_at_1=1.0, recall_at_10=1.0, mrr=1.0)
  """
  e = np.asarray(embeddings)
  if e.ndim != 2 or len(e) != 2 * num_pairs:
    raise ValueError(f"embeddings must have shape (2 * {num_pairs}, dim), got {e.shape}")
  return metrics_from_ranks(ranks(e[:num_pairs], e[num_pairs:]))


class RetrievalMeasured(NamedTuple):
  """One assignment's task metrics and its mean cosine to the fp32 embeddings."""

  recall_at_1: float
  recall_at_10: float
  mrr: float
  mean_cosine: float


class RetrievalEvaluator:
  """Scores assignments of an emulated embedder ``apply_fn(params, (ids, mask))`` on a split.

  Args:
    apply_fn, params: the embedder (e.g. ``aprec.models.load("minilm_l6")``).
    split: inputs ``x = (ids, mask)`` of ``2 N`` texts, the ``N`` queries then their ``N``
      documents in the same order, and ``num_pairs = N`` (``aprec.models.docstrings.TextSplit``).
    batch_rows: texts per compiled call; the last batch is padded with copies of the last
      text. Under per-tensor activation scaling a scale spans a batch, so results depend on
      ``batch_rows`` (fixed here, so they are reproducible).
    activation_scaling: passed to the ``Emulator``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from aprec.models import docstrings
    >>> def embed(w, inputs):  # a toy embedder: lookup, one product, masked mean, unit norm
    ...   ids, mask = inputs
    ...   h = jnp.take(w["table"], ids, axis=0) @ w["proj"]
    ...   m = mask[..., None].astype(h.dtype)
    ...   pooled = (h * m).sum(-2) / m.sum(-2)
    ...   return pooled / jnp.linalg.norm(pooled, axis=-1, keepdims=True)
    >>> k1, k2 = jax.random.split(jax.random.key(0))
    >>> w = {"table": jax.random.normal(k1, (30522, 16)), "proj": jax.random.normal(k2, (16, 16))}
    >>> few = docstrings.make_split(docstrings.load_pairs()[:4])
    >>> ev = RetrievalEvaluator(embed, w, few, batch_rows=8)
    >>> r = ev.measure(ev.emulator.assignment("int4"))
    >>> bool(r.mean_cosine < 1.0), 0.0 <= r.mrr <= 1.0
    (True, True)
  """

  def __init__(
      self,
      apply_fn: Callable,
      params: Any,
      split: Any,
      *,
      batch_rows: int = 128,
      activation_scaling: ActivationScaling = ActivationScaling.PER_TENSOR,
  ):
    if batch_rows <= 0:
      raise ValueError(f"batch_rows must be positive, got {batch_rows}")
    if split.num_pairs == 0:
      raise ValueError("cannot evaluate on an empty split")
    self.params, self.split, self.batch_rows = params, split, batch_rows
    ids, mask = split.x
    n_rows = len(ids)
    padded = -(-n_rows // batch_rows) * batch_rows
    pad = lambda a: np.concatenate([a, np.repeat(a[-1:], padded - n_rows, 0)])
    ids, mask = pad(ids), pad(mask)
    self._batches = [
        (jnp.asarray(ids[i : i + batch_rows]), jnp.asarray(mask[i : i + batch_rows]))
        for i in range(0, padded, batch_rows)
    ]
    self.emulator = Emulator(
        apply_fn, params, self._batches[0], activation_scaling=activation_scaling
    )
    self._embed = jax.jit(self.emulator)
    self._reference: np.ndarray | None = None

  def embeddings(self, modes: Any) -> np.ndarray:
    """The split's embeddings ``(2 N, dim)`` float32 under one assignment."""
    modes = self.emulator.check_modes(modes)
    out = [np.asarray(self._embed(self.params, batch, modes)) for batch in self._batches]
    return np.concatenate(out)[: 2 * self.split.num_pairs]

  def reference(self) -> np.ndarray:
    """The fp32 embeddings (computed once)."""
    if self._reference is None:
      self._reference = self.embeddings(self.emulator.assignment("fp32"))
    return self._reference

  def measure(self, modes: Any) -> RetrievalMeasured:
    """Task metrics and mean cosine to fp32 of one assignment ``(n_ops,)``, or of each row
    of a stack ``(n, n_ops)`` (then every field is an ``(n,)`` array)."""
    if np.ndim(modes) == 2:
      each = [self.measure(row) for row in np.asarray(modes)]
      return RetrievalMeasured(*(np.array(column, np.float64) for column in zip(*each)))
    modes = self.emulator.check_modes(modes)
    e = self.embeddings(modes)
    if self._reference is None and not np.any(np.asarray(modes) != mode_index("fp32")):
      self._reference = e  # this was the fp32 pass; do not run it twice
    ref = self.reference()
    e64, ref64 = e.astype(np.float64), ref.astype(np.float64)
    norms = np.linalg.norm(e64, axis=-1) * np.linalg.norm(ref64, axis=-1)
    cos = np.sum(e64 * ref64, -1) / np.maximum(norms, 1e-12)
    task = retrieval_metrics(e, self.split.num_pairs)
    return RetrievalMeasured(*task, mean_cosine=float(np.mean(cos)))
