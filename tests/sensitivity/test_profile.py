import io
import json
import os

import numpy as np
import pytest

from aprec import checkpoint
from aprec.sensitivity import profile as profile_lib
from aprec.emulator.formats import MODES
from aprec.emulator.ops import Op
from aprec.sensitivity.profile import Estimate, ProfileError


def _ops(batch=4, hidden=5):
  return (
      Op(
          name="dense",
          kind="dot_general",
          lhs_shape=(batch, 3),
          rhs_shape=(3, hidden),
          out_shape=(batch, hidden),
          weight_operand=1,
          macs=batch * 3 * hidden,
          contraction_size=3,
      ),
      Op(
          name="attn/dot_general",
          kind="dot_general",
          lhs_shape=(batch, 2, 2),
          rhs_shape=(batch, 2, 2),
          out_shape=(batch, 2, 2),
          weight_operand=None,
          macs=batch * 8,
          contraction_size=2,
      ),
      Op(
          name="head",
          kind="dot_general",
          lhs_shape=(batch, hidden),
          rhs_shape=(hidden, 2),
          out_shape=(batch, 2),
          weight_operand=1,
          macs=batch * hidden * 2,
          contraction_size=hidden,
      ),
  )


def _profile(ops=None, **kw):
  ops = _ops() if ops is None else ops
  rng = np.random.default_rng(0)
  shape = (len(ops), len(MODES))
  stderr = rng.uniform(size=shape)
  stderr[0, 0] = np.nan  # NaN errors (one calibration batch) must survive the round trip
  estimates = {
      "perturbation": Estimate(delta_loss=rng.normal(size=shape) / 7, stderr=stderr, n_samples=3),
      "fisher": Estimate(
          delta_loss=rng.uniform(size=shape) * 1e-9, stderr=np.zeros(shape), n_samples=3
      ),
  }
  args = dict(
      model="toy",
      ops=ops,
      estimates=estimates,
      dataset="toy/train",
      n_batches=3,
      batch_size=4,
      baseline_loss=0.25,
      loss="kl",
      details={
          "seconds": {"perturbation": 1.5},
          "trace": np.ones((2, 2)),
          "ops": ["dense"],
          "nan": float("nan"),
      },
  )
  args.update(kw)
  return profile_lib.make_profile(**args)


def test_save_load_round_trip_is_exact(tmp_path):
  prof = _profile()
  written = profile_lib.save(prof, tmp_path / "profile")
  assert (written / profile_lib.JSON_FILE).is_file() and (written / "arrays").is_dir()
  back = profile_lib.load(written, expect=prof.ops)
  for name, est in prof.estimates.items():
    assert np.array_equal(back.estimates[name].delta_loss, est.delta_loss, equal_nan=True)
    assert np.array_equal(back.estimates[name].stderr, est.stderr, equal_nan=True)
    assert back.estimates[name].delta_loss.dtype == np.float64
  assert back.ops == prof.ops and back.method == "perturbation" and back.loss == "kl"
  assert back.fingerprint == prof.fingerprint and back.versions == prof.versions
  assert back.details["trace"] == [[1.0, 1.0], [1.0, 1.0]] and back.details["nan"] is None
  assert back.to_json() == json.loads(json.dumps(prof.to_json()))
  assert back == profile_lib.load(written)


def test_json_is_readable_by_op_and_mode(tmp_path):
  prof = _profile()
  text = (profile_lib.save(prof, tmp_path / "p") / profile_lib.JSON_FILE).read_text()
  data = json.loads(text)  # strict JSON: NaN written as null
  assert "NaN" not in text
  assert data["estimates"]["perturbation"]["delta_loss"]["head"]["int4"] == pytest.approx(
      prof.delta_loss[2, MODES.index("int4")]
  )
  assert data["estimates"]["perturbation"]["stderr"]["dense"]["fp32"] is None
  assert {
      "model",
      "method",
      "loss",
      "dataset",
      "n_batches",
      "batch_size",
      "versions",
      "fingerprint",
      "ops",
      "modes",
  } <= set(data)
  assert data["ops"][0]["macs"] == 60 and data["versions"]["jax"]


def test_fingerprint_ignores_batch_size_but_not_the_model():
  assert profile_lib.fingerprint(_ops(batch=4)) == profile_lib.fingerprint(_ops(batch=128))
  assert profile_lib.fingerprint(_ops()) != profile_lib.fingerprint(_ops(hidden=6))
  renamed = (_ops()[0], _ops()[1], Op(**{**vars(_ops()[2]), "name": "classifier"}))
  assert profile_lib.fingerprint(_ops()) != profile_lib.fingerprint(renamed)


def test_load_against_another_model_names_the_ops(tmp_path):
  written = profile_lib.save(_profile(), tmp_path / "p")
  profile_lib.load(written, expect=_ops(batch=32))  # another batch size is the same model
  with pytest.raises(
      ProfileError,
      match=r"op 'dense': weight_shape is \[3, 5\] in the profile, " r"\[3, 6\] in the model",
  ):
    profile_lib.load(written, expect=_ops(hidden=6))
  other = _ops()[:2] + (Op(**{**vars(_ops()[2]), "name": "classifier"}),)
  with pytest.raises(ProfileError) as err:
    profile_lib.load(written, expect=other)
  assert "'head' is in the profile but not in the model" in str(err.value)
  assert "'classifier' is in the model but not in the profile" in str(err.value)
  assert "aprec analyze" in str(err.value)


def test_damaged_or_missing_profiles(tmp_path):
  with pytest.raises(FileNotFoundError, match="aprec analyze"):
    profile_lib.load(tmp_path / "nothing")
  written = profile_lib.save(_profile(), tmp_path / "p")
  data = json.loads((written / profile_lib.JSON_FILE).read_text())
  data["ops"][0]["name"] = "renamed"
  (written / profile_lib.JSON_FILE).write_text(json.dumps(data))
  with pytest.raises(ProfileError, match="profile.json fails its SHA-256 checksum"):
    profile_lib.load(written)
  checkpoint.write_manifest(written)  # past the checksums, the fingerprint still catches it,
  with pytest.raises(ProfileError, match=r"p/profile.json: .*fingerprint .* does not match"):
    profile_lib.load(written)  # naming the file
  (written / profile_lib.JSON_FILE).write_text("{not json")
  checkpoint.write_manifest(written)
  with pytest.raises(ProfileError, match="cannot read"):
    profile_lib.load(written)
  (written / profile_lib.JSON_FILE).write_text(json.dumps({"ops": []}))
  checkpoint.write_manifest(written)
  with pytest.raises(ProfileError, match="lacks the key 'estimates'"):
    profile_lib.load(written)


def test_failed_save_keeps_the_good_profile(tmp_path):
  target = tmp_path / "p"
  good = _profile()
  profile_lib.save(good, target)

  def explode(path):
    path.write_text("half")
    raise KeyboardInterrupt  # interrupted while writing attachments

  with pytest.raises(KeyboardInterrupt):
    profile_lib.save(
        _profile(baseline_loss=9.0), target, attachments={"fig.png": explode}, overwrite=True
    )
  assert profile_lib.load(target) == good
  assert sorted(os.listdir(tmp_path)) == ["p"]  # no staging or backup left behind
  with pytest.raises(checkpoint.ArtifactExistsError, match="--overwrite"):
    profile_lib.save(_profile(baseline_loss=9.0), target)
  profile_lib.save(
      _profile(baseline_loss=9.0),
      target,
      overwrite=True,
      attachments={"fig.txt": lambda p: p.write_text("ok")},
  )
  assert profile_lib.load(target).baseline_loss == 9.0 and (target / "fig.txt").read_text() == "ok"
  assert sorted(os.listdir(tmp_path)) == ["p"]


def test_save_refuses_to_replace_other_directories(tmp_path):
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / "keep.txt").write_text("x")
  with pytest.raises(ValueError, match="not a sensitivity profile .*refusing"):
    profile_lib.save(_profile(), tmp_path / "data", overwrite=True)
  (tmp_path / "file").write_text("x")
  with pytest.raises(ValueError, match="is a file"):
    profile_lib.save(_profile(), tmp_path / "file")


def test_bad_estimates_and_methods():
  with pytest.raises(ValueError, match="equal"):
    Estimate(delta_loss=np.zeros((2, 7)), stderr=np.zeros((2, 6)), n_samples=1)
  with pytest.raises(ValueError, match=r"shape \(2, 7\), expected \(3, 7\)"):
    _profile(
        estimates={
            "perturbation": Estimate(
                delta_loss=np.zeros((2, 7)), stderr=np.zeros((2, 7)), n_samples=1
            )
        }
    )
  prof = _profile()
  with pytest.raises(ValueError, match="no 'hessian' estimate; it has: perturbation, fisher"):
    prof.table("hessian")
  assert prof.with_primary("fisher").delta_loss is prof.estimates["fisher"].delta_loss
  with pytest.raises(ValueError, match="primary method 'taylor'"):
    _profile(method="taylor")


def test_table_and_heatmap_render(tmp_path):
  from rich.console import Console

  from aprec.app import figures as sensitivity_plots

  prof = _profile()
  console = Console(record=True, width=160, file=io.StringIO())
  from aprec.app import tables

  console.print(tables.profile_table(prof))
  text = console.export_text()
  assert "attn/dot_general" in text and "int4" in text and "±" in text
  path = sensitivity_plots.heatmap(prof, tmp_path / "heat.png", method="fisher")
  assert path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["digits_cnn", "digits_vit"])
def test_shipped_profiles_fit_the_reference_models(name):
  from aprec import models
  from aprec.emulator.core import Emulator
  from aprec.app.inputs import default_profile_dir

  model = models.load(name)
  emu = Emulator(model.apply_fn, model.params, model.data.test.x[:7])  # any batch size
  prof = profile_lib.load(default_profile_dir(name), expect=emu, params=model.params)
  assert prof.method == "perturbation" and prof.loss == "kl"
  assert set(prof.estimates) == {"perturbation", "taylor", "fisher", "hessian", "tracked"}
  assert np.isfinite(prof.delta_loss).all()
  assert prof.details["validation"]["scores"]["perturbation"]["spearman_single_op"] >= 0.9


def test_profile_for_other_weights_is_refused_naming_the_file(tmp_path):
  """Issue 13.13: a profile is tied to the weights it was computed with, not only the ops."""
  weights = {"w": np.arange(6, dtype=np.float32)}
  other = {"w": np.arange(6, dtype=np.float32) * 1.001}  # same architecture, other weights
  written = profile_lib.save(_profile(params=weights), tmp_path / "p")
  assert json.loads((written / profile_lib.JSON_FILE).read_text())["params_hash"] == (
      checkpoint.params_hash(weights)
  )
  assert profile_lib.load(written, params=weights).params_hash == checkpoint.params_hash(weights)
  with pytest.raises(ProfileError, match=f"{written}.*other weights") as info:
    profile_lib.load(written, params=other)
  assert "allow_other_params=True" in str(info.value)
  with pytest.warns(UserWarning, match="other weights"):
    profile_lib.load(written, params=other, allow_other_params=True)
