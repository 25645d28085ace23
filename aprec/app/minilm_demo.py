"""``aprec demo``'s MiniLM-L6 part: the real embedder under every uniform mode and the
planner's plan (``bits=6`` from the shipped profile), measured; then the RPM closed loop
(``minilm_loop_demo``).

Shortened for the demo's time budget: the first ``num_pairs`` pairs of the docstring task's
test split (the full 256-pair table is ``scripts/minilm_uniform_table.py``), one compiled
call per assignment, per-token activation scales (the emulator's default).
"""

from __future__ import annotations

import json
import pathlib
import time

from aprec import checkpoint
from aprec.app import figures, inputs, tables
from aprec.emulator.formats import MODE_TABLE, MODES
from aprec.emulator.pak import DEFAULT_ACTIVATION_SCALING

DEMO_PAIRS = 32
PLAN_BUDGET = "bits=6"


def run(
    out: str | pathlib.Path = "runs/demo/minilm",
    num_pairs: int = DEMO_PAIRS,
    *,
    overwrite: bool = False,
) -> dict:
  """Measure MiniLM-L6 at every uniform mode on ``num_pairs`` test pairs; write JSON and PNG
  into ``out`` atomically (``aprec.checkpoint.write_directory``)."""
  with checkpoint.write_directory(
      out, overwrite=overwrite, marker="summary.json", what="demo output"
  ) as stage:
    return write(stage, num_pairs, shown=pathlib.Path(out))


def write(
    out: pathlib.Path, num_pairs: int = DEMO_PAIRS, shown: pathlib.Path | None = None
) -> dict:
  """``run`` into an existing (staging) directory ``out``; messages name ``shown``."""
  from aprec import models
  from aprec.emulator.retrieval_scoring import RetrievalEvaluator
  from aprec.models import docstrings

  out.mkdir(parents=True, exist_ok=True)
  shown = out if shown is None else shown
  con = tables.console()
  start = time.perf_counter()
  model = models.load("minilm_l6")
  pairs = [p for p in docstrings.load_pairs() if p["split"] == "test"][:num_pairs]
  split = docstrings.make_split(pairs)
  ev = RetrievalEvaluator(
      model.apply_fn,
      model.params,
      split,
      batch_rows=2 * len(pairs),
      activation_scaling=DEFAULT_ACTIVATION_SCALING,  # the shipped profile's
  )
  emu = ev.emulator
  con.print(tables.op_table(emu.ops, title=f"minilm_l6: {emu!r}"))
  from aprec.planning import planner
  from aprec.sensitivity import profile as profile_lib

  profile = profile_lib.load(inputs.default_profile_dir("minilm_l6"), expect=emu)
  plan = planner.plan(profile, PLAN_BUDGET)
  assignments = [(mode, emu.assignment(mode)) for mode in MODES]
  assignments.append((f"plan {PLAN_BUDGET}", plan.assignment))
  rows = []
  for mode, assignment in assignments:
    r = ev.measure(assignment)
    bits = sum(op.weight_elements * MODE_TABLE[m].bits for op, m in zip(emu.ops, assignment))
    rows.append(
        {
            "mode": mode,
            "recall@1": r.recall_at_1,
            "recall@10": r.recall_at_10,
            "MRR": r.mrr,
            "1 - cos to fp32": 1.0 - r.mean_cosine,
            "weight KiB": bits / 8 / 1024,
        }
    )
  con.print(
      tables.rows_table(
          rows,
          title=f"minilm_l6: summary -> docstring retrieval among {len(pairs)} test pairs",
          formats={
              "recall@1": ".4f",
              "recall@10": ".4f",
              "MRR": ".4f",
              "1 - cos to fp32": ".2e",
              "weight KiB": ".0f",
          },
      )
  )
  chart = figures.bar_chart(
      [r["mode"] for r in rows],
      [r["MRR"] for r in rows],
      out / "mrr_minilm_l6.png",
      title=f"minilm_l6: MRR over {len(pairs)} docstring pairs per mode",
      ylabel="MRR",
      reference=rows[0]["MRR"],
      reference_label="fp32",
  )
  from aprec.app import minilm_loop_demo

  closed_loop = minilm_loop_demo.write(out, con, shown)
  summary = {
      "closed_loop": closed_loop,
      "model": "minilm_l6",
      "num_pairs": len(pairs),
      "rows": rows,
      "figure": chart.name,
      "ops": [op.to_dict() for op in emu.ops],
      "seconds": time.perf_counter() - start,
  }
  (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
  con.print(
      f"wrote {shown / chart.name} and {shown / 'summary.json'} " f"({summary['seconds']:.0f} s)"
  )
  return summary
