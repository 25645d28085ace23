"""Picks among trained ``minilm_l6`` plan selectors without touching held-out data.

Every candidate policy (a directory from ``scripts/train_minilm_policy.py``) runs the
adaptation study's closed loop (``aprec.rpm.study.run_seed``) on *training-side* scenario
draws (seeds 7, 8, 9: neither the training seed 0 nor the held-out 1001–1005), with the
quality measured as in the study but on the docstring task's **validation** split
(``--quality val``, the default; no test text is embedded) or predicted by the sensitivity
profile (``--quality profile``: minus the summed Δloss of what runs), and the gain
recovered is computed as in the study. The policy with the best mean gain over the study
scenarios is the one to ship.

  python scripts/select_minilm_policy.py DIR [DIR ...] [--out runs/minilm/selection.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from aprec import models  # noqa: E402
from aprec.hardware import scenarios  # noqa: E402
from aprec.rpm import lookup, policy_io, study  # noqa: E402
from aprec.rpm.context import make_context  # noqa: E402

SELECTION_SEEDS = (7, 8, 9)


class ProfileQuality:
  """A ``StepQuality`` stand-in: minus the profile's summed Δloss of each step's assignment."""

  metric, n_batches, pairs_per_batch = "minus_delta_loss", 1, 64

  def __init__(self, delta_loss: np.ndarray):
    self.delta_loss = np.asarray(delta_loss)

  def per_step(self, assignments, first_step: int = 0) -> np.ndarray:
    a = np.asarray(assignments)
    return -self.delta_loss[np.arange(a.shape[1])[None], a].sum(1)

  def table(self, candidates) -> np.ndarray:
    return self.per_step(candidates)[:, None]


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("policies", nargs="+", type=pathlib.Path)
  ap.add_argument("--steps", type=int, default=300)
  ap.add_argument("--quality", choices=("val", "profile"), default="val")
  ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/minilm/selection.json"))
  args = ap.parse_args()
  model = models.load("minilm_l6")
  val = study.held_out_quality(model, split="val")  # its emulator also gives the op table
  ops = val.emulator.ops
  spec = study.study_spec()
  scenario_params = {n: scenarios.scenario(n, spec, ops) for n in scenarios.STUDY_SCENARIOS}
  out = {"seeds": list(SELECTION_SEEDS), "quality": args.quality, "policies": {}}
  for directory in args.policies:
    params_net, meta = policy_io.load(directory, ops, kind="plan_selector")
    table = np.load(directory / study.TABLE_FILE)
    quality = val if args.quality == "val" else ProfileQuality(table)
    gains = {}
    for name, params in scenario_params.items():
      ctx = make_context(ops, spec, table, float(params.step_period_s))
      candidates = lookup.planned_candidates(ctx, states=study.PLAN_STATES)
      s = study.Study(ctx, params, candidates, quality.table(candidates), None, quality)
      policies = {"learned": study.learned_policy(params_net, int(meta["hidden"]), candidates)}
      per_seed = []
      for seed in SELECTION_SEEDS:
        q = {r["policy"]: r["quality"] for r in study.run_seed(s, policies, seed, args.steps).rows}
        per_seed.append(study.gain_recovered(q["learned"], q["static*"], q["hindsight"]))
      gains[name] = float(np.mean(per_seed))
    gains["mean"] = float(np.mean([gains[n] for n in scenario_params]))
    out["policies"][str(directory)] = {
        "switch_weight": meta["config"].get("switch_weight"),
        **gains,
    }
    print(directory, {k: round(v, 3) for k, v in gains.items()})
  best = max(out["policies"], key=lambda d: out["policies"][d]["mean"])
  out["best"] = best
  print(f"best: {best}")
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
