"""NNP specs as JSON files: a preset written out as a starting point, edited, read back.

The file holds every ``NNPSpec`` field; per-mode fields are ``{mode: value}`` objects.
Reading checks for unknown and missing fields, values of the wrong kind and out-of-range
numbers (``specs.validate``), naming the file and the field.

Example:
  >>> import pathlib, tempfile
  >>> from aprec.hardware.specs import edge_npu
  >>> path = save_spec(edge_npu(), pathlib.Path(tempfile.mkdtemp()) / "npu.json")
  >>> load_spec(path) == edge_npu()
  True
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np

from aprec.emulator.formats import MODES
from aprec.hardware.specs import PER_MODE_FIELDS, NNPSpec, _per_mode, validate


def spec_to_dict(spec: NNPSpec) -> dict:
  """The JSON form of a spec: every field, per-mode fields as ``{mode: value}``.

  Example:
    >>> from aprec.hardware.specs import edge_npu
    >>> spec_to_dict(edge_npu())["relative_throughput"]["int4"]
    4.0
  """
  out = {"name": spec.name}
  for f in dataclasses.fields(spec):
    if f.name != "name":
      value = getattr(spec, f.name)
      out[f.name] = (
          {m: float(v) for m, v in zip(MODES, np.asarray(value))}
          if f.name in PER_MODE_FIELDS
          else float(value)
      )
  return out


def spec_from_dict(data: dict, where: str = "spec") -> NNPSpec:
  """An ``NNPSpec`` from ``spec_to_dict``'s form, validated; ``where`` names the source in
  errors (unknown or missing fields, values of the wrong kind, out-of-range numbers).

  Example:
    >>> from aprec.hardware.specs import edge_npu
    >>> spec_from_dict(spec_to_dict(edge_npu())) == edge_npu()
    True
  """
  if not isinstance(data, dict):
    raise ValueError(
        f"{where}: expected a JSON object of NNPSpec fields, got " f"{type(data).__name__}"
    )
  fields = {f.name: f for f in dataclasses.fields(NNPSpec)}
  unknown = sorted(set(data) - set(fields))
  if unknown:
    raise ValueError(f"{where}: unknown NNPSpec field(s) {unknown}; known: {', '.join(fields)}")
  required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
  missing = [n for n in required if n not in data]
  if missing:
    raise ValueError(f"{where}: missing NNPSpec field(s) {missing}")
  kw = {}
  for key, value in data.items():
    if key == "name":
      if not isinstance(value, str):
        raise ValueError(f"{where}: name = {value!r}; expected a string")
      kw[key] = value
    elif key in PER_MODE_FIELDS:
      if (
          not isinstance(value, dict)
          or set(value) != set(MODES)
          or not all(_is_number(v) for v in value.values())
      ):
        raise ValueError(
            f"{where}: {key} = {value!r}; expected a number for each mode: "
            f"{{{', '.join(repr(m) + ': ...' for m in MODES)}}}"
        )
      kw[key] = _per_mode(value)
    else:
      if not _is_number(value):
        raise ValueError(f"{where}: {key} = {value!r}; expected a number")
      kw[key] = float(value)
  try:
    return validate(NNPSpec(**kw))
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from None


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def save_spec(spec: NNPSpec, path: str | os.PathLike[str]) -> pathlib.Path:
  """Writes ``spec`` as JSON (``spec_to_dict``) to ``path``; returns the path."""
  path = pathlib.Path(path)
  path.write_text(json.dumps(spec_to_dict(validate(spec)), indent=2) + "\n")
  return path


def load_spec(path: str | os.PathLike[str]) -> NNPSpec:
  """Reads a spec written by ``save_spec`` (or by hand); errors name the file and field."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(
        f"no NNP spec file at {path}; write one with " "`aprec spec edge_npu --out my_npu.json`"
    )
  try:
    data = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from None
  return spec_from_dict(data, where=str(path))
