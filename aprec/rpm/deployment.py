"""One model deployed on one NNP: emulator at the step batch, profile, scenario, context.

The closed loop runs ``batch_size`` test images per step (default 32): at the test split's
360 images the digits CNN's working set is ~1.06x the edge NPU's 1 MiB buffer even at
int8, so every step would spill to DRAM whatever the RPM did; at 32 it is ~0.2x at fp16,
and co-tenant jobs decide whether it fits.

``deploy`` takes a loaded model (anything with ``name``, ``apply_fn``, ``params`` and
``data.test``/``data.val`` splits, e.g. ``aprec.models.load(...)``) and its Δloss table.
``sensitivity_table`` gives that table from a saved profile, or — with none — measures it
as the profile's own perturbation method does (``aprec.sensitivity.analyze_model``, the
default loss, on the validation split): one table, one definition.

Example:
  >>> import flax.linen as nn, jax, numpy as np, types
  >>> from aprec.models.data import Split
  >>> net = nn.Dense(3); x = np.ones((64, 5), np.float32); y = np.zeros(64, np.int32)
  >>> model = types.SimpleNamespace(name="toy", apply_fn=net.apply,
  ...     params=net.init(jax.random.key(0), x), data=types.SimpleNamespace(test=Split(x, y)))
  >>> d = deploy(model, "steady", table=np.zeros((1, 7)))
  >>> d.ctx.n_ops, d.batches.x.shape
  (1, (2, 32, 5))
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import numpy as np

from aprec.emulator import inputs as inputs_lib
from aprec.hardware import specs as hardware
from aprec.hardware import scenarios, simulator
from aprec.emulator.core import Emulator
from aprec.rpm.context import Context, make_context
from aprec.emulator import batching
from aprec.emulator.batching import Batches

FAULT_SCENARIO = "faults"  # contention with the severe sensor-fault preset
SCENARIOS = (*scenarios.SCENARIOS, FAULT_SCENARIO)
KNOWN_SCENARIOS = (*SCENARIOS, *scenarios.STUDY_SCENARIOS)


def scenario_params(name: str, spec, ops) -> simulator.ScenarioParams:
  """``scenarios.scenario``, plus ``"faults"``: contention with severe sensor faults."""
  if name == FAULT_SCENARIO:
    return scenarios.scenario("contention", spec, ops, faults="severe")
  if name not in scenarios.SCENARIOS + scenarios.STUDY_SCENARIOS:
    raise ValueError(f"unknown scenario {name!r}; known: {', '.join(KNOWN_SCENARIOS)}")
  return scenarios.scenario(name, spec, ops)


def sensitivity_table(
    model: Any, profile_dir: str | pathlib.Path | None = None, *, method: str = "auto"
) -> tuple[np.ndarray, str]:
  """``(Δloss [n_ops, n_modes], where it came from)`` for a loaded model (see module doc).

  ``method="auto"`` reads the profile at ``profile_dir`` when there is one (it must match
  the model's op table); ``"perturbation"`` always measures.
  """
  from aprec.sensitivity import methods
  from aprec.sensitivity import profile as profile_lib

  if method not in ("auto", "perturbation"):
    raise ValueError(f"profile method {method!r}; use auto or perturbation")
  directory = None if profile_dir is None else pathlib.Path(profile_dir)
  if method == "auto" and directory is not None and (directory / "profile.json").is_file():
    emulator = Emulator(model.apply_fn, model.params, model.data.val.x)
    # raises ProfileError for another op table, other weights or other emulator settings
    profile = profile_lib.load(directory, expect=emulator, params=model.params)
    return np.asarray(profile.delta_loss, np.float64), f"profile {directory} ({profile.method})"
  measured = methods.analyze_model(model, methods="perturbation", split="val")
  return (
      np.asarray(measured.delta_loss, np.float64),
      f"perturbation ({measured.loss}) on the val split (no saved profile)",
  )


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Deployment:
  """Everything a closed-loop run needs for one model and scenario."""

  model: Any
  emulator: Any
  ctx: Context
  params: simulator.ScenarioParams
  batches: Batches
  batch_size: int
  scenario: str
  profile_source: str
  spec_name: str


def deploy(
    model: Any,
    scenario: str,
    *,
    table: np.ndarray,
    spec_name: str = "edge_npu",
    batch_size: int = 32,
    profile_source: str = "given",
) -> Deployment:
  """The deployment of a loaded ``model`` under ``scenario`` with Δloss ``table``."""
  if batch_size <= 0:
    raise ValueError(f"batch_size = {batch_size}; expected a positive number of images")
  test = model.data.test
  emu = Emulator(model.apply_fn, model.params, inputs_lib.take(test.x, slice(0, batch_size)))
  spec = hardware.get_spec(spec_name)
  params = scenario_params(scenario, spec, emu.ops)
  ctx = make_context(emu.ops, spec, np.asarray(table, np.float64), float(params.step_period_s))
  return Deployment(
      model=model,
      emulator=emu,
      ctx=ctx,
      params=params,
      batches=batching.split(test.x, test.y, batch_size),
      batch_size=batch_size,
      scenario=scenario,
      profile_source=profile_source,
      spec_name=spec_name,
  )
