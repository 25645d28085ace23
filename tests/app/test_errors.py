"""Errors that say what is wrong: one line naming the value and what was expected, before
any work (issue 13, "Errors that do not say what is wrong")."""

from __future__ import annotations

import json

import pytest

from aprec import checkpoint
from aprec.app import cli, config

TINY_RUN = {
    "model": "digits_cnn",
    "scenarios": ["contention"],
    "steps": 5,
    "policies": ["static_fp16"],
}


def _error(argv, capsys) -> str:
  with pytest.raises(SystemExit) as info:
    cli.main(argv)
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "Traceback" not in err  # one line
  return err


def test_report_names_the_real_command(tmp_path, capsys):
  err = _error(["report", str(tmp_path / "nothing")], capsys)
  assert "`aprec run CONFIG" in err and "rpm-run" not in err


def _run_dir(tmp_path, summary_text: str, signed: bool):
  out = tmp_path / "run"
  out.mkdir()
  (out / "config.json").write_text("{}")
  (out / "summary.json").write_text(summary_text)
  if signed:
    checkpoint.write_manifest(out)
  return out


def test_truncated_summary_names_the_file(tmp_path, capsys):
  good = json.dumps({"config": {"model": "digits_cnn"}, "reference": {}, "rows": []})
  out = _run_dir(tmp_path, good, signed=True)
  (out / "summary.json").write_text(good[: len(good) // 2])  # truncated after it was written
  err = _error(["report", str(out)], capsys)
  assert f"{out / 'summary.json'} fails its SHA-256 checksum" in err
  checkpoint.write_manifest(out)  # an unsigned (hand-made) run dir: the parser names it too
  err = _error(["report", str(out)], capsys)
  assert f"{out / 'summary.json'} is not valid JSON (truncated?)" in err


def test_incomplete_summary_names_the_file_and_key(tmp_path, capsys):
  out = _run_dir(tmp_path, json.dumps({"config": {"model": "digits_cnn"}}), signed=True)
  err = _error(["report", str(out)], capsys)
  assert f"{out / 'summary.json'} is incomplete" in err and "'reference'" in err


@pytest.mark.parametrize(
    "modes, message",
    [
        ("", "modes '' has an empty entry"),
        (",,,", "modes ',,,' has an empty entry"),
        ("int8,fp16", "sets the default mode 2 times (int8, fp16)"),
        ("int8,Dense_1=fp32,Dense_1=fp16", "sets op 'Dense_1' twice"),
    ],
)
def test_ambiguous_modes_are_refused(modes, message, capsys):
  assert message in _error(["eval", "digits_cnn", "--modes", modes], capsys)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"steps": True}, "steps = True; expected a whole number"),
        ({"scenarios": ["thermal", "thermal"]}, "names ['thermal'] more than once"),
        ({"policies": ["greedy", "oracle", "greedy"]}, "names ['greedy'] more than once"),
        ({"train": {"penalty": "inf"}}, "train.penalty = 'inf'; expected a finite number"),
        ({"train": {"margin": float("nan")}}, "train.margin = nan; expected a finite number"),
        ({"seed": [1]}, "seed = [1]; expected a whole number"),
        ({"model": 3}, "expected a string"),
    ],
)
def test_config_values_of_the_wrong_kind(data, message):
  with pytest.raises(ValueError, match=None) as info:
    config.resolve(data)
  assert message in str(info.value)


def test_simulate_steps_are_capped_before_any_work(tmp_path, capsys):
  err = _error(["simulate", "steady", "--steps", "1000000", "--out", str(tmp_path / "o")], capsys)
  assert "--steps 1000000; expected 1..100,000" in err
  assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["simulate", "steady"],
        ["analyze", "digits_cnn"],
        ["spec", "edge_npu"],
        ["demo"],
        ["run", "CONFIG"],
        ["train-policy", "CONFIG"],
    ],
)
def test_out_naming_a_file_fails_before_any_work(tmp_path, command, capsys):
  config_path = tmp_path / "tiny.json"
  config_path.write_text(json.dumps(TINY_RUN))
  command = [str(config_path) if c == "CONFIG" else c for c in command]
  target = tmp_path / "a_file"
  target.write_text("keep")
  if command[0] == "spec":  # spec writes a file: an existing one needs --overwrite
    err = _error([*command, "--out", str(target)], capsys)
    assert "exists; pass --overwrite" in err
  else:
    err = _error([*command, "--out", str(target)], capsys)
    assert "is a file" in err and str(target) in err
  assert target.read_text() == "keep"


def test_float_labels_with_ce_loss(tmp_path, monkeypatch, capsys):
  (tmp_path / "float_model.py").write_text(
      "from test_user_models import FACTORY_MODULE\nexec(FACTORY_MODULE)\n"
  )
  monkeypatch.syspath_prepend(str(tmp_path))
  err = _error(
      ["analyze", "float_model:tiny_float_labels", "--loss", "ce", "--out", str(tmp_path / "p")],
      capsys,
  )
  assert "--loss ce needs integer class labels" in err and "float32" in err
  assert not (tmp_path / "p").exists()
