"""Experiment configs of the RPM: one JSON file per experiment, ``--set key=value`` overrides.

Example:
  >>> c = resolve({"model": "digits_cnn"}, ["steps=50", "train.steps=10"])
  >>> c.steps, c.train.steps
  (50, 10)
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from aprec.hardware import specs as hardware
from aprec.rpm.deployment import SCENARIOS
from aprec.rpm.compare import POLICIES
from aprec.rpm.train import TrainConfig

PROFILE_METHODS = ("auto", "perturbation")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
  """A reproducible closed-loop experiment.

  Attributes:
    model: a reference model (``digits_cnn``, ``digits_vit``) or
      ``package.module:factory`` (see ``aprec.models.load``).
    profile: ``auto`` (the shipped profile if there is one, else perturbation) or
      ``perturbation`` (always measure it).
    spec: NNP preset name, a JSON spec file (``aprec spec edge_npu --out my_npu.json``)
      or, in Python, an ``NNPSpec``; in a config file also an inline JSON object.
    scenarios: scenarios to run (``aprec.rpm.deployment.SCENARIOS``; ``faults`` is
      contention with severe sensor faults).
    policies: policies to compare.
    steps: closed-loop steps per run.
    batch_size: test images per step.
    seed: seed of the scenarios (training has its own, ``train.seed``).
    policy_checkpoint: a trained policy to load instead of training ("" = train).
    train: training hyper-parameters.
  """

  model: str = "digits_cnn"
  profile: str = "auto"
  spec: str | hardware.NNPSpec = "edge_npu"
  scenarios: tuple[str, ...] = ("contention",)
  policies: tuple[str, ...] = tuple(POLICIES)
  steps: int = 300
  batch_size: int = 32
  seed: int = 0
  policy_checkpoint: str = ""
  train: TrainConfig = TrainConfig()

  def __post_init__(self):
    from aprec import models

    models.check_ref(self.model)
    if self.profile not in PROFILE_METHODS:
      raise ValueError(f"profile = {self.profile!r}; use one of {', '.join(PROFILE_METHODS)}")
    hardware.get_spec(self.spec)
    for key in ("scenarios", "policies"):
      values = getattr(self, key)
      repeated = sorted({v for v in values if values.count(v) > 1})
      if repeated:
        raise ValueError(
            f"{key} = {list(values)} names {repeated} more than once; list " "each once"
        )
    for s in self.scenarios:
      if s not in SCENARIOS:
        raise ValueError(f"scenario {s!r} unknown; known: {', '.join(SCENARIOS)}")
    for p in self.policies:
      if p not in POLICIES:
        raise ValueError(f"policy {p!r} unknown; known: {', '.join(POLICIES)}")
    if not self.scenarios or not self.policies:
      raise ValueError("scenarios and policies must each name at least one entry")
    if not 1 <= self.steps <= 100_000:
      raise ValueError(f"steps = {self.steps}; expected 1..100000")
    if not 1 <= self.batch_size <= 360:
      raise ValueError(f"batch_size = {self.batch_size}; expected 1..360 (the test split)")

  def to_dict(self) -> dict:
    """The JSON form (a spec object as ``spec_to_dict``, a name or file as given)."""
    from aprec.hardware.spec_io import spec_to_dict

    spec = spec_to_dict(self.spec) if isinstance(self.spec, hardware.NNPSpec) else self.spec
    return {**dataclasses.asdict(dataclasses.replace(self, spec="edge_npu")), "spec": spec}


def _coerce(value: Any, like: Any, key: str) -> Any:
  if key == "spec" and isinstance(value, (dict, hardware.NNPSpec)):
    from aprec.hardware.spec_io import spec_from_dict

    return value if isinstance(value, hardware.NNPSpec) else spec_from_dict(value, "spec")
  if isinstance(like, bool):
    if isinstance(value, str):
      if value.lower() in ("true", "1", "yes"):
        return True
      if value.lower() in ("false", "0", "no"):
        return False
    if isinstance(value, bool):
      return value
    raise ValueError(f"{key} = {value!r}; expected true or false")
  if isinstance(like, tuple):
    if isinstance(value, str):
      value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
      raise ValueError(f"{key} = {value!r}; expected a list")
    return tuple(value)
  try:
    if isinstance(value, bool) or isinstance(value, (list, dict)):
      raise ValueError  # JSON true/false or a container is no number
    if isinstance(like, int):
      if isinstance(value, float) and not value.is_integer():
        raise ValueError
      return int(value)
    if isinstance(like, float):
      number = float(value)
      if not math.isfinite(number):
        raise ValueError
      return number
  except (TypeError, ValueError):
    kind = "finite number" if isinstance(like, float) else "whole number"
    raise ValueError(f"{key} = {value!r}; expected a {kind}") from None
  if not isinstance(value, str):
    raise ValueError(f"{key} = {value!r}; expected a string")
  return value


def _build(cls, data: Mapping[str, Any], prefix: str = ""):
  fields = {f.name: f for f in dataclasses.fields(cls)}
  defaults = cls()
  unknown = sorted(set(data) - set(fields))
  if unknown:
    raise ValueError(
        f"unknown config key(s) {[prefix + k for k in unknown]}; known: "
        f"{', '.join(prefix + k for k in fields)}"
    )
  kw = {}
  for k, v in data.items():
    like = getattr(defaults, k)
    if dataclasses.is_dataclass(like):
      if not isinstance(v, Mapping):
        raise ValueError(f"{prefix + k} must be a mapping of its own keys")
      kw[k] = _build(type(like), v, prefix + k + ".")
    else:
      kw[k] = _coerce(v, like, prefix + k)
  return cls(**kw)


def resolve(data: Mapping[str, Any], overrides: Sequence[str] = ()) -> ExperimentConfig:
  """A validated config from a mapping plus ``key=value`` overrides (dotted keys nest)."""
  data = dict(data)
  if isinstance(data.get("spec"), hardware.NNPSpec):  # travels as its JSON form
    from aprec.hardware.spec_io import spec_to_dict

    data["spec"] = spec_to_dict(data["spec"])
  merged = json.loads(json.dumps(data))
  for item in overrides:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise ValueError(f"cannot read override {item!r}; write KEY=VALUE, e.g. train.steps=100")
    parts = key.strip().split(".")
    node = merged
    for p in parts[:-1]:
      node = node.setdefault(p, {})
      if not isinstance(node, dict):
        raise ValueError(f"override {item!r}: {p} is not a section")
    node[parts[-1]] = value.strip()
  return _build(ExperimentConfig, merged)


def load(path: str | pathlib.Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
  """Reads a JSON experiment config (see ``experiments/``) and applies overrides."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no experiment config at {path}; see experiments/*.json")
  try:
    data = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from None
  if not isinstance(data, dict):
    raise ValueError(f"{path} must hold a JSON object of config keys")
  return resolve(data, overrides)
