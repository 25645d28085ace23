"""The ``aprec`` command: one CLI whose subcommands live in small per-topic modules.

- models and NNPs (``cmd_model``): ``ops``, ``eval``, ``spec``
- sensitivity and planning (``cmd_sensitivity``): ``analyze``, ``plan``
- the simulator and the RPM (``cmd_rpm``): ``simulate``, ``train-policy``, ``run``, ``report``
- the main job (``demo``): ``demo``

Bad input ends with one line on stderr and exit code 2, before any long work; Ctrl-C ends
with exit code 130, leaving every artifact as it was.
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Callable, Sequence

import tyro

from aprec.app import inputs

INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


def demo(
    out: pathlib.Path = pathlib.Path("runs/demo"),
    models: tuple[str, ...] = ("digits_cnn", "digits_vit"),
    rpm_models: tuple[str, ...] = ("digits_cnn",),
    scenario: str = "contention",
    steps: int = 300,
    minilm: bool = True,
    overwrite: bool = False,
) -> None:
  """The main job: accuracy per precision mode, then every RPM policy in the closed loop.

  Args:
    out: output directory (`modes/` holds the per-mode tables and bar charts, `minilm/` the
      MiniLM-L6 table; the closed-loop report, metrics and figures go in `out` itself);
      written atomically.
    models: models for the per-mode accuracy table (names or package.module:factory).
    minilm: also measure MiniLM-L6 at every mode and at a bits=6 plan on 32 docstring-task
      test pairs, and run every RPM policy in its closed loop (one contention draw).
    rpm_models: models run in the closed loop with every policy.
    scenario: the simulator scenario of the closed loop.
    steps: closed-loop steps (one 32-image test batch each).
    overwrite: replace an earlier demo in OUT (only once the new one is complete).
  """
  from aprec import checkpoint
  from aprec.app import demo as demo_lib
  from aprec.app import rpm_demo

  for name in models:
    inputs.model_ref(name)
  rpm_demo.check(rpm_models, scenario, steps)
  inputs.artifact_out(out, overwrite=overwrite, marker=demo_lib.MARKER, what="demo output")
  with checkpoint.write_directory(
      out, overwrite=overwrite, marker=demo_lib.MARKER, what="demo output"
  ) as stage:
    demo_lib.write(stage / "modes", models, shown=out / "modes")
    if minilm:
      from aprec.app import minilm_demo

      minilm_demo.write(stage / "minilm", shown=out / "minilm")
    rpm_demo.write(stage, rpm_models, scenario=scenario, steps=steps, shown=out)


def commands() -> dict[str, Callable]:
  """Subcommand name → function; register a new subcommand with one line here."""
  from aprec.app import cmd_export, cmd_model, cmd_rpm, cmd_sensitivity

  return {
      "ops": cmd_model.ops,
      "eval": cmd_model.measure,
      "spec": cmd_model.spec,
      "analyze": cmd_sensitivity.analyze,
      "plan": cmd_sensitivity.plan,
      "simulate": cmd_rpm.simulate,
      "train-policy": cmd_rpm.train_policy,
      "run": cmd_rpm.run,
      "report": cmd_rpm.report,
      "demo": demo,
      "export": cmd_export.export,
  }


def _interrupted() -> None:
  """Exit 130 at once: the writers have already removed their staging directories, and a
  normal interpreter exit with JAX and orbax threads still running can crash."""
  print("aprec: interrupted; nothing was replaced", file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(INTERRUPTED)


def main(argv: Sequence[str] | None = None) -> None:
  """Entry point of the ``aprec`` console script and ``python -m aprec``."""
  from aprec import checkpoint

  args = list(sys.argv[1:] if argv is None else argv)
  try:
    tyro.extras.subcommand_cli_from_dict(commands(), args=args, prog="aprec")
  except (ValueError, FileNotFoundError, checkpoint.DirectoryLockedError) as err:
    print(f"aprec: error: {err}", file=sys.stderr)  # bad input: say what, not a traceback
    raise SystemExit(2) from None
  except KeyboardInterrupt:
    _interrupted()
