"""The functions behind ``aprec train-policy``, ``aprec run`` and ``aprec report``."""

from __future__ import annotations

import json
import pathlib

import tyro

from aprec.app import config as config_lib

RUNS = pathlib.Path("runs/rpm")


def _default_out(config: pathlib.Path, suffix: str = "") -> pathlib.Path:
  return RUNS / (pathlib.Path(config).stem + suffix)


def train_policy(config: tyro.conf.Positional[pathlib.Path], out: pathlib.Path | None = None,
                 overwrite: bool = False, set: tuple[str, ...] = ()) -> pathlib.Path:
  """Train the learned RPM policy of an experiment config and save it (orbax + JSON).

  Args:
    config: an experiment config (experiments/*.json).
    out: policy directory (default runs/rpm/<config>-policy); ship one by writing
      checkpoints/<model>/policy.
    overwrite: replace a policy already there.
    set: overrides, e.g. --set train.steps=300 model=digits_vit.
  """
  from aprec import models
  from aprec.app import report
  from aprec.rpm import policy_io
  from aprec.rpm.deployment import deploy, sensitivity_table
  from aprec.app.experiment import RunExistsError, train_policy_for
  cfg = config_lib.load(config, set)
  out = pathlib.Path(out) if out else _default_out(config, "-policy")
  if out.exists() and any(out.iterdir()) and not overwrite:
    raise RunExistsError(f"{out} already holds files; pass --overwrite to replace it")
  model = models.load(cfg.model)
  table, source = sensitivity_table(model, method=cfg.profile)
  d = deploy(cfg.model, cfg.scenarios[0], spec_name=cfg.spec, batch_size=cfg.batch_size,
             table=table, profile_source=source, model=model)
  from rich.progress import Progress
  con = report.console()
  with Progress(console=con, transient=True) as bar:
    task = bar.add_task(f"training the {cfg.model} policy", total=cfg.train.steps)
    params, curve = train_policy_for(d, cfg.train,
                                     progress=lambda i: bar.update(task, completed=i))
  policy_io.save(out, params, model=cfg.model, ops=d.emulator.ops, hidden=cfg.train.hidden,
                 config=cfg.to_dict(), history=curve)
  con.print(f"objective {curve[0]['objective']:.3f} -> {curve[-1]['objective']:.3f}; "
            f"wrote {out}")
  return out


def run(config: tyro.conf.Positional[pathlib.Path], out: pathlib.Path | None = None,
        overwrite: bool = False, set: tuple[str, ...] = ()) -> pathlib.Path:
  """Run an RPM experiment: every scenario × policy in the closed loop, into a run directory.

  Args:
    config: an experiment config (experiments/*.json).
    out: run directory (default runs/rpm/<config>).
    overwrite: replace a run already there (the new one is swapped in only when complete).
    set: overrides, e.g. --set steps=100 scenarios=contention,thermal.
  """
  from aprec.app import report
  from aprec.app.experiment import run_experiment
  cfg = config_lib.load(config, set)
  out = pathlib.Path(out) if out else _default_out(config)
  run_experiment(cfg, out, overwrite=overwrite, console=report.console())
  report.console().print(f"wrote {out}")
  return out


def report(run_dir: tyro.conf.Positional[pathlib.Path]) -> None:
  """Print the table of a finished run directory."""
  from aprec.app import report as report_lib
  from aprec.app.experiment import rich_table
  path = pathlib.Path(run_dir) / "summary.json"
  if not path.is_file():
    raise FileNotFoundError(f"no finished run at {run_dir} (no summary.json); run "
                            "`aprec rpm-run CONFIG` first")
  summary = json.loads(path.read_text())
  con = report_lib.console()
  for scenario, ref in summary["reference"].items():
    rows = [r for r in summary["rows"] if r["scenario"] == scenario]
    con.print(rich_table(rows, f"{summary['config']['model']} / {scenario} (fp32 accuracy "
                               f"{ref['fp32_accuracy']:.4f})"))
