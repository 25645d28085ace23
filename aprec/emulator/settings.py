"""The emulator settings a measured number depends on: activation scaling and STE.

Profiles, policies and run records store them (``of``); whoever reads one back with an
emulator checks them (``check``), so a table measured with per-tensor scales is never
silently used to steer a model running per-token scales. A record that predates the
setting was made with the old defaults, ``LEGACY``.

Example:
  >>> check({"activation_scaling": "per_token", "ste": "identity"},
  ...       {"activation_scaling": "per_token", "ste": "identity"}, what="profile x")
  >>> try:
  ...   check(None, {"activation_scaling": "per_token", "ste": "identity"}, what="profile x")
  ... except ValueError as e:
  ...   print(str(e).split(";")[0])
  profile x was made with activation_scaling='per_tensor', but the emulator uses 'per_token'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LEGACY = {"activation_scaling": "per_tensor", "ste": "identity"}
KEYS = tuple(LEGACY)


def of(emulator: Any) -> dict[str, str]:
  """``{"activation_scaling": ..., "ste": ...}`` of an ``Emulator`` (or a mapping of them)."""
  if isinstance(emulator, Mapping):
    return {k: str(emulator.get(k, LEGACY[k])) for k in KEYS}
  return dict(emulator.numerics)


def check(
    recorded: Mapping[str, Any] | None,
    expected: Any,
    *,
    what: str,
    error: type[Exception] = ValueError,
) -> None:
  """Raises ``error`` naming the setting when ``recorded`` (None: ``LEGACY``) differs.

  Args:
    recorded: the settings stored with an artifact.
    expected: the emulator it is used with (or its settings).
    what: the artifact, named in the message (e.g. ``"the profile at <dir>"``).
  """
  have, want = of(recorded or LEGACY), of(expected)
  for key in KEYS:
    if have[key] != want[key]:
      raise error(
          f"{what} was made with {key}={have[key]!r}, but the emulator uses "
          f"{want[key]!r}; recompute it with this setting or build the Emulator "
          f"with {key}={have[key]!r}"
      )
