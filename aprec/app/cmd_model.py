"""``aprec ops``, ``aprec eval`` and ``aprec spec``: a model's op table, its accuracy under an
assignment, and NNP specs written out as JSON."""

from __future__ import annotations

import json
import pathlib
from typing import Annotated

import tyro

from aprec.app import inputs, tables
from aprec.emulator.formats import MODES

AsJson = Annotated[bool, tyro.conf.arg(name="json")]


def ops(model: tyro.conf.Positional[str], as_json: AsJson = False) -> None:
  """Print a model's op table: every matmul and convolution the emulator switches.

  Args:
    model: a reference model (digits_cnn, digits_vit) or package.module:factory.
    as_json: print JSON instead of a table.
  """
  from aprec.emulator.scoring import Evaluator

  inputs.model_ref(model)
  ev = Evaluator.for_model(inputs.load_model(model))
  emu = ev.emulator
  if as_json:
    print(
        json.dumps(
            {
                "model": model,
                "ops": [op.to_dict() for op in emu.ops],
                "passthrough": [vars(p) for p in emu.passthrough],
            },
            indent=2,
        )
    )
    return
  con = tables.console()
  con.print(tables.op_table(emu.ops, title=f"{model}: {emu!r}"))
  for p in emu.passthrough:
    con.print(f"[yellow]passed through:[/] {p.count} × {p.primitive}: {p.reason}")


def measure(
    model: tyro.conf.Positional[str],
    modes: str = "fp32",
    split: str = "test",
    as_json: AsJson = False,
) -> None:
  """Measured accuracy and loss of a model under a precision assignment.

  Args:
    model: a reference model (digits_cnn, digits_vit) or package.module:factory;
      minilm_l6 reports the docstring task's recall@1, recall@10, MRR and the mean cosine
      to fp32 instead.
    modes: one mode for every op (`int8`), or a comma list where a bare mode sets the
      default and `name=mode` sets one op (`int8,Dense_1=fp32`).
    split: the data split to measure on (train, val, test; calibration, val, test for
      minilm_l6).
    as_json: print JSON instead of a table.
  """
  from aprec import models
  from aprec.emulator.scoring import Evaluator

  inputs.model_ref(model)
  if model in models.EMBEDDERS:
    _evaluate_embedder(model, modes, split, as_json)
    return
  inputs.one_of(split, ("train", "val", "test"), "split")
  ev = Evaluator.for_model(inputs.load_model(model), split)
  assignment = ev.emulator.assignment(modes)
  measured = ev.measure([assignment])
  result = {
      "model": model,
      "split": split,
      "n_examples": int(len(ev.split.y)),
      "modes": {op.name: MODES[int(m)] for op, m in zip(ev.emulator.ops, assignment)},
      "accuracy": float(measured.accuracy[0]),
      "loss": float(measured.loss[0]),
  }
  if as_json:
    print(json.dumps(result, indent=2))
    return
  con = tables.console()
  con.print(
      tables.rows_table(
          [{"op": k, "mode": v} for k, v in result["modes"].items()], title=f"{model} assignment"
      )
  )
  con.print(
      f"{split} accuracy {result['accuracy']:.4f}  loss {result['loss']:.4f}  "
      f"({result['n_examples']} examples)"
  )


def _evaluate_embedder(model: str, modes: str, split: str, as_json: bool) -> None:
  from aprec.emulator.retrieval_scoring import RetrievalEvaluator
  from aprec.models import docstrings

  inputs.one_of(split, docstrings.SPLITS, "split")
  loaded = inputs.load_model(model)
  data = getattr(loaded.data, split)
  ev = RetrievalEvaluator(loaded.apply_fn, loaded.params, data)
  assignment = ev.emulator.assignment(modes)
  measured = ev.measure(assignment)
  result = {
      "model": model,
      "split": split,
      "n_pairs": data.num_pairs,
      "modes": {op.name: MODES[int(m)] for op, m in zip(ev.emulator.ops, assignment)},
      **measured._asdict(),
  }
  if as_json:
    print(json.dumps(result, indent=2))
    return
  tables.console().print(
      f"{split}: recall@1 {measured.recall_at_1:.4f}  recall@10 {measured.recall_at_10:.4f}  "
      f"MRR {measured.mrr:.4f}  mean cos to fp32 {measured.mean_cosine:.6f}  "
      f"({data.num_pairs} summary -> docstring pairs)"
  )


def spec(
    name: tyro.conf.Positional[str], out: pathlib.Path | None = None, overwrite: bool = False
) -> None:
  """Print an NNP spec as JSON, or write it to a file to edit and pass as `--spec FILE`.

  Args:
    name: a preset (edge_npu, datacenter_gpu) or a JSON spec file (checked and reprinted).
    out: the JSON file to write (default: print).
    overwrite: replace an existing OUT file.
  """
  from aprec.hardware import spec_io

  if out is not None and pathlib.Path(out).exists() and not overwrite:
    raise ValueError(f"--out {out} exists; pass --overwrite to replace it")
  if out is not None and pathlib.Path(out).is_dir():
    raise ValueError(f"--out {out} is a directory; give a file name such as my_npu.json")
  nnp = inputs.spec(name)
  if out is None:
    print(json.dumps(spec_io.spec_to_dict(nnp), indent=2))
    return
  spec_io.save_spec(nnp, out)
  tables.console().print(f"wrote {out} (pass it as --spec {out})")
