"""``aprec simulate``, ``aprec train-policy``, ``aprec run`` and ``aprec report``: the NNP
simulator and the runtime precision manager's experiments."""

from __future__ import annotations

import json
import pathlib
from typing import Annotated

import tyro

from aprec import checkpoint
from aprec.app import config as config_lib
from aprec.app import inputs, tables
from aprec.app.cmd_model import AsJson

RUNS = pathlib.Path("runs/rpm")
Overrides = Annotated[tuple[str, ...], tyro.conf.arg(name="set")]


def _default_out(config: pathlib.Path, suffix: str = "") -> pathlib.Path:
  return RUNS / (pathlib.Path(config).stem + suffix)


def simulate(
    scenario: tyro.conf.Positional[str],
    model: str = "digits_cnn",
    spec: str = "edge_npu",
    modes: str = "fp16",
    steps: int = 300,
    faults: str = "none",
    seed: int = 0,
    out: pathlib.Path = pathlib.Path("runs/simulate"),
    as_json: AsJson = False,
) -> None:
  """Run the NNP runtime simulator with a fixed assignment and plot the trace (PNG).

  Args:
    scenario: steady, contention, thermal, battery or burst.
    model: whose op table the NNP runs (digits_cnn, digits_vit, package.module:factory).
    spec: NNP preset (edge_npu, datacenter_gpu) or a JSON spec file.
    modes: the assignment, as for `aprec eval`.
    steps: simulated steps (one inference batch each; at most 100,000).
    faults: sensor fault preset (none, mild, severe).
    seed: random seed of the scenario.
    out: directory for the trace PNG and the metrics JSONL.
    as_json: print the summary as JSON.
  """
  import jax
  import numpy as np

  from aprec.app import figures
  from aprec.emulator.scoring import Evaluator
  from aprec.hardware import scenarios, simulator

  inputs.one_of(scenario, scenarios.SCENARIOS, "scenario")
  inputs.steps(steps)
  inputs.out_dir(out, "simulator trace")
  inputs.model_ref(model)
  nnp = inputs.spec(spec)
  emu = Evaluator.for_model(inputs.load_model(model)).emulator
  params = scenarios.scenario(scenario, nnp, emu.ops, faults=faults)
  assignment = emu.assignment(modes)
  _, metrics = simulator.rollout(
      params, simulator.init_state(params), assignment, jax.random.key(seed), n_steps=steps
  )
  summary = {
      "scenario": scenario,
      "model": model,
      "spec": nnp.name,
      "modes": modes,
      "faults": faults,
      "seed": seed,
      **simulator.summarize(metrics),
  }
  columns = {k: np.asarray(v).tolist() for k, v in metrics._asdict().items()}
  lines = (json.dumps({k: v[t] for k, v in columns.items()}) + "\n" for t in range(steps))
  checkpoint.replace_file(out / f"{scenario}.jsonl", lambda tmp: tmp.write_text("".join(lines)))
  figure = figures.sim_trace(
      metrics, out / f"{scenario}.png", title=f"{scenario}: {model} on {nnp.name} at {modes}"
  )
  summary["figure"] = str(figure)
  if as_json:
    print(json.dumps(summary, indent=2))
    return
  con = tables.console()
  con.print(
      tables.rows_table(
          [{"metric": k, "value": v} for k, v in summary.items()], title=f"simulate {scenario}"
      )
  )


def train_policy(
    config: tyro.conf.Positional[pathlib.Path],
    out: pathlib.Path | None = None,
    overwrite: bool = False,
    overrides: Overrides = (),
) -> pathlib.Path:
  """Train the learned RPM policy of an experiment config and save it (orbax + JSON).

  Args:
    config: an experiment config (experiments/*.json).
    out: policy directory (default runs/rpm/<config>-policy); ship one by writing
      checkpoints/<model>/policy.
    overwrite: replace a policy already there (only once the new one is complete).
    overrides: overrides, e.g. --set train.steps=300 model=digits_vit.
  """
  from rich.progress import Progress

  from aprec.app import figures
  from aprec.app.experiment import train_policy_for
  from aprec.rpm import policy_io
  from aprec.rpm.deployment import deploy, sensitivity_table

  cfg = config_lib.load(config, overrides)
  out = pathlib.Path(out) if out else _default_out(config, "-policy")
  inputs.artifact_out(out, overwrite=overwrite, marker=policy_io.JSON_FILE, what="policy")
  model = inputs.load_model(cfg.model)
  table, source = sensitivity_table(
      model, inputs.default_profile_dir(cfg.model), method=cfg.profile
  )
  d = deploy(
      model,
      cfg.scenarios[0],
      spec_name=cfg.spec,
      batch_size=cfg.batch_size,
      table=table,
      profile_source=source,
  )
  con = tables.console()
  with Progress(console=con, transient=True) as bar:
    task = bar.add_task(f"training the {cfg.model} policy", total=cfg.train.steps)
    params, curve = train_policy_for(d, cfg.train, progress=lambda i: bar.update(task, completed=i))
  policy_io.save(
      out,
      params,
      model=cfg.model,
      ops=d.emulator.ops,
      hidden=cfg.train.hidden,
      config=cfg.to_dict(),
      history=curve,
      overwrite=overwrite,
      numerics=d.emulator,
      attachments=figures.training_curve_attachment(curve, f"{cfg.model}: policy training"),
  )
  con.print(
      f"objective {curve[0]['objective']:.3f} -> {curve[-1]['objective']:.3f}; " f"wrote {out}"
  )
  return out


def run(
    config: tyro.conf.Positional[pathlib.Path],
    out: pathlib.Path | None = None,
    overwrite: bool = False,
    overrides: Overrides = (),
) -> pathlib.Path:
  """Run an RPM experiment: every scenario × policy in the closed loop, into a run directory.

  Args:
    config: an experiment config (experiments/*.json).
    out: run directory (default runs/rpm/<config>).
    overwrite: replace a run already there (the new one is swapped in only when complete).
    overrides: overrides, e.g. --set steps=100 scenarios=contention,thermal.
  """
  from aprec.app.experiment import check_out, run_experiment

  cfg = config_lib.load(config, overrides)
  out = pathlib.Path(out) if out else _default_out(config)
  check_out(out, overwrite)
  run_experiment(cfg, out, overwrite=overwrite, console=tables.console())
  tables.console().print(f"wrote {out}")
  return out


def _read_summary(run_dir: pathlib.Path) -> dict:
  path = run_dir / "summary.json"
  if not path.is_file():
    raise FileNotFoundError(
        f"no finished run at {run_dir} (no summary.json); run "
        "`aprec run CONFIG --out DIR` (or `aprec demo`) first"
    )
  if (run_dir / checkpoint.MANIFEST).is_file():
    checkpoint.verify(run_dir)
  try:
    summary = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is not valid JSON (truncated?): {e}") from None
  if not isinstance(summary, dict):
    raise ValueError(f"{path} must hold a JSON object, found {type(summary).__name__}")
  return summary


def report(run_dir: tyro.conf.Positional[pathlib.Path]) -> None:
  """Print the table of a finished run directory (`aprec run`) or demo (`aprec demo`).

  Args:
    run_dir: the directory.
  """
  from aprec.app.experiment import rich_table

  run_dir = pathlib.Path(run_dir)
  summary = _read_summary(run_dir)
  path = run_dir / "summary.json"
  con = tables.console()
  try:
    if "models" in summary:  # `aprec demo`: one closed loop per model
      for name, part in summary["models"].items():
        fp32 = part["reference"]["fp32_accuracy"]
        con.print(
            rich_table(
                part["rows"], f"{name} / {summary['scenario']} (fp32 accuracy " f"{fp32:.4f})"
            )
        )
      return
    for scenario, ref in summary["reference"].items():
      rows = [r for r in summary["rows"] if r["scenario"] == scenario]
      con.print(
          rich_table(
              rows,
              f"{summary['config']['model']} / {scenario} (fp32 accuracy "
              f"{ref['fp32_accuracy']:.4f})",
          )
      )
  except (KeyError, TypeError, AttributeError) as e:
    raise ValueError(
        f"{path} is incomplete: missing or malformed entry {e}; the run did not "
        "finish or the file was edited"
    ) from None
