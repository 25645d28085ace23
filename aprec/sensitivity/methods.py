"""Sensitivity analysis: the predicted loss increase of every op in every precision mode.

What Δloss measures (``loss``, recorded in the profile):

- ``"kl"`` (default): the cross-entropy against the fp32 model's own predictive
  distribution, so Δloss = ``E_x KL(p_fp32(·|x) ‖ p_mode(·|x))`` — the expected loss
  increase were the labels drawn from the fp32 model (for a calibrated model, the expected
  increase of the true loss). It needs no labels and has no first-order term: on a few
  hundred examples the label cross-entropy's Δ is dominated by ``∂L/∂y·Δy``, whose sign
  is random per example, so its small values are mostly noise.
- ``"ce"``: the mean cross-entropy against the dataset labels.
- ``"cosine"`` (for embedding models, e.g. ``minilm_l6``): ``1 - cos`` between each
  example's output vector and its fp32 output, mean over examples (``cosine_distance``);
  only ``perturbation`` and ``hessian`` estimate it (its gradient vanishes at fp32).
- a custom ``loss_fn(outputs, targets) -> scalar`` on the batches' own targets.

Methods (the registry ``METHODS``, a dict from name to method), selectable and combinable
(``"perturbation,fisher"``, ``"all"``); each yields a Δloss table ``(n_ops, n_modes)`` with
a standard error (``measured.py`` holds the measured method, ``gradients.py`` the others):

- ``perturbation`` (measured, the default): the loss with op ``i`` alone in mode ``m``
  minus the fp32 loss, for every (i, m), on every calibration batch. Everything before op
  ``i`` is then the fp32 model's, so the sweep computes that prefix once per batch and
  reruns only the model from op ``i``'s group of ops on (``reuse``); assignments go through
  compiled, device-sharded calls per chunk. Mean and standard error of the paired
  per-batch differences.
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

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from aprec.emulator import batching
from aprec.emulator import inputs as inputs_lib
from aprec.emulator import settings
from aprec.emulator.core import Emulator
from aprec.emulator.formats import MODES as MODES
from aprec.sensitivity import tracker as tracker_lib
from aprec.sensitivity.gradients import HESSIAN_RTOL as HESSIAN_RTOL
from aprec.sensitivity.gradients import LABEL_SAMPLES as LABEL_SAMPLES
from aprec.sensitivity.gradients import gradient as gradient
from aprec.sensitivity.gradients import hessian as hessian
from aprec.sensitivity.gradients import tracked as tracked
from aprec.sensitivity import measured as measured_lib
from aprec.sensitivity import reuse
from aprec.sensitivity.measured import baseline_losses
from aprec.sensitivity.measured import batch_losses as batch_losses
from aprec.sensitivity.measured import mean_and_stderr as mean_and_stderr
from aprec.sensitivity.measured import perturbation as perturbation
from aprec.sensitivity.measured import single_op_assignments as single_op_assignments
from aprec.sensitivity.measured import stack_batches as stack_batches
from aprec.sensitivity.objective import DEFAULT_LOSS as DEFAULT_LOSS
from aprec.sensitivity.objective import LOSSES as LOSSES
from aprec.sensitivity.objective import Objective as Objective
from aprec.sensitivity.objective import cross_entropy as cross_entropy
from aprec.sensitivity.objective import objective as objective
from aprec.sensitivity.objective import soft_cross_entropy as soft_cross_entropy
from aprec.sensitivity.profile import Estimate, SensitivityProfile, make_profile
from aprec.typing import ApplyFn, LossFn, Progress

DEFAULT_METHOD = "perturbation"


@dataclasses.dataclass(kw_only=True, eq=False)
class Analysis:
  """One analysis in progress: the model, its calibration data and settings, and the
  gradient pass that ``taylor``, ``fisher``, ``hessian`` and ``tracked`` share."""

  emulator: Emulator
  apply_fn: ApplyFn
  params: Any
  xs: np.ndarray
  ts: np.ndarray
  obj: Objective
  chunk_size: int = 32
  reuse_prefix: bool = True
  hessian_rtol: float = HESSIAN_RTOL
  hessian_max_probes: int = 256
  label_samples: int = LABEL_SAMPLES
  tracker_state: tracker_lib.TrackerState | None = None
  seed: int = 0
  progress: Progress | None = None
  gradient_seconds: float = 0.0

  @functools.cached_property
  def gradients(self) -> tuple[dict[str, Estimate], np.ndarray]:
    """``gradients.gradient``'s estimates and squared operand errors, computed once."""
    start = time.perf_counter()
    out = gradient(
        self.emulator,
        self.params,
        self.xs,
        self.ts,
        obj=self.obj,
        label_samples=self.label_samples,
        seed=self.seed,
        progress=self.progress,
    )
    self.gradient_seconds = time.perf_counter() - start
    return out


Method = Callable[[Analysis], tuple[Estimate, dict[str, Any] | None]]
"""A sensitivity method: the estimate and its details (or None) for one analysis."""


def _perturbation(c: Analysis) -> tuple[Estimate, dict[str, Any]]:
  kwargs = dict(loss_fn=c.obj.loss_fn, chunk_size=c.chunk_size, progress=c.progress)
  if c.reuse_prefix:
    try:
      return reuse.perturbation(c.emulator, c.params, c.xs, c.ts, **kwargs), {"sweep": "reuse"}
    except reuse.NotSegmentable as e:  # an op in a scan or nested call: the whole model
      return perturbation(c.emulator, c.params, c.xs, c.ts, **kwargs), {"sweep": f"plain ({e})"}
  return perturbation(c.emulator, c.params, c.xs, c.ts, **kwargs), {"sweep": "plain"}


def _hessian(c: Analysis) -> tuple[Estimate, dict[str, Any]]:
  return hessian(
      c.emulator,
      c.params,
      c.xs,
      c.ts,
      c.gradients[1],
      loss_fn=c.obj.loss_fn,
      rtol=c.hessian_rtol,
      seed=c.seed,
      max_probes=c.hessian_max_probes,
      progress=c.progress,
  )


def _tracked(c: Analysis) -> tuple[Estimate, dict[str, Any]]:
  return tracked(
      c.emulator,
      c.apply_fn,
      c.params,
      c.xs,
      c.ts,
      c.gradients[0]["fisher"],
      obj=c.obj,
      label_samples=c.label_samples,
      seed=c.seed,
      state=c.tracker_state,
  )


METHODS: dict[str, Method] = {
    "perturbation": _perturbation,
    "taylor": lambda c: (c.gradients[0]["taylor"], None),
    "fisher": lambda c: (c.gradients[0]["fisher"], None),
    "hessian": _hessian,
    "tracked": _tracked,
}


def parse_methods(names: str | Sequence[str]) -> tuple[str, ...]:
  """Method names from ``"perturbation"``, ``"taylor,fisher"``, ``"all"`` or a sequence.

  Example:
    >>> parse_methods("fisher, perturbation")
    ('fisher', 'perturbation')
  """
  names = [s.strip() for s in (names.split(",") if isinstance(names, str) else names)]
  names = [n for n in names if n]
  if names == ["all"]:
    return tuple(METHODS)
  unknown = [n for n in names if n not in METHODS]
  if unknown or not names:
    raise ValueError(
        f"unknown sensitivity method(s) {unknown or names}; choose from "
        f"{', '.join(METHODS)} (comma-separated to combine, or 'all')"
    )
  return tuple(dict.fromkeys(names))


def analyze(
    apply_fn: ApplyFn,
    params: Any,
    batches: Sequence[tuple[Any, Any]] | batching.Batches,
    *,
    methods: str | Sequence[str] = DEFAULT_METHOD,
    loss: str = DEFAULT_LOSS,
    loss_fn: LossFn | None = None,
    model_name: str = "model",
    dataset: str = "unknown",
    chunk_size: int = 32,
    reuse_prefix: bool = True,
    hessian_rtol: float = HESSIAN_RTOL,
    hessian_max_probes: int = 256,
    label_samples: int = LABEL_SAMPLES,
    tracker_state: tracker_lib.TrackerState | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    **emulator_options: Any,
) -> SensitivityProfile:
  """A ``SensitivityProfile`` of ``apply_fn`` on calibration ``batches``.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits`` (anything ``Emulator`` accepts).
    params: the model's parameters.
    batches: ``[(x, y), ...]`` of equal shapes, or ``batching.split``'s ``Batches`` (train
      or val data, not the test split); ``x`` is an array or any pytree of arrays sharing
      the batch axis (``(ids, mask)``, a dict); ``y`` are integer labels (unused with
      ``loss="kl"``, which needs none).
    methods: one of ``METHODS``, a comma list, or ``"all"``; the first is the primary.
    loss: ``"kl"``, ``"ce"`` or ``"cosine"`` (see the module docstring).
    loss_fn: a custom ``loss_fn(logits, y) -> scalar`` batch-mean loss instead of ``loss``.
    model_name, dataset: recorded in the profile.
    chunk_size: assignments per compiled call in the perturbation sweep.
    reuse_prefix: run the perturbation sweep from the fp32 prefix (``reuse``: each op's
      modes rerun only the model from its group of ops on; the same table); False, or a
      model with an op inside a scan or nested call, runs the whole model per assignment.
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
  emulator = Emulator(apply_fn, params, inputs_lib.take(xs, 0), **emulator_options)
  ts = obj.targets(apply_fn, params, xs, ys)
  baseline = baseline_losses(emulator, params, xs, ts, obj.loss_fn)
  analysis = Analysis(
      emulator=emulator,
      apply_fn=apply_fn,
      params=params,
      xs=xs,
      ts=ts,
      obj=obj,
      chunk_size=chunk_size,
      reuse_prefix=reuse_prefix,
      hessian_rtol=hessian_rtol,
      hessian_max_probes=hessian_max_probes,
      label_samples=label_samples,
      tracker_state=tracker_state,
      seed=seed,
      progress=progress,
  )
  estimates: dict[str, Estimate] = {}
  details: dict[str, Any] = {
      "seconds": {},
      "numerics": settings.of(emulator),
      "passthrough": [vars(p) for p in emulator.passthrough],
  }
  if set(names) - {"perturbation"}:  # one gradient pass serves taylor, fisher and the rest
    analysis.gradients  # noqa: B018 (computed here so its time is its own)
    details["seconds"]["gradient_pass"] = analysis.gradient_seconds
  for name in names:
    start = time.perf_counter()
    estimates[name], method_details = METHODS[name](analysis)
    if method_details is not None:
      details[name] = method_details
    # Wall time each method costs alone; all but perturbation include the gradient pass.
    details["seconds"][name] = (
        time.perf_counter() - start + analysis.gradient_seconds * (name != "perturbation")
    )
  return make_profile(
      model=model_name,
      ops=emulator.ops,
      estimates=estimates,
      dataset=dataset,
      n_batches=measured_lib.count_batches(xs),
      batch_size=inputs_lib.batch_size(inputs_lib.take(xs, 0)),
      baseline_loss=float(baseline.mean()),
      loss=obj.name,
      details=details,
      params=params,
  )


def default_loss(model: Any) -> str:
  """The loss a loaded model's profile measures by default: ``"cosine"`` for an embedding
  model (``aprec.models.EMBEDDERS``; its outputs are embeddings, not class logits), else
  ``DEFAULT_LOSS``."""
  from aprec import models

  return "cosine" if getattr(model, "name", None) in models.EMBEDDERS else DEFAULT_LOSS


def analyze_model(
    model: Any,
    *,
    methods: str | Sequence[str] = DEFAULT_METHOD,
    split: str = "val",
    batch_size: int = 60,
    n_batches: int | None = None,
    num_pairs: int | None = None,
    **kwargs: Any,
) -> SensitivityProfile:
  """``analyze`` for a loaded reference model (``aprec.models.load``) on one of its splits.

  ``loss`` defaults to ``default_loss(model)``. For a text task's split
  (``aprec.models.docstrings.TextSplit``), ``num_pairs`` keeps its first pairs (their
  summaries and their bodies).
  """
  data = getattr(model.data, split, None)
  if data is None:
    raise ValueError(f"unknown split {split!r}; use one of {', '.join(model.data._fields)}")
  task = "digits"
  if num_pairs is not None:
    if not hasattr(data, "head"):
      raise ValueError(f"num_pairs is for a text task's pairs; {model.name}'s {split} has none")
    data, task, split = data.head(num_pairs), "docstrings", f"{split}[:{num_pairs} pairs]"
  elif hasattr(data, "num_pairs"):
    task = "docstrings"
  kwargs.setdefault("loss", default_loss(model))
  return analyze(
      model.apply_fn,
      model.params,
      batching.split(data.x, data.y, batch_size, n_batches),
      methods=methods,
      model_name=model.name,
      dataset=f"{task}/{split}",
      **kwargs,
  )


__all__ = [
    "LOSSES",
    "METHODS",
    "MODES",
    "Analysis",
    "Objective",
    "analyze",
    "analyze_model",
    "batch_losses",
    "default_loss",
    "cross_entropy",
    "gradient",
    "hessian",
    "objective",
    "parse_methods",
    "perturbation",
    "single_op_assignments",
    "soft_cross_entropy",
    "stack_batches",
    "tracked",
]
