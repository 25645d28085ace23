"""The RPM demo: every policy in the closed loop on the shipped digits model(s), measured.

``run(out)`` (atomically, through ``aprec.checkpoint.write_directory``) or ``write(dir)``
(into an existing directory) loads each model, its sensitivity table (the shipped profile, else a
perturbation table on the val split) and its shipped policy
(``checkpoints/<model>/policy``; trained on the spot if absent or unreadable), runs
static fp16 / static int8 / greedy / greedy_restore / oracle / learned in the closed loop
under one scenario, prints the table and writes ``out/``: ``report.md``,
``summary.json``, ``metrics.jsonl`` and per model ``power_<model>.png``,
``modes_<model>.png``, ``accuracy_energy_<model>.png``.

Example:
  ``aprec demo`` calls ``run("runs/demo/rpm")`` (300 steps, every policy: a minute, so not
  run here); the learned policy comes from

  >>> shipped_policy_dir("digits_cnn").parts[-2:]
  ('digits_cnn', 'policy')
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Sequence

from aprec import checkpoint
from aprec.app import figures as plots
from aprec.app import inputs
from aprec.rpm import policy_io
from aprec.rpm.deployment import deploy, sensitivity_table
from aprec.rpm.compare import POLICIES, compare, make_policies
from aprec.app.experiment import markdown_table, rich_table, train_policy_for, write_metrics
from aprec.rpm.train import TrainConfig


def shipped_policy_dir(model_name: str) -> pathlib.Path:
  from aprec import models

  return models.default_checkpoint_dir() / model_name / "policy"


def check(model_names: Sequence[str], scenario: str, steps: int) -> None:
  """Raises before any work if an argument of ``run`` is bad."""
  from aprec.rpm.deployment import SCENARIOS

  for name in model_names:
    inputs.model_ref(name)
  inputs.one_of(scenario, SCENARIOS, "scenario")
  inputs.steps(steps)


def run(
    out: str | pathlib.Path = "runs/demo/rpm",
    model_names: Sequence[str] = ("digits_cnn",),
    scenario: str = "contention",
    steps: int = 300,
    seed: int = 0,
    *,
    overwrite: bool = False,
) -> dict:
  """Runs the closed loop for every policy and writes ``out`` (module doc); returns the summary."""
  check(model_names, scenario, steps)
  with checkpoint.write_directory(
      out, overwrite=overwrite, marker="summary.json", what="demo output"
  ) as stage:
    return write(stage, model_names, scenario, steps, seed, shown=pathlib.Path(out))


def write(
    out: pathlib.Path,
    model_names: Sequence[str] = ("digits_cnn",),
    scenario: str = "contention",
    steps: int = 300,
    seed: int = 0,
    shown: pathlib.Path | None = None,
) -> dict:
  """``run`` into an existing (staging) directory ``out``; messages name ``shown``."""
  from rich.progress import Progress

  from aprec.app import tables

  out.mkdir(parents=True, exist_ok=True)
  shown = out if shown is None else shown
  con = tables.console()
  summary: dict = {"scenario": scenario, "steps": steps, "seed": seed, "models": {}}
  metrics_path = out / "metrics.jsonl"
  metrics_path.write_text("")
  md = [
      f"# Runtime precision manager: closed loop under `{scenario}`",
      "",
      "Every op starts at fp16. Each step the RPM reads the simulator's sensors, picks the "
      "next assignment, and a real batch of test images runs through the emulator in it: "
      "accuracy is measured; energy, power, buffer and deadline are the simulator's ground "
      "truth. After an implausible sensor reading the RPM runs int8 (`% fallback`).",
      "",
  ]
  for name in model_names:
    start = time.perf_counter()
    with Progress(console=con, transient=True) as bar:
      task = bar.add_task(f"{name}: loading model and profile", total=None)
      model = inputs.load_model(name)
      table, source = sensitivity_table(model, inputs.default_profile_dir(name))
      d = deploy(model, scenario, table=table, profile_source=source)
      bar.update(task, description=f"{name}: loading the policy")
      policy_note = ""
      try:
        params, meta = policy_io.load(shipped_policy_dir(name), d.emulator, kind="per_op")
        hidden = int(meta["hidden"])
        policy_note = f"shipped policy {shipped_policy_dir(name)}"
      except (FileNotFoundError, ValueError) as err:
        cfg = TrainConfig()
        bar.update(
            task,
            description=f"{name}: training a policy ({err.__class__.__name__})",
            total=cfg.steps,
        )
        params, _ = train_policy_for(d, cfg, progress=lambda i: bar.update(task, completed=i))
        hidden = cfg.hidden
        policy_note = f"trained now ({cfg.steps} steps): {err}"
      policies = make_policies(POLICIES, learned_params=params, hidden=hidden)
      bar.update(task, description=f"{name}: closed loop", total=len(policies), completed=0)
      rows, traces, reference = compare(
          d, policies, steps, seed=seed, progress=lambda _: bar.advance(task)
      )
    title = f"{name} / {scenario}: {steps} steps × {d.batch_size} images"
    con.print(rich_table(rows, f"{title} (fp32 accuracy {reference['fp32_accuracy']:.4f})"))
    con.print(f"profile: {source}; learned policy: {policy_note}")
    for r in rows:
      if r["fallback_frac"] > 0:
        con.print(
            f"[yellow]{r['policy']}: {round(r['fallback_frac'] * steps)} of {steps} steps "
            "ran the safe int8 assignment after an implausible sensor reading[/]"
        )
    write_metrics(metrics_path, name, scenario, traces)
    figures = {
        "power": plots.power_vs_cap(traces, out / f"power_{name}.png", f"{title}: power vs cap"),
        "modes": plots.mode_heatmaps(
            traces, d.emulator.op_names, out / f"modes_{name}.png", f"{title}: mode of each op"
        ),
        "accuracy_energy": plots.accuracy_vs_energy(
            rows, out / f"accuracy_energy_{name}.png", reference["fp32_accuracy"], title
        ),
    }
    seconds = time.perf_counter() - start
    summary["models"][name] = {
        "rows": rows,
        "reference": reference,
        "profile_source": source,
        "numerics": d.emulator.numerics,
        "policy": policy_note,
        "figures": {k: v.name for k, v in figures.items()},
        "seconds": seconds,
    }
    md += [
        f"## {name}",
        "",
        f"Profile: {source}. Learned policy: {policy_note}.",
        "",
        f"fp32 accuracy {reference['fp32_accuracy']:.4f}, fp16 "
        f"{reference['fp16_accuracy']:.4f}, int8 {reference['int8_accuracy']:.4f} on the "
        "same batches.",
        "",
        markdown_table(rows),
        "",
        f"![power vs cap](power_{name}.png)",
        "",
        f"![modes](modes_{name}.png)",
        "",
        f"![accuracy vs energy](accuracy_energy_{name}.png)",
        "",
    ]
    con.print(f"{name}: {seconds:.1f} s")
  (out / "summary.json").write_text(json.dumps(summary, indent=2))
  (out / "report.md").write_text("\n".join(md))
  con.print(f"wrote {shown}/report.md, summary.json, metrics.jsonl and figures")
  return summary
