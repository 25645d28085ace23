"""Run directories: train a policy, run the closed-loop evaluation, write everything down.

A run directory holds ``config.json`` (resolved), ``versions.json``, ``summary.json`` (the
table and reference accuracies), ``metrics.jsonl`` (one line per policy per step),
``report.md``, figures (PNG) and, when it trained one, ``policy/`` (orbax) with
``policy/training_curve.json``. It is written by ``aprec.checkpoint.write_directory``: a
directory that already holds a run is never replaced unless ``overwrite`` is set (then the
new run is staged beside it and swapped in only once complete, so a failure loses
nothing), and a second writer of the same directory fails at once on its lock.

Example:
  >>> import tempfile
  >>> from aprec.app import config
  >>> cfg = config.resolve({"policies": ["static_fp16"], "steps": 20})
  >>> with tempfile.TemporaryDirectory() as tmp:
  ...   summary = run_experiment(cfg, pathlib.Path(tmp) / "run", time_decisions=False)
  >>> [row["policy"] for row in summary["rows"]]
  ['static_fp16']
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from aprec import checkpoint
from aprec.emulator.formats import MODES
from aprec.rpm import policy_io
from aprec.app import figures as plots
from aprec.app import inputs
from aprec.app.config import ExperimentConfig
from aprec.rpm.deployment import Deployment, deploy, scenario_params, sensitivity_table
from aprec.rpm.compare import compare, make_policies
from aprec.rpm.train import TrainConfig, collect, train
from aprec.versions import library_versions

MARKER = "config.json"
TABLE_COLUMNS = (
    "policy",
    "accuracy",
    "energy_per_inference_j",
    "power_violation_frac",
    "buffer_violation_frac",
    "deadline_miss_frac",
    "switches_per_step",
    "decision_us",
    "fallback_frac",
)


RUN_WHAT = "run directory"


def check_out(out: pathlib.Path, overwrite: bool) -> None:
  """Raises ``ArtifactExistsError`` now, before any work, if ``out`` may not be written."""
  checkpoint.check_target(out, overwrite=overwrite, marker=MARKER, what=RUN_WHAT)


def train_policy_for(
    d: Deployment, cfg: TrainConfig, *, progress: Callable[[int], None] | None = None
) -> tuple[Any, list[dict]]:
  """Collects transitions from ``cfg.scenarios`` and trains the network; ``(params, curve)``."""
  params = [scenario_params(s, d.ctx.spec, d.emulator.ops) for s in cfg.scenarios]
  samples = collect(d.ctx, params, cfg)
  result = train(d.ctx, samples, cfg, progress=progress)
  return result.params, result.history


def table_rows(rows: list[dict]) -> list[dict]:
  """The table's columns, in order."""
  return [{k: r[k] for k in TABLE_COLUMNS} for r in rows]


SHORT_NAMES = {
    "policy": "policy",
    "accuracy": "accuracy",
    "energy_per_inference_j": "nJ/inference",
    "power_violation_frac": "% > cap",
    "buffer_violation_frac": "% > buffer",
    "deadline_miss_frac": "% missed",
    "switches_per_step": "switches/step",
    "decision_us": "µs/decision",
    "fallback_frac": "% fallback",
}


def rich_table(rows: list[dict], title: str):
  """The evaluation table for the terminal (percentages, nJ)."""
  from aprec.app import tables

  scaled = []
  for r in table_rows(rows):
    scaled.append(
        {
            SHORT_NAMES[k]: (
                v * 1e9 if k == "energy_per_inference_j" else v * 100 if k.endswith("_frac") else v
            )
            for k, v in r.items()
        }
    )
  fmt = {
      "accuracy": ".4f",
      "nJ/inference": ".1f",
      "% > cap": ".1f",
      "% > buffer": ".1f",
      "% missed": ".1f",
      "switches/step": ".3f",
      "µs/decision": ".1f",
      "% fallback": ".1f",
  }
  return tables.rows_table(scaled, title=title, formats=fmt)


def markdown_table(rows: list[dict]) -> str:
  cols = TABLE_COLUMNS
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for r in rows:
    cells = [
        r[c]
        if isinstance(r[c], str)
        else (f"{r[c]:.3e}" if c == "energy_per_inference_j" else f"{r[c]:.4g}")
        for c in cols
    ]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def write_metrics(path: pathlib.Path, model: str, scenario: str, traces: dict, mode: str = "a"):
  """One JSON line per policy per step: ground truth, readings, modes, fallback."""
  with open(path, mode) as f:
    for name, tr in traces.items():
      m = {k: np.asarray(v) for k, v in tr.metrics._asdict().items()}
      a = np.asarray(tr.assignments)
      fb = np.asarray(tr.fallback)
      for t in range(a.shape[0]):
        line = {
            "model": model,
            "scenario": scenario,
            "policy": name,
            "step": t,
            "modes": [MODES[int(x)] for x in a[t]],
            "fallback": bool(fb[t]),
            **{k: (None if not np.isfinite(v[t]) else float(v[t])) for k, v in m.items()},
        }
        f.write(json.dumps(line) + "\n")


def run_experiment(
    cfg: ExperimentConfig,
    out: pathlib.Path,
    *,
    overwrite: bool = False,
    console=None,
    time_decisions: bool = True,
) -> dict:
  """Trains (or loads) the learned policy, runs every scenario × policy, writes ``out``."""
  from rich.progress import Progress

  from aprec import models

  start = time.perf_counter()
  with checkpoint.write_directory(out, overwrite=overwrite, marker=MARKER, what=RUN_WHAT) as stage:
    (stage / MARKER).write_text(json.dumps(cfg.to_dict(), indent=2))
    (stage / "versions.json").write_text(json.dumps(library_versions(), indent=2))
    model = models.load(cfg.model)
    table, source = sensitivity_table(
        model, inputs.default_profile_dir(cfg.model), method=cfg.profile
    )
    learned_params, hidden, curve = None, cfg.train.hidden, []
    rows_all, reference_all = [], {}
    with Progress(console=console, transient=True) as bar:
      d0 = deploy(
          model,
          cfg.scenarios[0],
          spec_name=cfg.spec,
          batch_size=cfg.batch_size,
          table=table,
          profile_source=source,
      )
      if "learned" in cfg.policies:
        if cfg.policy_checkpoint:
          learned_params, meta = policy_io.load(cfg.policy_checkpoint, d0.emulator, kind="per_op")
          hidden = int(meta["hidden"])
        else:
          task = bar.add_task("training the learned policy", total=cfg.train.steps)
          learned_params, curve = train_policy_for(
              d0, cfg.train, progress=lambda i: bar.update(task, completed=i)
          )
          policy_io.save(
              stage / "policy",
              learned_params,
              model=cfg.model,
              ops=d0.emulator.ops,
              hidden=hidden,
              config=cfg.to_dict(),
              history=curve,
              numerics=d0.emulator,
              attachments=plots.training_curve_attachment(curve, f"{cfg.model}: policy training"),
          )
      policies = make_policies(cfg.policies, learned_params=learned_params, hidden=hidden)
      task = bar.add_task("closed loop", total=len(cfg.scenarios) * len(policies))
      for scenario in cfg.scenarios:
        d = deploy(
            model,
            scenario,
            spec_name=cfg.spec,
            batch_size=cfg.batch_size,
            table=table,
            profile_source=source,
        )
        rows, traces, reference = compare(
            d,
            policies,
            cfg.steps,
            seed=cfg.seed,
            progress=lambda _: bar.advance(task),
            time_decisions=time_decisions,
        )
        rows_all += rows
        reference_all[scenario] = reference
        write_metrics(stage / "metrics.jsonl", cfg.model, scenario, traces)
        title = f"{cfg.model} / {scenario}"
        plots.power_vs_cap(traces, stage / f"power_{scenario}.png", title=f"{title}: power vs cap")
        plots.mode_heatmaps(
            traces,
            d.emulator.op_names,
            stage / f"modes_{scenario}.png",
            title=f"{title}: mode of each op",
        )
        plots.accuracy_vs_energy(
            rows,
            stage / f"accuracy_energy_{scenario}.png",
            reference=reference["fp32_accuracy"],
            title=title,
        )
        if console is not None:
          fp32 = reference["fp32_accuracy"]
          console.print(
              rich_table(
                  rows,
                  f"{title} ({cfg.steps} steps × {cfg.batch_size} "
                  f"images; fp32 accuracy {fp32:.4f})",
              )
          )
    summary = {
        "config": cfg.to_dict(),
        "profile_source": source,
        "rows": rows_all,
        "numerics": d0.emulator.numerics,
        "reference": reference_all,
        "training_curve": curve,
        "seconds": time.perf_counter() - start,
    }
    (stage / "summary.json").write_text(json.dumps(summary, indent=2))
    (stage / "report.md").write_text(report_markdown(summary))
  return summary


def report_markdown(summary: dict) -> str:
  """``report.md`` of a run."""
  cfg = summary["config"]
  parts = [
      f"# RPM closed loop: {cfg['model']} on {cfg['spec']}",
      "",
      f"Profile: {summary['profile_source']}. {cfg['steps']} steps of "
      f"{cfg['batch_size']} test images each; every op starts at fp16; after a faulty "
      "sensor reading the RPM runs int8 (fallback_frac). Accuracy is measured on the "
      "real batches through the emulator; energy, power, buffer and deadline are the "
      "simulator's ground truth.",
      "",
  ]
  for scenario, ref in summary["reference"].items():
    rows = [r for r in summary["rows"] if r["scenario"] == scenario]
    parts += [
        f"## {scenario}",
        "",
        f"fp32 accuracy {ref['fp32_accuracy']:.4f}, fp16 {ref['fp16_accuracy']:.4f}, "
        f"int8 {ref['int8_accuracy']:.4f} on the same batches.",
        "",
        markdown_table(rows),
        "",
        f"![power](power_{scenario}.png)",
        f"![modes](modes_{scenario}.png)",
        f"![accuracy vs energy](accuracy_energy_{scenario}.png)",
        "",
    ]
  return "\n".join(parts)
