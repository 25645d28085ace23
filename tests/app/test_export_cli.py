"""``aprec export``: a plan file in, an artifact out, within tolerance of the emulator."""

import json

import pytest

import aprec.export
from aprec.app import cli

PLAN = {"Conv_0": "fp8_e4m3", "Conv_1": "int8", "Dense_0": "int4", "Dense_1": "bf16"}


def test_export_a_plan_of_the_reference_cnn(tmp_path, capsys):
  plan = tmp_path / "plan.json"
  plan.write_text(json.dumps({"model": "digits_cnn", "modes": PLAN}))
  cli.main(["export", "digits_cnn", "--out", str(tmp_path / "cnn"), "--plan", str(plan), "--json"])
  result = json.loads(capsys.readouterr().out)
  assert result["modes"] == PLAN
  # The stated tolerance: |Δ| <= 1e-3 max|logit| and the same top-1 on >= 99.5% of the test set.
  assert result["vs_emulator"]["n_examples"] == 360
  assert result["vs_emulator"]["top1_agreement"] >= 0.995
  v = result["vs_emulator"]
  assert v["max_abs_diff"] <= 1e-3 * v["max_abs_output"]
  assert result["accuracy"]["artifact"] > 0.9
  artifact = aprec.export.load(tmp_path / "cnn")
  assert artifact.assignment == PLAN
  assert result["array_bytes"] == artifact.weight_bytes
  assert 0 < result["bytes_over_fp32"] < 0.3


@pytest.mark.parametrize(
    "plan, message",
    [
        ({"modes": {"patch_embed": "int8"}}, "unknown op name(s) ['patch_embed']"),
        ({"budget": "bits=4"}, 'has no "modes" mapping'),
    ],
)
def test_a_plan_of_another_model_is_named(plan, message, tmp_path, capsys):
  path = tmp_path / "plan.json"
  path.write_text(json.dumps(plan))
  with pytest.raises(SystemExit):
    cli.main(["export", "digits_cnn", "--out", str(tmp_path / "x"), "--plan", str(path)])
  assert message in capsys.readouterr().err
  assert not (tmp_path / "x").exists()
