"""Gradient statistics gathered inside the user's own train (or eval) step.

The tracker is a pytree of running means — of the gradient ``g``, of ``g²`` and of ``g⁴``,
elementwise over the parameters — updated by a pure function you call in your step::

  state = tracker.init(params)
  @jax.jit
  def train_step(params, opt_state, track, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    track = tracker.update(track, grads, batch_size=x.shape[0])
    ...
    return params, opt_state, track

``estimate`` turns the statistics into a Δloss table with the diagonal empirical Fisher:
for a weight ``W`` quantized to ``Q(W)``, ``Δloss ≈ ½ Σ_j F_jj (Q(W)_j - W_j)²`` where
``F_jj ≈ B · E[g_j²]`` (the mean of squared mini-batch gradients times the batch size
estimates the per-example Fisher). Only weights are seen, so ops without a weight get no
estimate here (``sensitivity.analyze`` fills them with the ``fisher`` method).

Example:
  >>> import jax.numpy as jnp
  >>> s = init({"w": jnp.zeros(2)})
  >>> s = update(s, {"w": jnp.array([1.0, -2.0])}, batch_size=4)
  >>> s = update(s, {"w": jnp.array([3.0, 0.0])}, batch_size=4)
  >>> statistics(s).mean_sq["w"].tolist(), int(s.steps), float(s.examples)
  ([5.0, 2.0], 2, 8.0)
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aprec.emulator.core import Emulator
from aprec.emulator.formats import N_MODES
from aprec.typing import PyTree


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrackerState:
  """Running gradient statistics (a pytree; pass it through ``jit`` and ``scan``).

  Attributes:
    steps: number of updates (int32 scalar).
    examples: examples seen, the sum of ``batch_size`` over updates (float32 scalar).
    mean, mean_sq, mean_fourth: running means of ``g``, ``g²``, ``g⁴``, like the params.
  """

  steps: jax.Array
  examples: jax.Array
  mean: PyTree
  mean_sq: PyTree
  mean_fourth: PyTree


class GradientStatistics(NamedTuple):
  """Per-parameter mean, mean square and variance of the tracked gradients."""

  mean: PyTree
  mean_sq: PyTree
  variance: PyTree


def init(params: PyTree) -> TrackerState:
  """An empty tracker for gradients shaped like ``params`` (float32 statistics)."""
  zeros = lambda: jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)
  return TrackerState(
      steps=jnp.zeros((), jnp.int32),
      examples=jnp.zeros((), jnp.float32),
      mean=zeros(),
      mean_sq=zeros(),
      mean_fourth=zeros(),
  )


def update(state: TrackerState, grads: PyTree, batch_size: int | jax.Array = 1) -> TrackerState:
  """Adds one step's gradients (a pytree like the params). Pure and jit-friendly."""
  want, got = jax.tree.structure(state.mean), jax.tree.structure(grads)
  if want != got:
    raise ValueError(
        f"grads do not have the structure of the tracked params:\n  tracked "
        f"{want}\n  got     {got}\ninitialise the tracker with tracker.init(params)"
    )
  for g, m in zip(jax.tree.leaves(grads), jax.tree.leaves(state.mean)):
    if jnp.shape(g) != m.shape:
      raise ValueError(
          f"a gradient has shape {jnp.shape(g)} where the tracked parameter has "
          f"{m.shape}; pass the gradients of the params given to tracker.init"
      )
  steps = state.steps + 1
  rate = 1.0 / steps.astype(jnp.float32)

  def running(avg, g, power):
    return avg + (jnp.asarray(g, jnp.float32) ** power - avg) * rate

  return TrackerState(
      steps=steps,
      examples=state.examples + jnp.asarray(batch_size, jnp.float32),
      mean=jax.tree.map(lambda a, g: running(a, g, 1), state.mean, grads),
      mean_sq=jax.tree.map(lambda a, g: running(a, g, 2), state.mean_sq, grads),
      mean_fourth=jax.tree.map(lambda a, g: running(a, g, 4), state.mean_fourth, grads),
  )


def statistics(state: TrackerState) -> GradientStatistics:
  """The tracked mean, mean square and (population) variance of every gradient element."""
  var = jax.tree.map(lambda m, s: jnp.maximum(s - m * m, 0.0), state.mean, state.mean_sq)
  return GradientStatistics(state.mean, state.mean_sq, var)


def _leaf(tree: PyTree, path: tuple) -> jax.Array:
  for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if p == path:
      return leaf
  raise KeyError(path)


def estimate(
    state: TrackerState, emulator: Emulator, params: PyTree, inputs: Any
) -> tuple[np.ndarray, np.ndarray, tuple[bool, ...]]:
  """Δloss and standard error per (op, mode) from the tracked statistics.

  Args:
    state: a tracker updated at least twice.
    emulator: the model's emulator (its op table and the PAK's weight scales).
    params: the parameters the statistics belong to.
    inputs: one example batch (only used to locate each op's weight).

  Returns:
    ``(delta_loss, stderr, covered)``; rows of ops whose weight has no tracked gradient
    (no weight, or a transposed view of one) are NaN and ``covered[i]`` is False.
    The error treats gradient elements as independent:
    ``½ B sqrt(Σ_j c_j² Var(g_j²) / steps)`` with ``c = (Q(W)-W)²``.
  """
  from aprec.sensitivity import probes

  steps = int(state.steps)
  if steps < 2:
    raise ValueError(
        f"the tracker has {steps} update(s); call tracker.update in at least two "
        "steps before turning it into a profile"
    )
  batch = float(state.examples) / steps
  found = jax.jit(lambda p, x: probes.weight_errors(emulator, p, x))(params, inputs)
  paths = probes.match_weight_leaves(emulator, params, [f and f[0] for f in found])
  n_ops = len(emulator.ops)
  mean = np.full((n_ops, N_MODES), np.nan)
  err = np.full((n_ops, N_MODES), np.nan)
  for i, (f, path) in enumerate(zip(found, paths)):
    if path is None:
      continue
    dw2 = np.square(np.asarray(f[1], np.float64)).reshape(N_MODES, -1)
    g2 = np.asarray(_leaf(state.mean_sq, path), np.float64).ravel()
    g4 = np.asarray(_leaf(state.mean_fourth, path), np.float64).ravel()
    mean[i] = 0.5 * batch * dw2 @ g2
    err[i] = 0.5 * batch * np.sqrt(np.square(dw2) @ np.maximum(g4 - g2 * g2, 0.0) / steps)
  return mean, err, tuple(p is not None for p in paths)
