"""Load and run an exported aprec model with nothing but jax and numpy.

This file imports only the standard library, numpy and jax: copy it next to an artifact
and ``load(directory)(inputs)`` runs the model without aprec, flax or the model's code.
``inputs`` is what the emulator took: one array, or any pytree of arrays (``(ids, mask)``,
a dict) whose leaves share a leading batch axis of any size.

An artifact directory holds ``manifest.json`` (the SHA-256 and size of every other file,
the arrays the program reads and its inputs), ``program.jaxexport`` (the inference
function, ``jax.export`` serialized, batch dimension symbolic), ``arrays/`` (weights in
their storage formats and their scales, as raw little-endian bytes; the remaining
parameters), ``assignment.json`` and ``ops.json``. Every file is verified before use.

Example:
  >>> import jax, jax.numpy as jnp, flax.linen as nn, tempfile, pathlib
  >>> import aprec.export
  >>> model, x = nn.Sequential([nn.Dense(3)]), jnp.ones((2, 4))
  >>> params = model.init(jax.random.key(0), x)
  >>> out = pathlib.Path(tempfile.mkdtemp()) / "dense"
  >>> _ = aprec.export.export(aprec.Emulator(model.apply, params, x), params, "int8", out)
  >>> artifact = load(out)
  >>> artifact.assignment, artifact(jnp.ones((7, 4))).shape
  ({'layers_0': 'int8'}, (7, 3))
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = "aprec.export/2"  # /2: inputs as a pytree of leaves (/1: one array)
MANIFEST = "manifest.json"


class ArtifactError(ValueError):
  """An artifact file is missing, truncated, corrupt or does not match its manifest."""


def sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _manifest(directory: pathlib.Path) -> dict[str, Any]:
  path = directory / MANIFEST
  if not path.is_file():
    raise ArtifactError(
        f"{path} not found: {directory} is not an aprec export artifact "
        "(write one with `aprec export` or aprec.export.export)"
    )
  try:
    manifest = json.loads(path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as err:
    raise ArtifactError(
        f"{path} is not valid JSON ({err}); the artifact is corrupt, " "export it again"
    ) from None
  missing = [
      k
      for k in ("format", "files", "program", "arrays", "inputs", "assignment", "ops")
      if not isinstance(manifest, dict) or k not in manifest
  ]
  if missing:
    raise ArtifactError(f"{path} lacks {missing}; the artifact is corrupt, export it again")
  if manifest["format"] != FORMAT:
    raise ArtifactError(
        f"{path} has format {manifest['format']!r}; this loader reads {FORMAT!r}: "
        "export the model again with this version"
    )
  return manifest


def verify(directory: str | os.PathLike[str]) -> dict[str, Any]:
  """The manifest, after checking every listed file's size and SHA-256; raises naming the file."""
  directory = pathlib.Path(directory)
  manifest = _manifest(directory)
  for name, entry in manifest["files"].items():
    path = directory / name
    if not path.is_file():
      raise ArtifactError(f"{path} is missing (listed in {MANIFEST}); export again")
    size = path.stat().st_size
    if size != entry["bytes"]:
      raise ArtifactError(
          f"{path} has {size} bytes, the manifest says {entry['bytes']}: "
          "the file is truncated or was replaced; export again"
      )
    if sha256(path) != entry["sha256"]:
      raise ArtifactError(
          f"{path} fails its SHA-256 check (manifest {entry['sha256'][:12]}…): "
          "the file is corrupt; export again"
      )
  return manifest


class Artifact:
  """A loaded artifact: call it on a batch of inputs.

  Attributes:
    directory: where it was loaded from.
    manifest: the verified manifest.
    assignment: ``{op name: mode}``.
    ops: the op table (one dict per op).
    exported: the deserialized ``jax.export.Exported``.
    arrays: the arrays the program reads, in order (weights in their storage formats).
  """

  def __init__(self, directory: pathlib.Path, manifest: dict[str, Any]):
    self.directory = directory
    self.manifest = manifest
    self.assignment: dict[str, str] = json.loads((directory / manifest["assignment"]).read_text())[
        "modes"
    ]
    self.ops: list[dict[str, Any]] = json.loads((directory / manifest["ops"]).read_text())["ops"]
    program = directory / manifest["program"]
    try:
      self.exported = jax.export.deserialize(bytearray(program.read_bytes()))
    except Exception as err:  # noqa: BLE001 - any failure here means a bad program file
      raise ArtifactError(
          f"{program} does not deserialize with jax.export ({err}); "
          "export again with this jax version"
      ) from None
    self.arrays = [jnp.asarray(_read_array(directory, a)) for a in manifest["arrays"]]
    inputs = manifest["inputs"]
    self.input_tree: str = inputs["tree"]
    # One entry per input leaf: its pytree path, shape (None marks the batch) and dtype.
    self.input_leaves: list[dict[str, Any]] = inputs["leaves"]
    self.platforms = tuple(self.exported.platforms)
    here = jax.devices()[0].platform
    self._platform = {"gpu": "cuda"}.get(here, here)
    self._call = jax.jit(self.exported.call)

  @property
  def weight_bytes(self) -> int:
    """Bytes of every array the program reads (stored weights, scales, parameters)."""
    return sum(int(a.size * a.dtype.itemsize) for a in self.arrays)

  def __call__(self, inputs: Any) -> Any:
    """Outputs for a batch of ``inputs``: the structure, feature shapes and dtypes the
    model was exported with, every leaf with the same (any) batch size."""
    leaves = self._check_inputs(inputs)
    if self._platform not in self.platforms:
      raise ValueError(
          f"this artifact was lowered for {list(self.platforms)}, not "
          f"{self._platform!r}; "
          "export it again with platforms including it (`--platforms`)"
      )
    return self._call(self.arrays, leaves)

  def _check_inputs(self, inputs: Any) -> list[jax.Array]:
    """The input leaves as the program takes them; raises naming the leaf that differs."""
    source = self.directory / MANIFEST
    paths, treedef = jax.tree_util.tree_flatten_with_path(inputs)
    if str(treedef) != self.input_tree:
      raise ValueError(
          f"inputs have structure {treedef}; this artifact takes {self.input_tree} "
          f"(from {source})"
      )
    leaves, batch_sizes = [], {}
    for (path, leaf), spec in zip(paths, self.input_leaves):
      name = f"input {spec['path']}" if spec["path"] else "input"
      leaf = np.asarray(leaf) if not isinstance(leaf, jax.Array) else leaf
      features = tuple(spec["shape"][1:])
      if leaf.ndim != len(spec["shape"]) or tuple(leaf.shape[1:]) != features:
        expected = ", ".join(["batch", *map(str, features)])
        raise ValueError(
            f"{name} has shape {tuple(leaf.shape)}; this artifact takes ({expected}) "
            f"(from {source})"
        )
      dtype = jnp.dtype(spec["dtype"])
      if leaf.dtype != dtype and not np.can_cast(leaf.dtype, dtype, casting="same_kind"):
        raise ValueError(f"{name} has dtype {leaf.dtype}; this artifact takes {dtype}")
      batch_sizes[name] = leaf.shape[0]
      leaves.append(jnp.asarray(leaf, dtype))
    if len(set(batch_sizes.values())) > 1:
      listed = ", ".join(f"{k} has {v}" for k, v in batch_sizes.items())
      raise ValueError(f"inputs disagree on the batch size ({listed}); give every leaf the same")
    return leaves


def _read_array(directory: pathlib.Path, entry: dict[str, Any]) -> np.ndarray:
  dtype = jnp.dtype(entry["dtype"])
  path = directory / entry["file"]
  data = np.frombuffer(path.read_bytes(), dtype=dtype)  # little-endian hosts only
  shape = tuple(entry["shape"])
  if data.size != int(np.prod(shape, dtype=np.int64)):
    raise ArtifactError(
        f"{path} holds {data.size} {dtype} values, the manifest says shape "
        f"{shape}; export again"
    )
  return data.reshape(shape)


def load(directory: str | os.PathLike[str]) -> Artifact:
  """Verify every file of an artifact against its manifest and load it."""
  directory = pathlib.Path(directory)
  return Artifact(directory, verify(directory))
