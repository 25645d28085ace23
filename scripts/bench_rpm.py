"""Benchmark of the runtime precision manager: the evaluation table, written as JSON.

One row per model × scenario × policy (accuracy, energy_per_inference_j,
power_violation_frac, buffer_violation_frac, deadline_miss_frac, switches_per_step,
decision_us), fp32 accuracy per model and closed-loop steps per second. Uses the shipped
policies (``checkpoints/<model>/policy``) and profiles.

``minilm_l6`` runs the adaptation study (``aprec.rpm.study``) on the study scenarios over
the held-out seeds: rows carry ``quality`` (the task metric, ``quality_metric``) instead of
accuracy, and ``"ratios"`` gets ``gain_recovered_<model>_<scenario>`` (mean over seeds),
``gain_recovered_ci_...`` (95 % half-width), ``static_star_gap_...`` (hindsight − static*
quality), ``violations_...`` (learned minus causal oracle, fraction of steps) and
``learned_over_lookup_...``; figures go to ``runs/bench/rpm_study/``.

  python scripts/bench_rpm.py [--models digits_cnn digits_vit minilm_l6] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import pickle
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
from aprec.hardware.scenarios import STUDY_SCENARIOS  # noqa: E402
from aprec.rpm import study, study_figures  # noqa: E402

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


STUDY_COLUMNS = (
    "policy",
    "quality",
    "violation_frac",
    "power_violation_frac",
    "deadline_miss_frac",
    "energy_per_inference_j",
    "switches_per_step",
    "distinct_assignments",
    "decision_us",
)


def steps_per_second(d, policy, n_steps: int) -> float:
  """Closed-loop simulator + policy steps per second (jitted scan, compile excluded)."""
  n = d.ctx.n_ops
  args = (d.params, d.ctx, policy, np.full(n, mode_index("fp16")))
  jax.block_until_ready(run_episode(*args, jax.random.key(0), n_steps))
  start = time.perf_counter()
  jax.block_until_ready(run_episode(*args, jax.random.key(1), n_steps))
  return n_steps / (time.perf_counter() - start)


def run_study(name, model, args, result, con) -> None:
  """The adaptation study of an embedder on every study scenario (module doc)."""
  quality = study.held_out_quality(model)
  # (assignment, batch) -> metric, kept between runs: it depends on nothing else
  cache_file = args.out.parent / "rpm_study" / f"quality_cache_{name}.pkl"
  if cache_file.is_file():
    quality.cache.update(pickle.loads(cache_file.read_bytes()))
  policy_dir = pathlib.Path(args.policy or shipped_policy_dir(name))
  # the table the policy was trained with travels with it
  trained_with = policy_dir / study.TABLE_FILE
  table, source = study.delta_loss_table(
      model, quality, args.table or (trained_with if trained_with.is_file() else None)
  )
  learned, meta = policy_io.load(policy_dir, quality.emulator, kind="plan_selector")
  result["study"][name] = {
      "delta_loss_source": source,
      "policy": str(policy_dir),
      "seeds": args.seeds,
  }
  figures_dir = args.out.parent / "rpm_study"
  op_names = [op.name for op in quality.emulator.ops]
  for scenario in args.study_scenarios:
    t0 = time.perf_counter()
    s = study.make_study(quality, table, scenario)
    policies = study.causal_policies(learned, int(meta["hidden"]), s.table, s.candidates)
    per_seed = []
    for i, seed in enumerate(args.seeds):
      res = study.run_seed(
          s, policies, seed, args.steps, time_decisions=("learned", "lookup") if i == 0 else ()
      )
      per_seed.append(res)
      if i == 0:
        tag = f"{name}_{scenario}"
        study_figures.timeline(
            res.traces, res.quality, figures_dir / f"timeline_{tag}.png", f"{tag}, seed {seed}"
        )
        study_figures.learned_modes(
            res.traces["learned"], op_names, figures_dir / f"learned_modes_{tag}.png", tag
        )
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_bytes(pickle.dumps(quality.cache))
    summary = study.summarize_seeds(per_seed, op_names)
    key = f"{name}_{scenario}"
    for ratio in (
        "gain_recovered",
        "gain_recovered_ci",
        "static_star_gap",
        "violations",
        "learned_over_lookup",
    ):
      result["ratios"][f"{ratio}_{key}"] = summary[ratio]
    result["study"][name][scenario] = {
        **{k: v for k, v in summary.items() if k != "rows"},
        "candidates": len(s.candidates),
        "evaluations": quality.evaluations,
        "seconds": time.perf_counter() - t0,
    }
    for r in summary["rows"]:
      result["rows"].append(
          {"model": name, "scenario": scenario, "quality_metric": quality.metric, **r}
      )
    con.print(
        report.rows_table(
            [{k: r[k] for k in STUDY_COLUMNS} for r in summary["rows"]],
            title=f"{name} / {scenario} ({quality.metric}, mean of {len(args.seeds)} seeds)",
            formats={k: ".4f" for k in STUDY_COLUMNS if k != "policy"},
        )
    )
    con.print(
        f"gain recovered {summary['gain_recovered']:.3f} ± {summary['gain_recovered_ci']:.3f}, "
        f"gap {summary['static_star_gap']:.4f} ({summary['static_star_gap_se']:.1f} SE), "
        f"violations learned − oracle {summary['violations']:+.3f}, "
        f"learned/lookup {summary['learned_over_lookup']:.4f}, beats hindsight: "
        f"{summary['beats_hindsight']}"
    )


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--models", nargs="+", default=[*models.NAMES, *models.EMBEDDERS])
  ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
  ap.add_argument("--study-scenarios", nargs="+", default=list(STUDY_SCENARIOS))
  ap.add_argument("--steps", type=int, default=300)
  ap.add_argument("--seeds", type=int, nargs="+", default=list(study.HELD_OUT_SEEDS))
  ap.add_argument("--table", type=pathlib.Path, default=None, help="study Δloss .npy")
  ap.add_argument("--policy", type=pathlib.Path, default=None, help="study policy directory")
  ap.add_argument(
      "--merge", action="store_true", help="keep the other models' rows and ratios in --out"
  )
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
      "ratios": {},
      "study": {},
  }
  start = time.perf_counter()
  for name in args.models:
    model = models.load(name)
    if name in models.EMBEDDERS:
      run_study(name, model, args, result, con)
      continue
    table, source = sensitivity_table(model, default_profile_dir(name))
    d0 = deploy(model, args.scenarios[0], table=table, profile_source=source)
    params, meta = policy_io.load(shipped_policy_dir(name), d0.emulator.ops, kind="per_op")
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
  if args.merge and args.out.is_file():
    old = json.loads(args.out.read_text())
    ran = set(args.models)
    result["rows"] = [r for r in old.get("rows", []) if r["model"] not in ran] + result["rows"]
    for k in ("fp32_accuracy", "closed_loop_steps_per_s", "study"):
      result[k] = {**{m: v for m, v in old.get(k, {}).items() if m not in ran}, **result[k]}
    result["ratios"] = {
        **{k: v for k, v in old.get("ratios", {}).items() if not any(m in k for m in ran)},
        **result["ratios"],
    }
  con.print(f"closed-loop steps/s: {json.dumps(result['closed_loop_steps_per_s'])}")
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(result, indent=2))
  con.print(f"wrote {args.out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
  main()
