"""Your own model to a running RPM, one call per step, each with defaults.

::

  model = aprec.own_model(module, inputs=(ids, mask), targets=labels, name="encoder")
  profile = aprec.analyze_model(model)            # Δloss of every op in every mode
  plan = aprec.plan(profile, "bits=6")            # the best static assignment in a budget
  d = aprec.deploy(model, profile, spec="edge_npu", scenario="contention")
  policy = aprec.train_policy(d)                  # the learned RPM policy
  result = aprec.run(d, policy)                   # closed loop beside the baselines
  print(aprec.report(result))

A model is an ``aprec.models.LoadedModel``: ``apply_fn(params, inputs) -> logits``, its
parameters and ``(inputs, targets)`` splits, where ``inputs`` is any pytree of arrays
sharing the example axis. ``own_model`` builds one from an nnx module or an apply function
and arrays; the reference models come from ``aprec.models.load``. Every step that takes
more than a few seconds draws a progress bar with ``progress=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from aprec.app.progress import bars
from aprec.emulator import inputs as inputs_lib
from aprec.emulator import settings
from aprec.models import LoadedModel
from aprec.models.data import DatasetSplits, Split
from aprec.sensitivity.profile import ProfileError, SensitivityProfile, check_matches

FRACTIONS = (0.6, 0.2, 0.2)  # train, val, test
BASELINES = ("static_fp16", "static_int8", "greedy")


def _module_apply(module: Any, example: Any):
  from flax import nnx

  graphdef, state = nnx.split(module)

  def apply_fn(state, inputs):
    m = nnx.merge(graphdef, state)
    if isinstance(inputs, tuple):
      return m(*inputs)
    return m(**inputs) if isinstance(inputs, dict) else m(inputs)

  return apply_fn, state


def own_model(
    model: Any,
    params: Any = None,
    *,
    inputs: Any = None,
    targets: Any = None,
    data: DatasetSplits | None = None,
    name: str = "my_model",
    fractions: tuple[float, float, float] = FRACTIONS,
    metadata: dict | None = None,
) -> LoadedModel:
  """A ``LoadedModel`` from your own model and data.

  Args:
    model: an ``nnx.Module`` (called as ``module(*inputs)`` for a tuple, ``module(**inputs)``
      for a dict, else ``module(inputs)``), or ``apply_fn(params, inputs)`` with ``params``.
    params: the parameters of an ``apply_fn``; None for an nnx module (its state).
    inputs, targets: all examples (shuffled), cut into train/val/test by ``fractions``;
      ``inputs`` is an array or any pytree of arrays sharing the example axis.
    data: the splits themselves instead of ``inputs``/``targets``.
    name: the model's name in profiles, policies and reports.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> m = own_model(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), inputs=np.ones((10, 3), np.float32),
    ...               targets=np.zeros(10, np.int32))
    >>> [len(s.y) for s in m.data], m.apply_fn(m.params, jnp.ones((1, 3))).shape
    ([6, 2, 2], (1, 2))
  """
  if data is None:
    if inputs is None or targets is None:
      raise ValueError("own_model needs inputs and targets (or data=DatasetSplits(...))")
    n = inputs_lib.batch_size(inputs)
    if inputs_lib.batch_size(targets, "targets") != n:
      raise ValueError(
          f"inputs hold {n} examples but targets "
          f"{inputs_lib.batch_size(targets, 'targets')}; expected one target each"
      )
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-9:
      raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    cuts = np.cumsum([0, *(int(round(f * n)) for f in fractions[:2])])
    parts = [slice(cuts[0], cuts[1]), slice(cuts[1], cuts[2]), slice(cuts[2], n)]
    data = DatasetSplits(
        *(Split(inputs_lib.take(inputs, s), inputs_lib.take(targets, s)) for s in parts)
    )
  if params is None:
    apply_fn, params = _module_apply(model, data.train.x)
  else:
    apply_fn = model
  return LoadedModel(
      apply_fn=apply_fn, params=params, data=data, metadata=dict(metadata or {}), name=name
  )


def analyze_model(
    model: LoadedModel,
    *,
    methods: str = "perturbation",
    split: str = "val",
    batch_size: int | None = None,
    progress: bool = False,
    **kwargs: Any,
) -> SensitivityProfile:
  """The sensitivity profile of ``model`` on one of its splits (``sensitivity.analyze``).

  ``batch_size`` defaults to 60 examples or the whole split if smaller; other keywords go to
  ``sensitivity.analyze`` (``loss``, ``activation_scaling``, ...).
  """
  from aprec.sensitivity.methods import analyze_model as analyze

  data = getattr(model.data, split, None)
  if data is None:
    raise ValueError(f"unknown split {split!r}; use one of {', '.join(model.data._fields)}")
  size = batch_size or min(60, inputs_lib.batch_size(data.x, f"the {split} split"))
  with bars(progress) as callback:
    return analyze(
        model, methods=methods, split=split, batch_size=size, progress=callback, **kwargs
    )


def deploy(
    model: LoadedModel,
    profile: SensitivityProfile | None = None,
    *,
    spec: str = "edge_npu",
    scenario: str = "contention",
    batch_size: int = 32,
):
  """``model`` on an NNP ``spec`` under a ``scenario``, steered by ``profile``'s Δloss table.

  Without a profile the table is measured on the val split (single-op perturbation).

  Raises:
    ProfileError: the profile is for another op table or other emulator settings.
  """
  from aprec.rpm.deployment import deploy as deploy_model
  from aprec.rpm.deployment import sensitivity_table

  if profile is None:
    table, source = sensitivity_table(model, method="perturbation")
  else:
    table, source = profile.delta_loss, f"profile of {profile.model} ({profile.method})"
  d = deploy_model(
      model, scenario, table=table, spec_name=spec, batch_size=batch_size, profile_source=source
  )
  if profile is not None:
    check_matches(profile, d.emulator.ops)
    settings.check(
        profile.numerics, d.emulator, what=f"the {profile.model} profile", error=ProfileError
    )
  return d


def train_policy(d: Any, *, steps: int = 600, progress: bool = False, **config: Any):
  """The learned RPM policy for deployment ``d`` (``rpm.train``; ``config`` sets any
  ``TrainConfig`` field, e.g. ``scenarios=("contention",)``), behind the sensor-fault
  guard as ``aprec run`` uses it."""
  from aprec.rpm.compare import make_policies
  from aprec.rpm.deployment import scenario_params
  from aprec.rpm.train import TrainConfig, collect, train

  if "scenarios" in config:
    config["scenarios"] = tuple(config["scenarios"])
  cfg = TrainConfig(steps=steps, **config)
  scenarios = [scenario_params(s, d.ctx.spec, d.emulator.ops) for s in cfg.scenarios]
  with bars(progress) as callback:
    if callback is not None:
      callback("collecting transitions", 0, 1)
    samples = collect(d.ctx, scenarios, cfg)
    if callback is not None:
      callback("collecting transitions", 1, 1)
    tick = None if callback is None else (lambda i: callback("training the policy", i, steps))
    result = train(d.ctx, samples, cfg, progress=tick)
  policies = make_policies(("learned",), learned_params=result.params, hidden=cfg.hidden)
  return policies["learned"][0]


class RunResult(NamedTuple):
  """A closed-loop run: one row per policy (``rpm.loop.summarize``), traces, and fp32/fp16/
  int8 accuracy on the same batches."""

  model: str
  scenario: str
  steps: int
  rows: list[dict]
  traces: dict
  reference: dict


def run(
    d: Any,
    policy: Any = None,
    *,
    steps: int = 200,
    baselines: Sequence[str] = BASELINES,
    seed: int = 0,
    progress: bool = False,
) -> RunResult:
  """Runs ``policy`` (as ``"learned"``) and the ``baselines`` in the closed loop of ``d``."""
  from aprec.rpm.compare import DEFAULT_MODE, compare, make_policies

  policies = make_policies(tuple(baselines))
  if policy is not None:
    policies["learned"] = (policy, DEFAULT_MODE)
  with bars(progress) as callback:
    done = []
    tick = (
        None
        if callback is None
        else (lambda name: (done.append(name), callback("closed loop", len(done), len(policies))))
    )
    rows, traces, reference = compare(
        d, policies, steps, seed=seed, progress=tick, time_decisions=False
    )
  return RunResult(
      model=d.model.name,
      scenario=d.scenario,
      steps=steps,
      rows=rows,
      traces=traces,
      reference=reference,
  )


def report(result: RunResult) -> str:
  """A markdown report of a run: the policies' table and the uniform references."""
  from aprec.app.experiment import markdown_table

  ref = result.reference
  return "\n".join(
      [
          f"## {result.model} / {result.scenario}: {result.steps} steps",
          "",
          f"fp32 accuracy {ref['fp32_accuracy']:.4f}, fp16 {ref['fp16_accuracy']:.4f}, "
          f"int8 {ref['int8_accuracy']:.4f} on the same batches.",
          "",
          markdown_table(result.rows),
      ]
  )
