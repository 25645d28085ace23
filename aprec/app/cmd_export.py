"""``aprec export``: a reference model at a precision assignment as a servable artifact."""

from __future__ import annotations

import json as json_lib
import pathlib
from typing import Annotated, Any

import tyro

from aprec.app import inputs, tables

AsJson = Annotated[bool, tyro.conf.arg(name="json")]


def _modes_from(plan: pathlib.Path) -> dict[str, str]:
  """``{op: mode}`` from a plan (``aprec plan --json``) or an artifact's ``assignment.json``."""
  try:
    content = json_lib.loads(plan.read_text())
  except json_lib.JSONDecodeError as err:
    raise ValueError(f"{plan} is not valid JSON ({err})") from None
  modes = content.get("modes") if isinstance(content, dict) else None
  if not isinstance(modes, dict):
    raise ValueError(
        f'{plan} has no "modes" mapping of op names to modes; pass the output '
        "of `aprec plan MODEL --json` or an artifact's assignment.json"
    )
  return modes


def export(
    model: tyro.conf.Positional[str],
    out: pathlib.Path,
    modes: str = "fp32",
    plan: pathlib.Path | None = None,
    replace: bool = False,
    qwix: bool = False,
    platforms: tuple[str, ...] = (),
    as_json: AsJson = False,
) -> None:
  """Write a model at a precision assignment as an artifact that runs with jax alone.

  The artifact holds the weights in their storage formats, the assignment, the op table,
  a SHA-256 manifest and the inference function (jax.export, any batch size); load it
  with `aprec.export.load(OUT)` or the standalone `aprec/export/loader.py`.

  Args:
    model: a reference model (digits_cnn, digits_vit) or package.module:factory.
    out: the artifact directory.
    modes: the assignment, as for `aprec eval` (ignored with --plan).
    plan: a JSON file with a "modes" mapping (the output of `aprec plan MODEL --json`).
    replace: replace an existing OUT.
    platforms: lower the program for these (cpu, cuda, rocm, tpu); default: this machine's.
    qwix: also write the plan as qwix rules (qwix.json in OUT) with their measured
      agreement and what qwix cannot express (needs `pip install qwix`).
    as_json: print JSON instead of tables.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np

  import aprec.export
  from aprec.emulator import Emulator
  from aprec.export.loader import MANIFEST

  inputs.model_ref(model)
  inputs.artifact_out(out, overwrite=replace, marker=MANIFEST, what="export artifact")
  plan_modes = _modes_from(plan) if plan is not None else None
  loaded = inputs.load_model(model)
  x = jax.tree_util.tree_map(jnp.asarray, loaded.data.test.x)  # one array or a pytree
  emu = Emulator(loaded.apply_fn, loaded.params, x)
  assignment = emu.assignment(plan_modes if plan is not None else modes)
  expected = np.asarray(jax.jit(emu)(loaded.params, x, assignment))
  extra: dict[str, Any] = {}
  if qwix:
    extra["qwix.json"] = _qwix_report(model, loaded, x, emu, assignment, expected)
  summary = aprec.export.export(
      emu,
      loaded.params,
      assignment,
      out,
      replace=replace,
      extra_json=extra,
      platforms=platforms or None,
  )
  got = np.asarray(aprec.export.load(out)(x))
  labels = np.asarray(loaded.data.test.y)
  result = {
      "model": model,
      "out": str(out),
      "modes": summary.assignment,
      "array_bytes": summary.array_bytes,
      "fp32_param_bytes": summary.fp32_param_bytes,
      "bytes_over_fp32": round(summary.bytes_over_fp32, 4),
      "program_bytes": summary.program_bytes,
      "vs_emulator": {
          "split": "test",
          "n_examples": int(len(labels)),
          "max_abs_diff": float(np.abs(got - expected).max()),
          "max_abs_output": float(np.abs(expected).max()),
          "top1_agreement": float(np.mean(got.argmax(-1) == expected.argmax(-1))),
      },
      "accuracy": {
          "artifact": float(np.mean(got.argmax(-1) == labels)),
          "emulator": float(np.mean(expected.argmax(-1) == labels)),
      },
  }
  if qwix:
    result["qwix"] = extra["qwix.json"]
  if as_json:
    print(json_lib.dumps(result, indent=2))
    return
  con = tables.console()
  con.print(
      tables.rows_table(
          [{"op": k, "mode": v} for k, v in result["modes"].items()],
          title=f"{model} exported to {out}",
      )
  )
  v = result["vs_emulator"]
  con.print(
      f"weights {summary.array_bytes:,} bytes ({summary.bytes_over_fp32:.3f} of fp32), "
      f"program {summary.program_bytes:,} bytes; vs the emulator on {v['n_examples']} "
      f"test examples: max |Δ| {v['max_abs_diff']:.2e}, top-1 agreement "
      f"{v['top1_agreement']:.4f}; accuracy {result['accuracy']['artifact']:.4f}"
  )
  if qwix:
    q = result["qwix"]
    con.print(f"qwix: {len(q['rules'])} rules, agreement {q['agreement']}")
    for u in q["unexpressed"]:
      con.print(f"[yellow]qwix cannot express[/] {u['op']} at {u['mode']}: {u['reason']}")


def _qwix_report(model: str, loaded, x, emu, assignment, expected) -> dict[str, Any]:
  from aprec.export import qwix_rules

  plan = qwix_rules.rules_for(emu.ops, assignment)
  result = plan.to_dict()
  module = _module(model, loaded.params)
  result["agreement"] = (
      {
          "error": f"no Flax module object for {model} here; measure with "
          "aprec.export.qwix_rules.agreement(module, params, x, expected, plan)"
      }
      if module is None
      else qwix_rules.agreement(module, loaded.params, x, expected, plan)
  )
  return result


def _module(model: str, params):
  """The reference model as a linen module or an nnx module holding ``params`` (else None)."""
  if model == "digits_cnn":
    from aprec.models import digits_cnn

    return digits_cnn.DigitsCNN()
  if model != "digits_vit":
    return None
  from flax import nnx
  from aprec.models import digits_vit

  graphdef = nnx.split(nnx.eval_shape(lambda: digits_vit.DigitsViT(rngs=nnx.Rngs(0))))[0]
  return nnx.merge(graphdef, params)
