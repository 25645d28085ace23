"""Export: a model at a precision assignment leaves the emulator as a servable artifact.

``export(emulator, params, assignment, out_dir)`` writes the weights in their storage
formats (bitwise what ``Emulator.store_weights`` holds), the assignment, the op table, a
SHA-256 manifest and the inference function serialized with ``jax.export``;
``load(out_dir)`` verifies it and runs it with jax and numpy alone (``loader.py`` is the
whole reader, and can be copied) on the emulator's inputs: any pytree of arrays sharing a
symbolic batch axis, with the emulator's padding mask and calibrated ranges.
``qwix_rules`` turns an assignment into qwix rules and lists what qwix cannot express.

Modules behind this face:
  ``kernels`` — one op in a fixed mode on stored weights (int8 x int8 -> int32 products,
  ``reduce_precision`` rounding); ``program`` — the model's inference function from them;
  ``artifact`` — writing the artifact; ``loader`` — verifying and running it;
  ``qwix_rules`` — the plan as qwix ``QtRule``s.
"""

from aprec.export.artifact import ExportSummary as ExportSummary
from aprec.export.artifact import export as export
from aprec.export.loader import Artifact as Artifact
from aprec.export.loader import ArtifactError as ArtifactError
from aprec.export.loader import load as load
from aprec.export.loader import verify as verify
from aprec.export.program import Program as Program
from aprec.export import program as program
