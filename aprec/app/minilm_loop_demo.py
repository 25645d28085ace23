"""``aprec demo``'s MiniLM-L6 closed loop: every RPM policy on one draw of a study scenario.

The adaptation study (``aprec.rpm.study``, full run: ``scripts/bench_rpm.py``) shortened for
the demo's time budget: one scenario (``contention_swing``), one held-out seed, ``DEMO_STEPS``
steps, and one batch of 64 held-out pairs scored at every step (the study: 5 seeds, 300 steps,
two batches of 64). Every distinct (assignment, batch) is measured once and reused. Same
shipped policy, Δloss table, candidates and yardsticks (``static*``, ``hindsight``) as the study.
"""

from __future__ import annotations

import pathlib
from typing import Any

from aprec.app import tables

DEMO_SCENARIO = "contention_swing"
DEMO_SEED = 1001  # a held-out seed of the study (the policy was trained on seed 0)
DEMO_STEPS = 120
DEMO_PAIRS = 64


def write(out: pathlib.Path, con: Any, shown: pathlib.Path) -> dict:
  """Run the closed loop, print its table and write two figures into ``out``; returns the
  summary (rows per policy, figures, gain recovered)."""
  from aprec import models
  from aprec.app.rpm_demo import shipped_policy_dir
  from aprec.rpm import policy_io, study, study_figures

  model = models.load("minilm_l6")
  quality = study.held_out_quality(model, pairs_per_batch=DEMO_PAIRS, num_pairs=DEMO_PAIRS)
  policy_dir = shipped_policy_dir("minilm_l6")
  table, source = study.delta_loss_table(model, quality, policy_dir / study.TABLE_FILE)
  learned, meta = policy_io.load(policy_dir, quality.emulator, kind="plan_selector")
  s = study.make_study(quality, table, DEMO_SCENARIO)
  policies = study.causal_policies(learned, int(meta["hidden"]), s.table, s.candidates)
  res = study.run_seed(s, policies, DEMO_SEED, DEMO_STEPS)
  op_names = [op.name for op in quality.emulator.ops]
  tag = f"minilm_l6_{DEMO_SCENARIO}"
  timeline = study_figures.timeline(
      res.traces, res.quality, out / f"timeline_{tag}.png", f"{tag}, seed {DEMO_SEED}"
  )
  heatmap = study_figures.learned_modes(
      res.traces["learned"], op_names, out / f"learned_modes_{tag}.png", tag
  )
  q = {r["policy"]: r["quality"] for r in res.rows}
  gain = study.gain_recovered(q["learned"], q["static*"], q["hindsight"])
  columns = ("policy", "quality", "violation_frac", "switches_per_step", "distinct_assignments")
  con.print(
      tables.rows_table(
          [{k: r[k] for k in columns} for r in res.rows],
          title=(
              f"minilm_l6 closed loop: {DEMO_SCENARIO}, seed {DEMO_SEED}, {DEMO_STEPS} steps "
              f"({quality.metric} on {DEMO_PAIRS} held-out pairs)"
          ),
          formats={"quality": ".4f", "violation_frac": ".3f", "switches_per_step": ".2f"},
      )
  )
  con.print(
      f"gain recovered by the learned policy (one seed): {gain:.2f}; "
      f"figures {shown / timeline.name}, {shown / heatmap.name}"
  )
  return {
      "scenario": DEMO_SCENARIO,
      "seed": DEMO_SEED,
      "steps": DEMO_STEPS,
      "metric": quality.metric,
      "delta_loss_source": source,
      "rows": res.rows,
      "gain_recovered": gain,
      "hindsight_exact": res.hindsight_exact,
      "figures": [timeline.name, heatmap.name],
  }
