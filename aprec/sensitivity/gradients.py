"""Gradient sensitivities: ``taylor`` and ``fisher`` from one gradient pass, ``hessian``
(HAWQ-V2 with Hutchinson traces) and ``tracked`` (gradient statistics from training).

See ``aprec.sensitivity.methods`` for what each estimates.

Example:
  >>> import jax, jax.numpy as jnp
  >>> draw_labels(jax.random.key(0), jnp.array([[0.0, 1.0], [1.0, 0.0]]), 3).tolist()
  [[1, 0], [1, 0], [1, 0]]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aprec.emulator import inputs as inputs_lib
from aprec.emulator.core import Emulator
from aprec.sensitivity import probes
from aprec.sensitivity import tracker as tracker_lib
from aprec.sensitivity.measured import mean_and_stderr
from aprec.sensitivity.objective import Objective, cross_entropy, objective
from aprec.sensitivity.profile import Estimate
from aprec.typing import LossFn, Progress

HESSIAN_RTOL = 0.1
LABEL_SAMPLES = 4


def draw_labels(key: jax.Array, probs: jax.Array, n: int) -> jax.Array:
  """``n`` integer label draws per example from ``probs`` (..., classes): ``(n, ...)``."""
  return jax.random.categorical(
      key, jnp.log(jnp.maximum(probs, 1e-30)), axis=-1, shape=(n, *probs.shape[:-1])
  )


def _gradient_stats_fn(emulator: Emulator, obj: Objective, label_samples: int) -> Callable:
  def one(params, x, t, deltas):
    loss_fn = cross_entropy if obj.sample_labels else obj.loss_fn
    zeros = probes.zero_output_shifts(emulator)
    g = jax.grad(lambda s: loss_fn(probes.run(emulator, params, x, output_shifts=s), t))(zeros)
    sum_rest = lambda a: jnp.sum(a, axis=tuple(range(1, a.ndim)))
    taylor = jnp.stack([jnp.abs(sum_rest(gi[None] * di)) for gi, di in zip(g, deltas)])
    fisher = jnp.stack(
        [
            0.5 * inputs_lib.batch_size(x) * sum_rest(jnp.square(gi[None] * di))
            for gi, di in zip(g, deltas)
        ]
    )
    return taylor, fisher

  def stats(params, x, t, key):
    _, d = probes.mode_deltas(emulator, params, x)
    if obj.sample_labels:
      labels = draw_labels(key, t, label_samples)
      taylor, fisher = jax.lax.map(lambda y: one(params, x, y, d.output), labels)
      taylor, fisher = taylor.mean(0), fisher.mean(0)
    else:
      taylor, fisher = one(params, x, t, d.output)
    sum_rest = lambda a: jnp.sum(a, axis=tuple(range(1, a.ndim)))
    sq = jnp.stack(
        [
            jnp.stack([sum_rest(jnp.square(dl)), sum_rest(jnp.square(dr))], -1)
            for dl, dr in zip(d.lhs, d.rhs)
        ]
    )
    return taylor, fisher, sq

  return jax.jit(stats)


def gradient(
    emulator: Emulator,
    params: Any,
    xs: np.ndarray,
    ts: np.ndarray,
    *,
    obj: Objective | None = None,
    label_samples: int = LABEL_SAMPLES,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[dict[str, Estimate], np.ndarray]:
  """The ``taylor`` and ``fisher`` estimates, and ``‖Q(operand) - operand‖²`` per
  (op, mode, lhs/rhs) averaged over batches (used by ``hessian``).

  Args:
    obj: the objective (default ``objective("ce")``: ``ts`` are integer labels).
    label_samples: label draws per example when ``obj.sample_labels``.
  """
  obj = objective("ce") if obj is None else obj
  fn = _gradient_stats_fn(emulator, obj, label_samples)
  key = jax.random.key(seed)
  per_batch = []
  count = inputs_lib.batch_size(xs)
  for b in range(count):
    x, t = inputs_lib.take(xs, b), inputs_lib.take(ts, b)
    per_batch.append(
        [np.asarray(a, np.float64) for a in fn(params, x, t, jax.random.fold_in(key, b))]
    )
    if progress is not None:
      progress("gradients", b + 1, count)
  taylor, fisher, sq = (np.stack(a, -1) for a in zip(*per_batch))
  out = {
      name: Estimate(delta_loss=m, stderr=e, n_samples=count)
      for name, (m, e) in (("taylor", mean_and_stderr(taylor)), ("fisher", mean_and_stderr(fisher)))
  }
  return out, sq.mean(-1)


def hessian(
    emulator: Emulator,
    params: Any,
    xs: np.ndarray,
    ts: np.ndarray,
    operand_sq_error: np.ndarray,
    *,
    loss_fn: LossFn = cross_entropy,
    rtol: float = HESSIAN_RTOL,
    seed: int = 0,
    max_probes: int = 256,
    progress: Progress | None = None,
) -> tuple[Estimate, dict[str, Any]]:
  """HAWQ-V2 with the activation-operand fallback: ``½ Σ_o Tr(H_o)/n_o ‖Δo‖²``.

  Args:
    operand_sq_error: ``(n_ops, n_modes, 2)`` mean ``‖Q(o) - o‖²`` from ``gradient``.

  Returns:
    The estimate (standard error over probes) and details: traces, probes, convergence
    (of every op's prediction in every non-fp32 mode, to ``rtol``), the weights-only
    HAWQ-V2 table, the fallback ops.
  """
  sizes = np.array(
      [[np.prod(op.lhs_shape), np.prod(op.rhs_shape)] for op in emulator.ops], np.float64
  )
  weights = 0.5 * operand_sq_error[:, 1:] / sizes[:, None, :]  # (ops, modes - 1, 2)
  traces = probes.hutchinson_traces(
      emulator,
      params,
      xs,
      ts,
      loss_fn,
      rtol=rtol,
      seed=seed,
      max_probes=max_probes,
      combine=weights,
      progress=progress,
  )
  samples = traces.pop("samples")
  terms = 0.5 * (traces["trace"] / sizes)[:, None, :] * operand_sq_error  # (ops, modes, 2)
  per_probe = np.einsum("pio,imo->pim", samples, 0.5 * operand_sq_error / sizes[:, None, :])
  weight = np.array([[op.weight_operand == s for s in (0, 1)] for op in emulator.ops])
  details = dict(traces)
  details["weights_only"] = np.where(weight[:, None, :], terms, 0.0).sum(-1)
  details["fallback"] = "activation operands' Hessian traces (ops without a weight)"
  details["fallback_ops"] = [op.name for op in emulator.ops if not op.has_weight]
  est = Estimate(
      delta_loss=terms.sum(-1),
      stderr=per_probe.std(0, ddof=1) / np.sqrt(len(per_probe)),
      n_samples=int(traces["probes"]),
  )
  return est, details


def tracked(
    emulator: Emulator,
    apply_fn: Callable,
    params: Any,
    xs: np.ndarray,
    ts: np.ndarray,
    fallback: Estimate,
    *,
    obj: Objective | None = None,
    label_samples: int = LABEL_SAMPLES,
    seed: int = 0,
    state: tracker_lib.TrackerState | None = None,
) -> tuple[Estimate, dict[str, Any]]:
  """The ``tracked`` estimate from ``state``; rows of ops without a tracked weight come
  from ``fallback``.

  Without ``state``, one is gathered here: the fp32 model's parameter gradients on every
  calibration batch (with ``obj.sample_labels``, one tracker step per label draw).
  """
  obj = objective("ce") if obj is None else obj
  if state is None:
    loss_fn = cross_entropy if obj.sample_labels else obj.loss_fn

    @jax.jit
    def step(s, x, t):
      grads = jax.grad(lambda p: loss_fn(apply_fn(p, x), t))(params)
      return tracker_lib.update(s, grads, batch_size=inputs_lib.batch_size(x))

    state = tracker_lib.init(params)
    key = jax.random.key(seed)
    for b in range(inputs_lib.batch_size(xs)):
      x, t = inputs_lib.take(xs, b), inputs_lib.take(ts, b)
      draws = (
          draw_labels(jax.random.fold_in(key, b), t, label_samples) if obj.sample_labels else [t]
      )
      for labels in draws:
        state = step(state, x, labels)
  mean, err, covered = tracker_lib.estimate(state, emulator, params, inputs_lib.take(xs, 0))
  rows = ~np.asarray(covered)
  mean[rows], err[rows] = fallback.delta_loss[rows], fallback.stderr[rows]
  details = {
      "steps": int(state.steps),
      "examples": float(state.examples),
      "fallback_method": "fisher",
      "fallback_ops": [op.name for op, c in zip(emulator.ops, covered) if not c],
  }
  return Estimate(delta_loss=mean, stderr=err, n_samples=int(state.steps)), details
