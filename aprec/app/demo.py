"""``aprec demo``: the shipped digits models under every precision mode, measured."""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Sequence

import numpy as np

from aprec.app import report
from aprec.emulator.formats import MODE_TABLE, MODES


PLAN_BUDGET = "bits=5"


def mixed_spec(model_name: str, op_names: Sequence[str]) -> tuple[str, str]:
  """A mixed plan and how it was made: the planner's best at 5 bits per weight under the
  shipped sensitivity profile, else the naive "int4, first and last op int8"."""
  from aprec.planning import planner
  from aprec.sensitivity import profile
  from aprec.app import sensitivity_cli
  try:
    prof = profile.load(sensitivity_cli.default_profile_dir(model_name))
  except (FileNotFoundError, ValueError):
    return f"int4,{op_names[0]}=int8,{op_names[-1]}=int8", "naive: int4, first/last int8"
  if prof.op_names != tuple(op_names):
    return f"int4,{op_names[0]}=int8,{op_names[-1]}=int8", "naive: int4, first/last int8"
  plan = planner.plan(prof, PLAN_BUDGET)
  return ",".join(f"{n}={m}" for n, m in zip(op_names, plan.modes)), f"planned at {PLAN_BUDGET}"


def weight_bytes(ops, assignment) -> int:
  """Bytes of all weights stored in their modes (scales not counted)."""
  return int(sum(op.weight_elements * MODE_TABLE[int(m)].bits for op, m in zip(ops, assignment)) // 8)


def run(out: str | pathlib.Path = "runs/demo",
        model_names: Sequence[str] = ("digits_cnn", "digits_vit")) -> dict:
  """Measure each model at every uniform mode and one mixed plan; write table, JSON, PNG."""
  from aprec import models
  from aprec.emulator.scoring import Evaluator
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  con = report.console()
  summary: dict = {}
  for name in model_names:
    start = time.perf_counter()
    model = models.load(name)
    ev = Evaluator.for_model(model, "test")
    emu = ev.emulator
    con.print(report.op_table(emu.ops, title=f"{name}: {emu!r}"))
    mixed, how = mixed_spec(name, emu.op_names)
    labels = list(MODES) + ["mixed"]
    specs = list(MODES) + [mixed]
    assignments = np.stack([np.asarray(emu.assignment(s)) for s in specs])
    measured = ev.measure(assignments)  # all assignments in one compiled call
    fp32_acc = float(measured.accuracy[0])
    rows = [{"assignment": label, "accuracy": float(a), "Δacc vs fp32": float(a) - fp32_acc,
             "loss": float(l), "weight KiB": weight_bytes(emu.ops, m) / 1024}
            for label, a, l, m in zip(labels, measured.accuracy, measured.loss, assignments)]
    con.print(report.rows_table(rows, title=f"{name}: measured on {len(ev.split.y)} test images",
                                formats={"accuracy": ".4f", "Δacc vs fp32": "+.4f",
                                         "loss": ".4f", "weight KiB": ".1f"}))
    con.print(f"mixed ({how}): {specs[-1]}")
    chart = report.bar_chart(labels, [r["accuracy"] for r in rows], out / f"accuracy_{name}.png",
                             title=f"{name}: test accuracy per precision assignment",
                             ylabel="accuracy", reference=fp32_acc, reference_label="fp32")
    summary[name] = {"rows": rows, "mixed_spec": specs[-1], "mixed_how": how, "figure": str(chart),
                     "ops": [op.to_dict() for op in emu.ops],
                     "seconds": time.perf_counter() - start}
    con.print(f"wrote {chart}")
  (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
  con.print(f"wrote {out / 'summary.json'}")
  return summary
