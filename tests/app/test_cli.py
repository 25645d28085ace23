import json

import pytest

from aprec.app import cli


def test_ops_json(capsys):
  cli.main(["ops", "digits_cnn", "--json"])
  table = json.loads(capsys.readouterr().out)
  assert [op["name"] for op in table["ops"]] == ["Conv_0", "Conv_1", "Dense_0", "Dense_1"]
  assert all(op["macs"] > 0 for op in table["ops"])


def test_eval_json_mixed(capsys):
  cli.main(["eval", "digits_cnn", "--modes", "int8,Dense_1=fp32", "--json"])
  result = json.loads(capsys.readouterr().out)
  assert result["modes"] == {
      "Conv_0": "int8",
      "Conv_1": "int8",
      "Dense_0": "int8",
      "Dense_1": "fp32",
  }
  assert 0.9 <= result["accuracy"] <= 1.0 and result["loss"] > 0


def test_eval_fp32_matches_checkpoint_metadata(capsys):
  from aprec import models

  cli.main(["eval", "digits_cnn", "--json"])
  result = json.loads(capsys.readouterr().out)
  recorded = models.load("digits_cnn").metadata["test_accuracy_fp32"]
  assert result["accuracy"] == pytest.approx(recorded, abs=1e-6)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "digits_cnn", "--modes", "int3"], "unknown precision mode 'int3'"),
        (["eval", "digits_cnn", "--modes", "Dense_7=int8"], "unknown op name"),
        (["ops", "resnet50"], "Unknown model 'resnet50'"),
    ],
)
def test_bad_input_exits_with_message(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err


def test_missing_checkpoint_message(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("APREC_CHECKPOINTS", str(tmp_path))
  with pytest.raises(SystemExit):
    cli.main(["ops", "digits_cnn"])
  err = capsys.readouterr().err
  assert "digits_cnn" in err and "train_models.py" in err


def test_demo_modes_part_writes_chart_and_summary(tmp_path, capsys):
  from aprec.app import demo

  demo.run(tmp_path, ["digits_cnn"])
  summary = json.loads((tmp_path / "summary.json").read_text())
  rows = {r["assignment"]: r for r in summary["digits_cnn"]["rows"]}
  assert set(rows) == {"fp32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "int8", "int4", "mixed"}
  assert rows["fp32"]["accuracy"] >= 0.97
  assert rows["int4"]["weight KiB"] * 8 == pytest.approx(rows["fp32"]["weight KiB"], rel=1e-3)
  assert (tmp_path / "accuracy_digits_cnn.png").stat().st_size > 10_000


def test_python_dash_m_aprec():
  import subprocess
  import sys

  out = subprocess.run(
      [sys.executable, "-m", "aprec", "--help"], capture_output=True, text=True, timeout=120
  )
  assert out.returncode == 0 and "ops" in out.stdout and "demo" in out.stdout


def test_simulate_writes_trace_and_lower_precision_meets_the_cap(tmp_path, capsys):
  summaries = {}
  for modes in ("fp16", "int8"):
    cli.main(
        [
            "simulate",
            "thermal",
            "--modes",
            modes,
            "--steps",
            "200",
            "--out",
            str(tmp_path / modes),
            "--json",
        ]
    )
    summaries[modes] = json.loads(capsys.readouterr().out)
  assert summaries["int8"]["over_cap_frac"] < summaries["fp16"]["over_cap_frac"]
  assert summaries["int8"]["mean_power_w"] < summaries["fp16"]["mean_power_w"]
  lines = (tmp_path / "int8" / "thermal.jsonl").read_text().splitlines()
  assert len(lines) == 200 and "power_w" in json.loads(lines[0])
  assert (tmp_path / "int8" / "thermal.png").read_bytes()[:4] == b"\x89PNG"
  with pytest.raises(SystemExit):
    cli.main(["simulate", "meteor"])
  assert "unknown scenario 'meteor'" in capsys.readouterr().err
