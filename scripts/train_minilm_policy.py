"""Trains the ``learned`` RPM policy for ``minilm_l6`` (the plan selector) on the study
scenarios; saves it.

The scenarios (``aprec.hardware.scenarios.STUDY_SCENARIOS``) were fixed before training.
Training draws come from ``study.TRAIN_SEED``; the study evaluates on
``study.HELD_OUT_SEEDS`` only. The selector chooses among each scenario's candidate plans
(``lookup.planned_candidates`` at ``study.PLAN_STATES``), labelled step by step by the
simulator (``aprec.rpm.train_selector``).

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
from aprec.rpm import lookup, policy_io, study, train_selector  # noqa: E402
from aprec.rpm.context import make_context  # noqa: E402


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("checkpoints/minilm_l6/policy"))
  ap.add_argument("--table", type=pathlib.Path, default=None, help="a saved Δloss .npy")
  ap.add_argument(
      "--table-source", default=None, help="where --table came from (recorded in policy.json)"
  )
  ap.add_argument("--steps", type=int, default=train_selector.SelectorConfig.steps)
  ap.add_argument("--penalty", type=float, default=train_selector.SelectorConfig.penalty)
  ap.add_argument(
      "--switch-weight", type=float, default=train_selector.SelectorConfig.switch_weight
  )
  ap.add_argument("--dagger-rounds", type=int, default=train_selector.SelectorConfig.dagger_rounds)
  ap.add_argument("--explore", type=float, default=train_selector.SelectorConfig.explore)
  ap.add_argument("--overwrite", action="store_true")
  args = ap.parse_args()
  start = time.perf_counter()
  model = models.load("minilm_l6")
  quality = study.held_out_quality(model)
  table, source = study.delta_loss_table(model, quality, args.table)
  source = args.table_source or source
  spec = study.study_spec()
  ops = quality.emulator.ops
  params = [scenarios.scenario(s, spec, ops) for s in scenarios.STUDY_SCENARIOS]
  ctxs = [make_context(ops, spec, table, float(p.step_period_s)) for p in params]
  banks = [lookup.planned_candidates(c, states=study.PLAN_STATES) for c in ctxs]
  config = train_selector.SelectorConfig(
      steps=args.steps,
      penalty=args.penalty,
      switch_weight=args.switch_weight,
      dagger_rounds=args.dagger_rounds,
      explore=args.explore,
      seed=study.TRAIN_SEED,
  )
  result, samples = train_selector.train_dagger(
      ctxs[0], params, banks, config, progress=lambda r, h: print(f"DAgger round {r}: {h}")
  )
  print(f"{samples.cost.shape[0]} samples ({time.perf_counter() - start:.0f} s)")
  print(f"trained in {result.seconds:.0f} s; last: {result.history[-1]}")
  policy_io.save(
      args.out,
      result.params,
      model="minilm_l6",
      ops=ops,
      hidden=config.hidden,
      kind="plan_selector",
      config={
          **dataclasses.asdict(config),
          "scenarios": list(scenarios.STUDY_SCENARIOS),
          "plan_states": [list(s) for s in study.PLAN_STATES],
          "delta_loss_source": source,
      },
      history=result.history,
      overwrite=args.overwrite,
      numerics=quality.emulator,
      attachments={study.TABLE_FILE: lambda path: np.save(path, table)},
  )
  print(f"wrote {args.out} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
  main()
