"""One model deployed on one NNP: emulator at the step batch, profile, scenario, context.

The closed loop runs ``batch_size`` test images per step (default 32): at the test split's
360 images the digits CNN's working set is ~1.06x the edge NPU's 1 MiB buffer even at
int8, so every step would spill to DRAM whatever the RPM did; at 32 it is ~0.2x at fp16,
and co-tenant jobs decide whether it fits.

``sensitivity_table(model)`` prefers the shipped profile
(``checkpoints/<model>/profile/``); without one it measures the perturbation table on the
validation split: ``Δloss[i, m] = loss(op i at m, the rest fp32) - loss(all fp32)``.

Example:
  >>> d = deploy("digits_cnn", "contention")
  >>> d.ctx.n_ops, d.batches.x.shape
  (4, (11, 32, 8, 8, 1))
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import numpy as np

from aprec.hardware import specs as hardware
from aprec.hardware import simulator
from aprec.emulator.formats import N_MODES
from aprec.rpm.context import Context, make_context
from aprec.emulator import batching
from aprec.emulator.batching import Batches

FAULT_SCENARIO = "faults"  # contention with the severe sensor-fault preset
SCENARIOS = (*simulator.SCENARIOS, FAULT_SCENARIO)


def scenario_params(name: str, spec, ops) -> simulator.ScenarioParams:
  """``simulator.scenario``, plus ``"faults"``: contention with severe sensor faults."""
  if name == FAULT_SCENARIO:
    return simulator.scenario("contention", spec, ops, faults="severe")
  if name not in simulator.SCENARIOS:
    raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
  return simulator.scenario(name, spec, ops)


def sensitivity_table(model: Any, *, method: str = "auto",
                      profile_dir: str | pathlib.Path | None = None) -> tuple[np.ndarray, str]:
  """``(Δloss [n_ops, n_modes], where it came from)`` for a loaded model (see module doc).

  ``method="auto"`` prefers the shipped profile; ``"perturbation"`` always measures.
  """
  if method not in ("auto", "perturbation"):
    raise ValueError(f"profile method {method!r}; use auto or perturbation")
  from aprec import models
  from aprec.emulator.scoring import Evaluator
  from aprec.sensitivity.profile import load as load_profile
  evaluator = Evaluator.for_model(model, "val")
  ops = evaluator.emulator.ops
  directory = pathlib.Path(profile_dir) if profile_dir else (
      models.default_checkpoint_dir() / model.name / "profile")
  if method == "auto" and (directory / "profile.json").is_file():
    profile = load_profile(directory, expect=ops)  # raises ProfileError on a mismatch
    return np.asarray(profile.delta_loss, np.float64), f"profile {directory} ({profile.method})"
  n = len(ops)
  rows = [np.zeros(n, np.int32)]
  for i in range(n):
    for m in range(N_MODES):
      a = np.zeros(n, np.int32)
      a[i] = m
      rows.append(a)
  measured = evaluator.measure(np.stack(rows))
  table = (measured.loss[1:] - measured.loss[0]).reshape(n, N_MODES)
  table[:, 0] = 0.0
  return table, "perturbation on the val split (no shipped profile)"


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


def deploy(model_name: str, scenario: str, *, spec_name: str = "edge_npu", batch_size: int = 32,
           table: np.ndarray | None = None, profile_source: str = "given",
           model: Any = None) -> Deployment:
  """Loads ``model_name`` (unless ``model`` is given) and builds its deployment."""
  from aprec import models
  from aprec.emulator.core import Emulator
  if batch_size <= 0:
    raise ValueError(f"batch_size = {batch_size}; expected a positive number of images")
  model = models.load(model_name) if model is None else model
  test = model.data.test
  emu = Emulator(model.apply_fn, model.params, test.x[:batch_size])
  spec = hardware.get_spec(spec_name)
  params = scenario_params(scenario, spec, emu.ops)
  if table is None:
    table, profile_source = sensitivity_table(model)
  ctx = make_context(emu.ops, spec, table, float(params.step_period_s))
  return Deployment(model=model, emulator=emu, ctx=ctx, params=params,
                    batches=batching.split(test.x, test.y, batch_size), batch_size=batch_size,
                    scenario=scenario, profile_source=profile_source, spec_name=spec_name)
