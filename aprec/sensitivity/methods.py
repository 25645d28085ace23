"""Sensitivity analysis: the predicted loss increase of every op in every precision mode.

What Δloss measures (``loss``, recorded in the profile):

- ``"kl"`` (default): the cross-entropy against the fp32 model's own predictive
  distribution, so Δloss = ``E_x KL(p_fp32(·|x) ‖ p_mode(·|x))`` — the expected loss
  increase were the labels drawn from the fp32 model (for a calibrated model, the expected
  increase of the true loss). It needs no labels and has no first-order term: on a few
  hundred examples the label cross-entropy's Δ is dominated by ``∂L/∂y·Δy``, whose sign
  is random per example, so its small values are mostly noise.
- ``"ce"``: the mean cross-entropy against the dataset labels.
- a custom ``loss_fn(outputs, targets) -> scalar`` on the batches' own targets.

Methods (``METHODS``), selectable and combinable (``"perturbation,fisher"``, ``"all"``);
each yields a Δloss table ``(n_ops, n_modes)`` with a standard error:

- ``perturbation`` (measured, the default): the loss with op ``i`` alone in mode ``m``
  minus the fp32 loss, for every (i, m), on every calibration batch. All assignments go
  through one compiled, vmapped, device-sharded call per chunk. Mean and standard error
  of the paired per-batch differences.
- ``taylor``: first order at each op's output, ``|Σ ∂L/∂y · Δy|`` per batch, where
  ``Δy = PAK(op, m) - op`` at fp32 inputs (it holds the weight and the activation rounding;
  by the chain rule it contains the weight-gradient term ``∂L/∂W · ΔW``).
- ``fisher``: the diagonal Fisher form at each op's output, ``½ · B · Σ (∂L/∂y)² Δy²``
  (``B`` examples per batch turn the batch-mean gradient into per-example gradients;
  examples must not interact, e.g. no batch statistics).
- ``hessian``: HAWQ-V2. A Hutchinson estimate of ``Tr(H)`` with respect to each op's
  operands (``probes.hutchinson_traces``), combined as
  ``½ Σ_operands Tr(H)/n · ‖Q(operand) - operand‖²``. The weight term is HAWQ-V2's
  ``Tr(H)/n ‖Q(W) - W‖²``; the activation terms (the PAK rounds activations too) are the
  same form with the Hessian at the activation, and are the only terms of ops without a
  weight (attention's ``q·kᵀ`` and ``p·v``): that is the fallback.
- ``tracked``: the diagonal empirical Fisher of the weights from gradient statistics an
  ``aprec.sensitivity.tracker`` gathered (in the user's train step, or here over the calibration
  batches); ops without a tracked weight use the ``fisher`` rows.

With ``loss="kl"`` the loss's gradient vanishes at fp32, so the gradient methods
(``taylor``, ``fisher``, ``tracked``) use the label cross-entropy with labels drawn from
the fp32 model (``label_samples`` draws per example): ``E_y[g gᵀ]`` is then the true
Fisher, whose quadratic form is the second-order expansion of the KL.

Example:
  >>> import jax, jax.numpy as jnp, flax.linen as nn, numpy as np
  >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(3)])
  >>> x = jax.random.normal(jax.random.key(0), (4, 16, 5)); y = jnp.zeros((4, 16), jnp.int32)
  >>> params = model.init(jax.random.key(1), x[0])
  >>> p = analyze(model.apply, params, list(zip(x, y)), methods="perturbation,fisher")
  >>> p.delta_loss.shape, sorted(p.estimates), p.loss
  ((2, 7), ['fisher', 'perturbation'], 'kl')
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aprec.sensitivity import probes
from aprec.emulator import batching
from aprec.sensitivity import tracker as tracker_lib
from aprec.emulator.core import Emulator
from aprec.emulator.formats import MODES, N_MODES
from aprec.sensitivity.objective import DEFAULT_LOSS as DEFAULT_LOSS
from aprec.sensitivity.objective import LOSSES as LOSSES
from aprec.sensitivity.objective import LossFn as LossFn
from aprec.sensitivity.objective import Objective as Objective
from aprec.sensitivity.objective import cross_entropy as cross_entropy
from aprec.sensitivity.objective import objective as objective
from aprec.sensitivity.objective import soft_cross_entropy as soft_cross_entropy
from aprec.sensitivity.profile import Estimate, SensitivityProfile, make_profile

METHODS = ("perturbation", "taylor", "fisher", "hessian", "tracked")
DEFAULT_METHOD = "perturbation"
HESSIAN_RTOL = 0.1
LABEL_SAMPLES = 4

Progress = Callable[[str, int, int], None]  # (task, done, total)


def parse_methods(spec: str | Sequence[str]) -> tuple[str, ...]:
  """Method names from ``"perturbation"``, ``"taylor,fisher"``, ``"all"`` or a sequence.

  Example:
    >>> parse_methods("fisher, perturbation")
    ('fisher', 'perturbation')
  """
  names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
  names = [n for n in names if n]
  if names == ["all"]:
    return METHODS
  unknown = [n for n in names if n not in METHODS]
  if unknown or not names:
    raise ValueError(f"unknown sensitivity method(s) {unknown or names}; choose from "
                     f"{', '.join(METHODS)} (comma-separated to combine, or 'all')")
  return tuple(dict.fromkeys(names))


# --------------------------------------------------------------------------------------
# Calibration batches.


def stack_batches(batches: Sequence[tuple[Any, Any]] | batching.Batches
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Validates ``[(x, y), ...]`` batches of one shape and stacks them: ``(n, B, ...)``.

  ``batching.Batches`` (from ``batching.split``) are already stacked and pass through.
  """
  if isinstance(batches, batching.Batches):
    return np.asarray(batches.x), np.asarray(batches.y)
  batches = list(batches)
  if not batches:
    raise ValueError("sensitivity analysis needs at least one (inputs, labels) batch; got none")
  xs, ys = [], []
  for i, item in enumerate(batches):
    if not isinstance(item, (tuple, list)) or len(item) != 2:
      raise ValueError(f"batch {i} must be an (inputs, labels) pair, got {type(item).__name__}")
    x, y = np.asarray(item[0]), np.asarray(item[1])
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y) or len(x) == 0:
      raise ValueError(f"batch {i} has inputs of shape {x.shape} and labels of shape {y.shape};"
                       " both need the same (non-zero) number of examples")
    if xs and (x.shape != xs[0].shape or y.shape != ys[0].shape):
      raise ValueError(f"batch {i} has shapes {x.shape}/{y.shape} but batch 0 has "
                       f"{xs[0].shape}/{ys[0].shape}; use equal batches (e.g. drop the remainder)")
    xs.append(x)
    ys.append(y)
  return np.stack(xs), np.stack(ys)


def mean_and_stderr(samples: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
  """Mean and standard error (ddof=1) along ``axis``; the error is NaN with one sample."""
  n = samples.shape[axis]
  mean = samples.mean(axis)
  if n < 2:
    return mean, np.full(mean.shape, np.nan)
  return mean, samples.std(axis, ddof=1) / np.sqrt(n)


def baseline_losses(emulator: Emulator, params: Any, xs: np.ndarray, ys: np.ndarray,
                    loss_fn: LossFn = cross_entropy) -> np.ndarray:
  """The fp32 loss of every batch; raises if the loss is not a finite scalar."""
  fp32 = emulator.assignment("fp32")
  f = jax.jit(lambda p, x, y: loss_fn(emulator(p, x, fp32), y))
  shape = jax.eval_shape(f, params, xs[0], ys[0]).shape
  if shape != ():
    raise ValueError(f"loss_fn must return a scalar (the batch mean), got shape {shape}")
  losses = np.array([float(f(params, x, y)) for x, y in zip(xs, ys)])
  bad = np.flatnonzero(~np.isfinite(losses))
  if bad.size:
    raise ValueError(f"the fp32 loss of calibration batch {int(bad[0])} is {losses[bad[0]]}; "
                     "sensitivities need a finite loss at full precision (check the inputs, "
                     "labels and parameters)")
  return losses


def batch_losses(emulator: Emulator, params: Any, xs: np.ndarray, ys: np.ndarray,
                 assignments: np.ndarray, *, loss_fn: LossFn = cross_entropy,
                 chunk_size: int = 32, progress: Progress | None = None,
                 task: str = "assignments") -> np.ndarray:
  """Loss of every assignment on every batch, ``(n_assignments, n_batches)`` float64.

  One compiled call per chunk of assignments (``batching.sweep``: the chunk sharded over
  every device) runs the chunk over all batches.
  """
  assignments = np.asarray(assignments, np.int32)
  if assignments.ndim != 2 or assignments.shape[1] != len(emulator.ops) or not len(assignments):
    raise ValueError(f"assignments must have shape (n >= 1, {len(emulator.ops)}), got "
                     f"{assignments.shape}")
  emulator.check_modes(assignments.max(0))
  emulator.check_modes(assignments.min(0))
  n = len(assignments)
  done = None if progress is None else (lambda k: progress(task, k, n))
  losses = batching.sweep(_loss_fn(emulator, loss_fn), assignments, params, batches=(xs, ys),
                          chunk_size=chunk_size, progress=done)
  return np.asarray(losses, np.float64)


_LOSS_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _loss_fn(emulator: Emulator, loss_fn: LossFn) -> Callable:
  # One function object per (emulator, loss) so batching.sweep's compile cache hits.
  per_loss = _LOSS_FNS.setdefault(emulator, {})
  if loss_fn not in per_loss:

    def loss(modes, params, batch):
      x, y = batch
      return loss_fn(emulator(params, x, modes), y)
    per_loss[loss_fn] = loss
  return per_loss[loss_fn]


def single_op_assignments(n_ops: int) -> np.ndarray:
  """The all-fp32 row, then op ``i`` alone in mode ``m`` for ``i`` in ops, ``m`` in 1..6."""
  rows = np.zeros((1 + n_ops * (N_MODES - 1), n_ops), np.int32)
  for i in range(n_ops):
    rows[1 + i * (N_MODES - 1):1 + (i + 1) * (N_MODES - 1), i] = np.arange(1, N_MODES)
  return rows


# --------------------------------------------------------------------------------------
# Methods.


def perturbation(emulator: Emulator, params: Any, xs: np.ndarray, ts: np.ndarray, *,
                 loss_fn: LossFn = cross_entropy, chunk_size: int = 32,
                 progress: Progress | None = None) -> Estimate:
  """Measured single-op Δloss: mean and standard error of paired per-batch differences.

  Args:
    xs, ts: stacked inputs and loss targets, ``(n_batches, B, ...)``.
  """
  n_ops = len(emulator.ops)
  losses = batch_losses(emulator, params, xs, ts, single_op_assignments(n_ops),
                        loss_fn=loss_fn, chunk_size=chunk_size, progress=progress,
                        task="perturbation")
  diff = (losses[1:] - losses[:1]).reshape(n_ops, N_MODES - 1, -1)
  mean, err = mean_and_stderr(diff)
  zeros = np.zeros((n_ops, 1))
  return Estimate(delta_loss=np.concatenate([zeros, mean], 1),
                  stderr=np.concatenate([zeros, err], 1), n_samples=len(xs))


def _draw_labels(key: jax.Array, probs: jax.Array, n: int) -> jax.Array:
  """``n`` integer label draws per example from ``probs`` (..., classes): ``(n, ...)``."""
  return jax.random.categorical(key, jnp.log(jnp.maximum(probs, 1e-30)), axis=-1,
                                shape=(n, *probs.shape[:-1]))


def _gradient_stats_fn(emulator: Emulator, obj: Objective, label_samples: int) -> Callable:
  def one(params, x, t, deltas):
    loss_fn = cross_entropy if obj.sample_labels else obj.loss_fn
    zeros = probes.zero_output_shifts(emulator)
    g = jax.grad(lambda s: loss_fn(probes.run(emulator, params, x, output_shifts=s), t))(zeros)
    sum_rest = lambda a: jnp.sum(a, axis=tuple(range(1, a.ndim)))
    taylor = jnp.stack([jnp.abs(sum_rest(gi[None] * di)) for gi, di in zip(g, deltas)])
    fisher = jnp.stack([0.5 * x.shape[0] * sum_rest(jnp.square(gi[None] * di))
                        for gi, di in zip(g, deltas)])
    return taylor, fisher

  def stats(params, x, t, key):
    _, d = probes.mode_deltas(emulator, params, x)
    if obj.sample_labels:
      labels = _draw_labels(key, t, label_samples)
      taylor, fisher = jax.lax.map(lambda y: one(params, x, y, d.output), labels)
      taylor, fisher = taylor.mean(0), fisher.mean(0)
    else:
      taylor, fisher = one(params, x, t, d.output)
    sum_rest = lambda a: jnp.sum(a, axis=tuple(range(1, a.ndim)))
    sq = jnp.stack([jnp.stack([sum_rest(jnp.square(dl)), sum_rest(jnp.square(dr))], -1)
                    for dl, dr in zip(d.lhs, d.rhs)])
    return taylor, fisher, sq
  return jax.jit(stats)


def gradient(emulator: Emulator, params: Any, xs: np.ndarray, ts: np.ndarray, *,
             obj: Objective | None = None, label_samples: int = LABEL_SAMPLES, seed: int = 0,
             progress: Progress | None = None) -> tuple[dict[str, Estimate], np.ndarray]:
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
  for b, (x, t) in enumerate(zip(xs, ts)):
    per_batch.append([np.asarray(a, np.float64) for a in fn(params, x, t,
                                                            jax.random.fold_in(key, b))])
    if progress is not None:
      progress("gradients", b + 1, len(xs))
  taylor, fisher, sq = (np.stack(a, -1) for a in zip(*per_batch))
  out = {name: Estimate(delta_loss=m, stderr=e, n_samples=len(xs))
         for name, (m, e) in (("taylor", mean_and_stderr(taylor)),
                              ("fisher", mean_and_stderr(fisher)))}
  return out, sq.mean(-1)


def hessian(emulator: Emulator, params: Any, xs: np.ndarray, ts: np.ndarray,
            operand_sq_error: np.ndarray, *, loss_fn: LossFn = cross_entropy,
            rtol: float = HESSIAN_RTOL, seed: int = 0, max_probes: int = 256,
            progress: Progress | None = None) -> tuple[Estimate, dict[str, Any]]:
  """HAWQ-V2 with the activation-operand fallback: ``½ Σ_o Tr(H_o)/n_o ‖Δo‖²``.

  Args:
    operand_sq_error: ``(n_ops, n_modes, 2)`` mean ``‖Q(o) - o‖²`` from ``gradient``.

  Returns:
    The estimate (standard error over probes) and details: traces, probes, convergence
    (of every op's prediction in every non-fp32 mode, to ``rtol``), the weights-only
    HAWQ-V2 table, the fallback ops.
  """
  sizes = np.array([[np.prod(op.lhs_shape), np.prod(op.rhs_shape)] for op in emulator.ops],
                   np.float64)
  weights = 0.5 * operand_sq_error[:, 1:] / sizes[:, None, :]           # (ops, modes - 1, 2)
  traces = probes.hutchinson_traces(emulator, params, xs, ts, loss_fn, rtol=rtol, seed=seed,
                                    max_probes=max_probes, combine=weights, progress=progress)
  samples = traces.pop("samples")
  terms = 0.5 * (traces["trace"] / sizes)[:, None, :] * operand_sq_error  # (ops, modes, 2)
  per_probe = np.einsum("pio,imo->pim", samples, 0.5 * operand_sq_error / sizes[:, None, :])
  weight = np.array([[op.weight_operand == s for s in (0, 1)] for op in emulator.ops])
  details = dict(traces)
  details["weights_only"] = np.where(weight[:, None, :], terms, 0.0).sum(-1)
  details["fallback"] = "activation operands' Hessian traces (ops without a weight)"
  details["fallback_ops"] = [op.name for op in emulator.ops if not op.has_weight]
  est = Estimate(delta_loss=terms.sum(-1),
                 stderr=per_probe.std(0, ddof=1) / np.sqrt(len(per_probe)),
                 n_samples=int(traces["probes"]))
  return est, details


def tracked(emulator: Emulator, apply_fn: Callable, params: Any, xs: np.ndarray,
            ts: np.ndarray, fallback: Estimate, *, obj: Objective | None = None,
            label_samples: int = LABEL_SAMPLES, seed: int = 0,
            state: tracker_lib.TrackerState | None = None) -> tuple[Estimate, dict[str, Any]]:
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
      return tracker_lib.update(s, grads, batch_size=x.shape[0])
    state = tracker_lib.init(params)
    key = jax.random.key(seed)
    for b, (x, t) in enumerate(zip(xs, ts)):
      draws = (_draw_labels(jax.random.fold_in(key, b), t, label_samples)
               if obj.sample_labels else [t])
      for labels in draws:
        state = step(state, x, labels)
  mean, err, covered = tracker_lib.estimate(state, emulator, params, xs[0])
  rows = ~np.asarray(covered)
  mean[rows], err[rows] = fallback.delta_loss[rows], fallback.stderr[rows]
  details = {"steps": int(state.steps), "examples": float(state.examples),
             "fallback_method": "fisher",
             "fallback_ops": [op.name for op, c in zip(emulator.ops, covered) if not c]}
  return Estimate(delta_loss=mean, stderr=err, n_samples=int(state.steps)), details


# --------------------------------------------------------------------------------------
# The entry point.


def analyze(apply_fn: Callable, params: Any, batches: Sequence[tuple[Any, Any]], *,
            methods: str | Sequence[str] = DEFAULT_METHOD, loss: str = DEFAULT_LOSS,
            loss_fn: LossFn | None = None, model_name: str = "model",
            dataset: str = "unknown", chunk_size: int = 32, hessian_rtol: float = HESSIAN_RTOL,
            hessian_max_probes: int = 256, label_samples: int = LABEL_SAMPLES,
            tracker_state: tracker_lib.TrackerState | None = None, seed: int = 0,
            progress: Progress | None = None, **emulator_options: Any) -> SensitivityProfile:
  """A ``SensitivityProfile`` of ``apply_fn`` on calibration ``batches``.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits`` (anything ``Emulator`` accepts).
    params: the model's parameters.
    batches: ``[(x, y), ...]`` of equal shapes (train or val data, not the test split);
      ``y`` are integer labels (unused with ``loss="kl"``, which needs none).
    methods: one of ``METHODS``, a comma list, or ``"all"``; the first is the primary.
    loss: ``"kl"`` or ``"ce"`` (see the module docstring).
    loss_fn: a custom ``loss_fn(logits, y) -> scalar`` batch-mean loss instead of ``loss``.
    model_name, dataset: recorded in the profile.
    chunk_size: assignments per compiled call in the perturbation sweep.
    hessian_rtol, hessian_max_probes: the Hutchinson stopping rule.
    label_samples: label draws per example for the gradient methods under ``"kl"``.
    tracker_state: statistics from ``aprec.sensitivity.tracker`` for ``tracked`` (default: gathered
      over ``batches``).
    seed: Hutchinson probes and label draws.
    progress: called as ``progress(task, done, total)``.
    **emulator_options: ``activation_scaling``/``ste`` for the ``Emulator``.

  Raises:
    ValueError: unknown method or loss, empty or mismatched batches, a loss that is not a
      finite scalar at fp32.
  """
  names = parse_methods(methods)
  obj = objective(loss, loss_fn)
  xs, ys = stack_batches(batches)
  emulator = Emulator(apply_fn, params, xs[0], **emulator_options)
  ts = obj.targets(apply_fn, params, xs, ys)
  baseline = baseline_losses(emulator, params, xs, ts, obj.loss_fn)
  estimates: dict[str, Estimate] = {}
  details: dict[str, Any] = {"seconds": {},
                             "passthrough": [vars(p) for p in emulator.passthrough]}
  grads, sq = None, None
  if set(names) - {"perturbation"}:  # one gradient pass serves taylor, fisher and the rest
    start = time.perf_counter()
    grads, sq = gradient(emulator, params, xs, ts, obj=obj, label_samples=label_samples,
                         seed=seed, progress=progress)
    details["seconds"]["gradient_pass"] = time.perf_counter() - start
  for name in names:
    start = time.perf_counter()
    if name == "perturbation":
      estimates[name] = perturbation(emulator, params, xs, ts, loss_fn=obj.loss_fn,
                                     chunk_size=chunk_size, progress=progress)
    elif name in ("taylor", "fisher"):
      estimates[name] = grads[name]
    elif name == "hessian":
      estimates[name], details["hessian"] = hessian(
          emulator, params, xs, ts, sq, loss_fn=obj.loss_fn, rtol=hessian_rtol, seed=seed,
          max_probes=hessian_max_probes, progress=progress)
    elif name == "tracked":
      estimates[name], details["tracked"] = tracked(
          emulator, apply_fn, params, xs, ts, grads["fisher"], obj=obj,
          label_samples=label_samples, seed=seed, state=tracker_state)
    # Wall time each method costs alone; all but perturbation include the gradient pass.
    details["seconds"][name] = (time.perf_counter() - start
                                + details["seconds"].get("gradient_pass", 0.0)
                                * (name != "perturbation"))
  return make_profile(model=model_name, ops=emulator.ops, estimates=estimates,
                      dataset=dataset, n_batches=len(xs), batch_size=xs.shape[1],
                      baseline_loss=float(baseline.mean()), loss=obj.name, details=details,
                      params=params)


def analyze_model(model: Any, *, methods: str | Sequence[str] = DEFAULT_METHOD,
                  split: str = "val", batch_size: int = 60, n_batches: int | None = None,
                  **kwargs: Any) -> SensitivityProfile:
  """``analyze`` for a loaded reference model (``aprec.models.load``) on one of its splits."""
  data = getattr(model.data, split, None)
  if data is None:
    raise ValueError(f"unknown split {split!r}; use one of {', '.join(model.data._fields)}")
  return analyze(model.apply_fn, model.params,
                 batching.split(data.x, data.y, batch_size, n_batches),
                 methods=methods, model_name=model.name, dataset=f"digits/{split}", **kwargs)


__all__ = ["LOSSES", "METHODS", "MODES", "Objective", "analyze", "analyze_model",
           "batch_losses", "cross_entropy", "gradient", "hessian", "objective",
           "parse_methods", "perturbation", "single_op_assignments", "soft_cross_entropy",
           "stack_batches", "tracked"]
