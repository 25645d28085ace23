"""Trains the ``learned`` RPM policy for ``minilm_l6`` on the study scenarios; saves it.

The scenarios (``aprec.hardware.scenarios.STUDY_SCENARIOS``) were fixed before training.
Training draws come from ``study.TRAIN_SEED``; the study evaluates on
``study.HELD_OUT_SEEDS`` only.

  python scripts/train_minilm_policy.py [--out checkpoints/minilm_l6/policy] [--overwrite]
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from aprec import models  # noqa: E402
from aprec.hardware import scenarios  # noqa: E402
from aprec.rpm import policy_io, study, train  # noqa: E402
from aprec.rpm.context import make_context  # noqa: E402


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("checkpoints/minilm_l6/policy"))
  ap.add_argument("--table", type=pathlib.Path, default=None, help="a saved Δloss .npy")
  ap.add_argument("--steps", type=int, default=train.TrainConfig.steps)
  ap.add_argument("--penalty", type=float, default=train.TrainConfig.penalty)
  ap.add_argument("--overwrite", action="store_true")
  args = ap.parse_args()
  start = time.perf_counter()
  model = models.load("minilm_l6")
  quality = study.held_out_quality(model)
  table, source = study.delta_loss_table(model, quality, args.table)
  spec = study.study_spec()
  params = [scenarios.scenario(s, spec, quality.emulator.ops) for s in scenarios.STUDY_SCENARIOS]
  ctx = make_context(quality.emulator.ops, spec, table, float(params[0].step_period_s))
  config = train.TrainConfig(
      steps=args.steps,
      penalty=args.penalty,
      scenarios=scenarios.STUDY_SCENARIOS,
      episodes_per_scenario=8,
      episode_steps=300,
      seed=study.TRAIN_SEED,
  )
  samples = train.collect(ctx, params, config)
  print(f"collected {samples.current.shape[0]} samples ({time.perf_counter() - start:.0f} s)")
  result = train.train(ctx, samples, config)
  print(f"trained in {result.seconds:.0f} s; last: {result.history[-1]}")
  policy_io.save(
      args.out,
      result.params,
      model="minilm_l6",
      ops=quality.emulator.ops,
      hidden=config.hidden,
      config={**dataclasses.asdict(config), "delta_loss_source": source},
      history=result.history,
      overwrite=args.overwrite,
      numerics=quality.emulator,
      attachments={study.TABLE_FILE: lambda path: np.save(path, table)},
  )
  print(f"wrote {args.out} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
  main()
