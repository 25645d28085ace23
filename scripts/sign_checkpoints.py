"""Write the checksum manifests (SHA256SUMS) of the shipped checkpoints, changing no data.

For each model under ``checkpoints/``: the profile (adding the hash of the weights it was
computed with to ``profile.json``, its tables untouched) and the policy are checked by
loading them against the model, then signed; the model checkpoint last (its manifest
leaves out the nested profile/ and policy/, which carry their own). Run it after
checking shipped artifacts by other means, e.g. after a retrain:

  python scripts/sign_checkpoints.py
"""

from __future__ import annotations

import json
import pathlib
import sys

_REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO))

from aprec import checkpoint, models  # noqa: E402
from aprec.emulator.core import Emulator  # noqa: E402
from aprec.sensitivity import profile as profile_lib  # noqa: E402


def _unsigned(directory: pathlib.Path) -> None:
  (directory / checkpoint.MANIFEST).unlink(missing_ok=True)


def sign(name: str, root: pathlib.Path) -> None:
  directory = root / name
  for sub in (directory, directory / "profile", directory / "policy"):
    _unsigned(sub)
  # The model itself: orbax's own metadata checks structure, shapes and dtypes on restore.
  checkpoint.write_manifest(directory)
  model = models.load(name, root)
  emu = Emulator(model.apply_fn, model.params, model.data.test.x[:8])
  profile_dir = directory / "profile"
  if (profile_dir / profile_lib.JSON_FILE).is_file():
    path = profile_dir / profile_lib.JSON_FILE
    meta = json.loads(path.read_text())
    meta["params_hash"] = checkpoint.params_hash(model.params)
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    checkpoint.write_manifest(profile_dir)
    profile_lib.load(profile_dir, expect=emu, params=model.params)
  policy_dir = directory / "policy"
  if policy_dir.is_dir():
    from aprec.rpm import policy_io

    checkpoint.write_manifest(policy_dir)
    policy_io.load(policy_dir, emu.ops)
  checkpoint.write_manifest(directory)  # again: now without the signed nested artifacts
  models.load(name, root)
  print(f"signed {directory}")


if __name__ == "__main__":
  for model_name in models.NAMES:
    sign(model_name, models.default_checkpoint_dir())
