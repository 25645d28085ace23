"""Picks among trained ``minilm_l6`` plan selectors without touching held-out data.

Every candidate policy (a directory from ``scripts/train_minilm_policy.py``) runs the
adaptation study's closed loop (``aprec.rpm.study.run_seed``) on *training-side* scenario
draws (seeds 7-12: neither the training seed 0 nor the held-out 1001–1005), with the
quality measured as in the study but on the docstring task's **validation** split
(``--quality val``, the default; no test text is embedded) or predicted by the sensitivity
profile (``--quality profile``: minus the summed Δloss of what runs). Per scenario it
reports the study's figures: the gain recovered, the steps over the cap or past the
deadline beyond the causal oracle's, and the quality over ``lookup``'s (oracle and lookup
run once per draw). The one to ship: of the policies within the study's violation bound
(``MAX_EXTRA_VIOLATIONS`` over the oracle's, in every scenario), the best mean gain over
the study scenarios (of all, when none is within it).

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

SELECTION_SEEDS = (7, 8, 9, 10, 11, 12)
MAX_EXTRA_VIOLATIONS = 0.01


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
  baselines = {}  # (table file, scenario, seed) -> {policy: (quality, violation fraction)}
  for directory in args.policies:
    params_net, meta = policy_io.load(directory, ops, kind="plan_selector")
    table = np.load(directory / study.TABLE_FILE)
    quality = val if args.quality == "val" else ProfileQuality(table)
    scores = {}
    for name, params in scenario_params.items():
      ctx = make_context(ops, spec, table, float(params.step_period_s))
      candidates = lookup.planned_candidates(ctx, states=study.PLAN_STATES)
      s = study.Study(ctx, params, candidates, quality.table(candidates), None, quality)
      learned = {"learned": study.learned_policy(params_net, int(meta["hidden"]), candidates)}
      missing = [k for k in SELECTION_SEEDS if (table.tobytes(), name, k) not in baselines]
      if missing:  # the yardsticks, oracle and lookup: once per Δloss table and draw
        causal = study.causal_policies(None, 0, study.lookup_table(ctx, params), candidates)
        pols = {n: causal[n] for n in ("oracle", "lookup")}
        for seed in missing:
          rows = study.run_seed(s, pols, seed, args.steps).rows
          baselines[table.tobytes(), name, seed] = {
              r["policy"]: (r["quality"], r["violation_frac"]) for r in rows
          }
      gains, extra, over_lookup = [], [], []
      for seed in SELECTION_SEEDS:
        base = baselines[table.tobytes(), name, seed]
        (row,) = study.run_policies(s, learned, seed, args.steps).rows
        gains.append(study.gain_recovered(row["quality"], base["static*"][0], base["hindsight"][0]))
        extra.append(row["violation_frac"] - base["oracle"][1])
        over_lookup.append(row["quality"] / base["lookup"][0])
      scores[name] = {
          "gain_recovered": float(np.mean(gains)),
          "violations_over_oracle": float(np.mean(extra)),
          "learned_over_lookup": float(np.mean(over_lookup)),
      }
    mean_gain = float(np.mean([v["gain_recovered"] for v in scores.values()]))
    within = all(v["violations_over_oracle"] <= MAX_EXTRA_VIOLATIONS for v in scores.values())
    out["policies"][str(directory)] = {
        "config": {k: meta["config"].get(k) for k in ("penalty", "switch_weight", "dagger_rounds")},
        "scenarios": scores,
        "mean_gain": mean_gain,
        "within_violation_bound": within,
    }
    print(
        directory,
        f"mean gain {mean_gain:.3f}",
        "within" if within else "OVER",
        {n: tuple(round(x, 3) for x in v.values()) for n, v in scores.items()},
    )
  eligible = [d for d, r in out["policies"].items() if r["within_violation_bound"]]
  best = max(eligible or out["policies"], key=lambda d: out["policies"][d]["mean_gain"])
  out["best"] = best
  print(f"best: {best}")
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
