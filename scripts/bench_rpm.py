"""Benchmark of the runtime precision manager: the evaluation table, written as JSON.

One row per model × scenario × policy (accuracy, energy_per_inference_j,
power_violation_frac, buffer_violation_frac, deadline_miss_frac, switches_per_step,
decision_us), fp32 accuracy per model and closed-loop steps per second. Uses the shipped
policies (``checkpoints/<model>/policy``) and profiles.

  python scripts/bench_rpm.py [--models digits_cnn digits_vit] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from aprec import models  # noqa: E402
from aprec.app import tables as report  # noqa: E402
from aprec.emulator.formats import mode_index  # noqa: E402
from aprec.versions import library_versions  # noqa: E402
from aprec.rpm import policy_io  # noqa: E402
from aprec.app.rpm_demo import shipped_policy_dir  # noqa: E402
from aprec.app.inputs import default_profile_dir  # noqa: E402
from aprec.rpm.deployment import SCENARIOS, deploy, sensitivity_table  # noqa: E402
from aprec.rpm.compare import POLICIES, compare, make_policies  # noqa: E402
from aprec.rpm.loop import run_episode  # noqa: E402
from aprec.app.experiment import rich_table  # noqa: E402

FIELDS = (
    "accuracy",
    "energy_per_inference_j",
    "power_violation_frac",
    "buffer_violation_frac",
    "deadline_miss_frac",
    "switches_per_step",
    "decision_us",
    "fallback_frac",
)


def steps_per_second(d, policy, n_steps: int) -> float:
  """Closed-loop simulator + policy steps per second (jitted scan, compile excluded)."""
  n = d.ctx.n_ops
  args = (d.params, d.ctx, policy, np.full(n, mode_index("fp16")))
  jax.block_until_ready(run_episode(*args, jax.random.key(0), n_steps))
  start = time.perf_counter()
  jax.block_until_ready(run_episode(*args, jax.random.key(1), n_steps))
  return n_steps / (time.perf_counter() - start)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--models", nargs="+", default=list(models.NAMES))
  ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
  ap.add_argument("--steps", type=int, default=300)
  ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/bench/rpm.json"))
  args = ap.parse_args()
  con = report.console()
  result = {
      "platform": platform.platform(),
      "devices": [str(d) for d in jax.devices()],
      "versions": library_versions(),
      "steps": args.steps,
      "rows": [],
      "fp32_accuracy": {},
      "closed_loop_steps_per_s": {},
  }
  start = time.perf_counter()
  for name in args.models:
    model = models.load(name)
    table, source = sensitivity_table(model, default_profile_dir(name))
    d0 = deploy(model, args.scenarios[0], table=table, profile_source=source)
    params, meta = policy_io.load(shipped_policy_dir(name), d0.emulator.ops)
    policies = make_policies(POLICIES, learned_params=params, hidden=int(meta["hidden"]))
    result["closed_loop_steps_per_s"][name] = {
        p: steps_per_second(d0, policies[p][0], 2000) for p in ("greedy", "learned", "oracle")
    }
    for scenario in args.scenarios:
      d = deploy(model, scenario, table=table, profile_source=source)
      rows, _, reference = compare(d, policies, args.steps)
      result["fp32_accuracy"][name] = reference["fp32_accuracy"]
      for r in rows:
        result["rows"].append(
            {
                "model": name,
                "scenario": scenario,
                "policy": r["policy"],
                **{k: r[k] for k in FIELDS},
            }
        )
      con.print(rich_table(rows, f"{name} / {scenario} (fp32 {reference['fp32_accuracy']:.4f})"))
  result["seconds"] = time.perf_counter() - start
  con.print(f"closed-loop steps/s: {json.dumps(result['closed_loop_steps_per_s'])}")
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(result, indent=2))
  con.print(f"wrote {args.out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
  main()
