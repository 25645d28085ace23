"""``aprec demo``: the shipped models under every precision mode, then every RPM policy in
the closed loop (``rpm_demo``), written atomically into one directory.

The ``demo`` command checks every argument before any work, then writes ``OUT`` through
``aprec.checkpoint.write_directory``: ``OUT/modes/`` (per-mode tables and bar charts) and
the closed-loop report, metrics and figures in ``OUT`` itself.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from aprec import checkpoint
from aprec.app import figures, inputs, tables
from aprec.emulator.formats import MODE_TABLE, MODES

MARKER = "summary.json"


PLAN_BUDGET = "bits=5"


def mixed_spec(model_name: str, op_names: Sequence[str], params: Any = None) -> tuple[str, str]:
  """A mixed plan and how it was made: the planner's best at 5 bits per weight under the
  shipped sensitivity profile, else the naive "int4, first and last op int8"."""
  from aprec.planning import planner
  from aprec.sensitivity import profile

  try:
    prof = profile.load(inputs.default_profile_dir(model_name), params=params)
  except (FileNotFoundError, ValueError):
    return f"int4,{op_names[0]}=int8,{op_names[-1]}=int8", "naive: int4, first/last int8"
  if prof.op_names != tuple(op_names):
    return f"int4,{op_names[0]}=int8,{op_names[-1]}=int8", "naive: int4, first/last int8"
  plan = planner.plan(prof, PLAN_BUDGET)
  return ",".join(f"{n}={m}" for n, m in zip(op_names, plan.modes)), f"planned at {PLAN_BUDGET}"


def weight_bytes(ops, assignment) -> int:
  """Bytes of all weights stored in their modes (scales not counted)."""
  bits = sum(op.weight_elements * MODE_TABLE[int(m)].bits for op, m in zip(ops, assignment))
  return int(bits // 8)


def run(
    out: str | pathlib.Path = "runs/demo/modes",
    model_names: Sequence[str] = ("digits_cnn", "digits_vit"),
    *,
    overwrite: bool = False,
) -> dict:
  """Measure each model at every uniform mode and one mixed plan; write ``out`` atomically."""
  for name in model_names:
    inputs.model_ref(name)
  with checkpoint.write_directory(
      out, overwrite=overwrite, marker=MARKER, what="demo output"
  ) as stage:
    return write(stage, model_names, shown=pathlib.Path(out))


def write(
    directory: pathlib.Path, model_names: Sequence[str], shown: pathlib.Path | None = None
) -> dict:
  """``run`` into an existing (staging) ``directory``; messages name ``shown`` instead."""
  from aprec.emulator.scoring import Evaluator

  directory.mkdir(parents=True, exist_ok=True)
  shown = directory if shown is None else shown
  con = tables.console()
  summary: dict = {}
  for name in model_names:
    start = time.perf_counter()
    model = inputs.load_model(name)
    ev = Evaluator.for_model(model, "test")
    emu = ev.emulator
    con.print(tables.op_table(emu.ops, title=f"{name}: {emu!r}"))
    mixed, how = mixed_spec(name, emu.op_names, model.params)
    labels = list(MODES) + ["mixed"]
    specs = list(MODES) + [mixed]
    assignments = np.stack([np.asarray(emu.assignment(s)) for s in specs])
    measured = ev.measure(assignments)  # all assignments in one compiled call
    fp32_acc = float(measured.accuracy[0])
    rows = [
        {
            "assignment": label,
            "accuracy": float(a),
            "Δacc vs fp32": float(a) - fp32_acc,
            "loss": float(loss),
            "weight KiB": weight_bytes(emu.ops, m) / 1024,
        }
        for label, a, loss, m in zip(labels, measured.accuracy, measured.loss, assignments)
    ]
    con.print(
        tables.rows_table(
            rows,
            title=f"{name}: measured on {len(ev.split.y)} test images",
            formats={"accuracy": ".4f", "Δacc vs fp32": "+.4f", "loss": ".4f", "weight KiB": ".1f"},
        )
    )
    con.print(f"mixed ({how}): {specs[-1]}")
    chart = figures.bar_chart(
        labels,
        [r["accuracy"] for r in rows],
        directory / f"accuracy_{name}.png",
        title=f"{name}: test accuracy per precision assignment",
        ylabel="accuracy",
        reference=fp32_acc,
        reference_label="fp32",
    )
    summary[name] = {
        "rows": rows,
        "mixed_spec": specs[-1],
        "mixed_how": how,
        "figure": chart.name,
        "ops": [op.to_dict() for op in emu.ops],
        "seconds": time.perf_counter() - start,
    }
    con.print(f"wrote {shown / chart.name}")
  (directory / MARKER).write_text(json.dumps(summary, indent=2, default=str))
  con.print(f"wrote {shown / MARKER}")
  return summary
