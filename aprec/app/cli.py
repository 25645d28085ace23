"""The ``aprec`` command: ``ops``, ``eval``, ``analyze``, ``plan``, ``simulate``,
``train-policy``, ``run``, ``report``, ``demo``."""

from __future__ import annotations

import json as json_lib
import pathlib
import sys
from collections.abc import Sequence

import tyro

from aprec.app import report
from aprec.emulator.formats import MODES


def _load(model: str):
  from aprec import models
  return models.load(model)


def ops(model: tyro.conf.Positional[str], json: bool = False) -> None:
  """Print a model's op table: every matmul and convolution the emulator switches."""
  from aprec.emulator.scoring import Evaluator
  ev = Evaluator.for_model(_load(model))
  emu = ev.emulator
  if json:
    print(json_lib.dumps({"model": model, "ops": [op.to_dict() for op in emu.ops],
                          "passthrough": [vars(p) for p in emu.passthrough]}, indent=2))
    return
  con = report.console()
  con.print(report.op_table(emu.ops, title=f"{model}: {emu!r}"))
  for p in emu.passthrough:
    con.print(f"[yellow]passed through:[/] {p.count} × {p.primitive}: {p.reason}")


def eval(model: tyro.conf.Positional[str], modes: str = "fp32", split: str = "test",
         json: bool = False) -> None:
  """Measured accuracy and loss of a model under a precision assignment.

  Args:
    model: a reference model name (digits_cnn, digits_vit).
    modes: one mode for every op (`int8`), or a comma list where a bare mode sets the
      default and `name=mode` sets one op (`int8,Dense_1=fp32`).
    split: the data split to measure on (train, val, test).
    json: print JSON instead of a table.
  """
  from aprec.emulator.scoring import Evaluator
  ev = Evaluator.for_model(_load(model), split)
  assignment = ev.emulator.assignment(modes)
  measured = ev.measure([assignment])
  result = {"model": model, "split": split, "n_examples": int(len(ev.split.y)),
            "modes": {op.name: MODES[int(m)] for op, m in zip(ev.emulator.ops, assignment)},
            "accuracy": float(measured.accuracy[0]), "loss": float(measured.loss[0])}
  if json:
    print(json_lib.dumps(result, indent=2))
    return
  con = report.console()
  con.print(report.rows_table([{"op": k, "mode": v} for k, v in result["modes"].items()],
                              title=f"{model} assignment"))
  con.print(f"{split} accuracy {result['accuracy']:.4f}  loss {result['loss']:.4f}  "
            f"({result['n_examples']} examples)")


def simulate(scenario: tyro.conf.Positional[str], model: str = "digits_cnn",
             spec: str = "edge_npu", modes: str = "fp16", steps: int = 300,
             faults: str = "none", seed: int = 0,
             out: pathlib.Path = pathlib.Path("runs/simulate"), json: bool = False) -> None:
  """Run the NNP runtime simulator with a fixed assignment and plot the trace (PNG).

  Args:
    scenario: steady, contention, thermal, battery or burst.
    model: whose op table the NNP runs (digits_cnn, digits_vit).
    spec: NNP preset (edge_npu, datacenter_gpu).
    modes: the assignment, as for `aprec eval`.
    steps: simulated steps (one inference batch each).
    faults: sensor fault preset (none, mild, severe).
    seed: random seed of the scenario.
    out: directory for the trace PNG and the metrics JSONL.
    json: print the summary as JSON.
  """
  import jax
  import numpy as np

  from aprec.hardware import specs as hardware
  from aprec.hardware import simulator
  from aprec.emulator.scoring import Evaluator
  if steps <= 0:
    raise ValueError(f"steps must be positive, got {steps}")
  emu = Evaluator.for_model(_load(model)).emulator
  params = simulator.scenario(scenario, hardware.get_spec(spec), emu.ops, faults=faults)
  assignment = emu.assignment(modes)
  _, metrics = simulator.rollout(params, simulator.init_state(params), assignment,
                                 jax.random.key(seed), n_steps=steps)
  summary = {"scenario": scenario, "model": model, "spec": spec, "modes": modes,
             "faults": faults, "seed": seed, **simulator.summarize(metrics)}
  out.mkdir(parents=True, exist_ok=True)
  columns = {k: np.asarray(v).tolist() for k, v in metrics._asdict().items()}
  with open(out / f"{scenario}.jsonl", "w") as f:
    for t in range(steps):
      f.write(json_lib.dumps({k: v[t] for k, v in columns.items()}) + "\n")
  figure = report.plot_sim_trace(metrics, out / f"{scenario}.png",
                                 title=f"{scenario}: {model} on {spec} at {modes}")
  summary["figure"] = str(figure)
  if json:
    print(json_lib.dumps(summary, indent=2))
    return
  con = report.console()
  con.print(report.rows_table([{"metric": k, "value": v} for k, v in summary.items()],
                              title=f"simulate {scenario}"))


def demo(out: pathlib.Path = pathlib.Path("runs/demo"),
         models: tuple[str, ...] = ("digits_cnn", "digits_vit"),
         rpm_models: tuple[str, ...] = ("digits_cnn",), scenario: str = "contention",
         steps: int = 300, minilm: bool = True) -> None:
  """The main job: accuracy per precision mode, then every RPM policy in the closed loop.

  Args:
    out: run directory (`modes/` holds the per-mode tables and bar charts, `minilm/` the
      MiniLM-L6 table; the closed-loop report, metrics and figures go in `out` itself).
    models: models for the per-mode accuracy table.
    minilm: also measure MiniLM-L6 at every mode on 32 docstring-task test pairs.
    rpm_models: models run in the closed loop with every policy.
    scenario: the simulator scenario of the closed loop.
    steps: closed-loop steps (one 32-image test batch each).
  """
  from aprec.app import demo as demo_lib
  from aprec.app import rpm_demo
  demo_lib.run(out=out / "modes", model_names=models)
  if minilm:
    from aprec.app import minilm_demo
    minilm_demo.run(out / "minilm")
  rpm_demo.run(out, model_names=rpm_models, scenario=scenario, steps=steps)


def _commands() -> dict:
  from aprec.app import sensitivity_cli
  from aprec.app import rpm_cli
  return {"ops": ops, "eval": eval, "analyze": sensitivity_cli.analyze,
          "plan": sensitivity_cli.plan, "simulate": simulate,
          "train-policy": rpm_cli.train_policy, "run": rpm_cli.run, "report": rpm_cli.report,
          "demo": demo}


def main(argv: Sequence[str] | None = None) -> None:
  """Entry point of the ``aprec`` console script and ``python -m aprec``."""
  args = list(sys.argv[1:] if argv is None else argv)
  try:
    tyro.extras.subcommand_cli_from_dict(_commands(), args=args, prog="aprec")
  except (ValueError, FileNotFoundError) as err:  # bad input: say what, not a traceback
    print(f"aprec: error: {err}", file=sys.stderr)
    raise SystemExit(2) from None
