"""Tests for aprec/rpm/config.py, runner.py, cli.py, policy_io.py: bad input gives clear
errors and loses nothing; the same config and seed reproduce the same numbers."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from aprec.rpm import policy_io
from aprec.app import config
from aprec.app.experiment import run_experiment
from aprec.checkpoint import ArtifactExistsError

TINY = {
    "model": "digits_cnn",
    "scenarios": ["contention"],
    "steps": 12,
    "policies": ["static_fp16", "greedy", "learned"],
    "train": {
        "steps": 4,
        "batch_size": 32,
        "episodes_per_scenario": 1,
        "episode_steps": 20,
        "scenarios": ["contention"],
        "hidden": 16,
    },
}


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
  with pytest.raises(ValueError, match="unknown config key"):
    config.resolve({"modle": "digits_cnn"})
  with pytest.raises(ValueError, match="train.lr"):
    config.resolve({}, ["train.lr=0.1"])
  with pytest.raises(ValueError, match="steps"):
    config.resolve({"steps": 0})
  with pytest.raises(ValueError, match="scenario"):
    config.resolve({"scenarios": ["moon"]})
  with pytest.raises(ValueError, match="KEY=VALUE"):
    config.resolve({}, ["steps"])
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(ValueError, match="not valid JSON"):
    config.load(bad)
  c = config.resolve({}, ["steps=7", "scenarios=thermal,burst", "train.margin=0.1"])
  assert (c.steps, c.scenarios, c.train.margin) == (7, ("thermal", "burst"), 0.1)


def test_shipped_experiment_configs_load():
  root = pathlib.Path(__file__).resolve().parents[2] / "experiments"
  for path in sorted(root.glob("rpm_*.json")):
    config.load(path)


@pytest.mark.slow
def test_run_reproduces_and_never_overwrites(tmp_path):
  """Same config and seed, same numbers (training curve and closed-loop rows); runs are
  never overwritten or lost."""
  cfg = config.resolve(TINY)
  a = run_experiment(cfg, tmp_path / "a", time_decisions=False)
  b = run_experiment(cfg, tmp_path / "b", time_decisions=False)
  strip = lambda rows: [{k: v for k, v in r.items() if k != "decision_us"} for r in rows]
  assert strip(a["rows"]) == strip(b["rows"])
  assert a["training_curve"] == b["training_curve"]
  for name in ("config.json", "versions.json", "summary.json", "metrics.jsonl", "report.md"):
    assert (tmp_path / "a" / name).is_file()
  assert json.loads((tmp_path / "a" / "config.json").read_text())["steps"] == 12
  before = (tmp_path / "a" / "summary.json").read_text()
  with pytest.raises(ArtifactExistsError, match="--overwrite"):
    run_experiment(cfg, tmp_path / "a", time_decisions=False)
  assert (tmp_path / "a" / "summary.json").read_text() == before  # nothing lost
  # a policy checkpoint for another op table is refused, naming the fingerprints
  from aprec.hardware.fit import dot_op

  with pytest.raises(policy_io.PolicyCheckpointError, match="op table"):
    policy_io.load(tmp_path / "a" / "policy", [dot_op(2, 3, 4)])
  with pytest.raises(FileNotFoundError):
    policy_io.load(tmp_path / "nowhere", [dot_op(2, 3, 4)])
  # and a run that fails midway leaves the old one in place
  with pytest.raises(FileNotFoundError):
    run_experiment(
        config.resolve({**TINY, "policy_checkpoint": str(tmp_path / "nowhere2")}),
        tmp_path / "a",
        overwrite=True,
        time_decisions=False,
    )
  assert (tmp_path / "a" / "summary.json").read_text() == before


def test_profile_for_another_model_is_refused(tmp_path):
  from aprec import models
  from aprec.hardware.fit import dot_op
  from aprec.sensitivity.profile import Estimate, ProfileError, make_profile, save
  from aprec.rpm.deployment import sensitivity_table

  est = Estimate(delta_loss=np.zeros((1, 7)), stderr=np.zeros((1, 7)), n_samples=1)
  p = make_profile(
      model="toy",
      ops=[dot_op(2, 3, 4)],
      estimates={"perturbation": est},
      dataset="toy",
      n_batches=1,
      batch_size=1,
      baseline_loss=0.0,
      loss="ce",
  )
  save(p, tmp_path / "profile")
  with pytest.raises(ProfileError, match="different op table"):
    sensitivity_table(models.load("digits_cnn"), profile_dir=tmp_path / "profile")
