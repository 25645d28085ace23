"""No lost or silently replaced artifact from the command line (issue 13, cases 6-10)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

from aprec import checkpoint
from aprec.app import cli

REPO = pathlib.Path(__file__).resolve().parents[2]
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
  return capsys.readouterr().err


def test_analyze_without_out_keeps_the_shipped_profile(capsys):
  from aprec.app.inputs import default_profile_dir

  shipped = default_profile_dir("digits_cnn")
  before = (shipped / checkpoint.MANIFEST).read_text()
  err = _error(["analyze", "digits_cnn"], capsys)
  assert str(shipped) in err and "--overwrite" in err
  assert (shipped / checkpoint.MANIFEST).read_text() == before
  checkpoint.verify(shipped)


def test_second_run_into_the_same_new_out_fails_clearly(tmp_path, capsys):
  config = tmp_path / "tiny.json"
  config.write_text(json.dumps(TINY_RUN))
  out = tmp_path / "run"
  with checkpoint.write_directory(out, marker="config.json") as stage:  # the first run
    (stage / "config.json").write_text("{}")
    err = _error(["run", str(config), "--out", str(out)], capsys)
    assert "being written by another process" in err and str(out) in err
  assert json.loads((out / "config.json").read_text()) == {}  # the first one's, not replaced


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--scenario", "meteor"], "unknown scenario 'meteor'"),
        (["--steps", "0"], "--steps 0; expected 1..100,000"),
        (["--models", "resnet"], "Unknown model 'resnet'"),
        (["--rpm-models", "nope:f"], "cannot import module 'nope'"),
        ([], "already holds a demo output; pass --overwrite"),
    ],
)
def test_demo_checks_every_argument_before_any_work(tmp_path, argv, message, capsys):
  out = tmp_path / "demo"
  with checkpoint.write_directory(out, marker="summary.json") as stage:  # an earlier demo
    (stage / "summary.json").write_text('{"old": true}')
  err = _error(["demo", "--out", str(out), *argv], capsys)
  assert message in err
  assert json.loads((out / "summary.json").read_text()) == {"old": True}
  checkpoint.verify(out)


def test_failed_demo_rerun_leaves_the_earlier_demo_whole(tmp_path, monkeypatch, capsys):
  from aprec.app import demo, minilm_demo, rpm_demo

  out = tmp_path / "demo"
  with checkpoint.write_directory(out, marker="summary.json") as stage:
    (stage / "summary.json").write_text('{"old": true}')
    (stage / "metrics.jsonl").write_text('{"step": 0}\n')
  write_stub = lambda d, *a, **k: (d.mkdir(), (d / "x").write_text(""))
  monkeypatch.setattr(demo, "write", write_stub)
  monkeypatch.setattr(minilm_demo, "write", write_stub)  # its own test: test_minilm_demo.py

  def fail(directory, *args, **kwargs):
    (directory / "metrics.jsonl").write_text("")  # what the old demo did before failing
    raise ValueError("the closed loop failed")

  monkeypatch.setattr(rpm_demo, "write", fail)
  assert "closed loop failed" in _error(["demo", "--out", str(out), "--overwrite"], capsys)
  assert (out / "metrics.jsonl").read_text() == '{"step": 0}\n'
  assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
  err = _error(["report", str(out)], capsys)  # a clear line, not the KeyError the issue saw
  assert f"{out / 'summary.json'} is incomplete" in err


def test_ctrl_c_in_train_policy_exits_130_and_keeps_the_policy(tmp_path):
  policy = tmp_path / "policy"
  with checkpoint.write_directory(policy, marker="policy.json") as stage:
    (stage / "policy.json").write_text('{"old": true}')
  code = textwrap.dedent(f"""
      import pathlib
      import tyro
      from aprec import checkpoint
      from aprec.app import cli, cmd_rpm

      def train_policy(config: tyro.conf.Positional[str], out: str = "",
                       overwrite: bool = False) -> None:
        with checkpoint.write_directory(pathlib.Path(out), overwrite=True,
                                        marker="policy.json") as stage:
          (stage / "policy.json").write_text("half")
          raise KeyboardInterrupt  # Ctrl-C late in training, mid-save
      cmd_rpm.train_policy = train_policy
      cli.main(["train-policy", "x.json", "--out", {str(policy)!r}, "--overwrite"])
  """)
  done = subprocess.run(
      [sys.executable, "-c", code],
      capture_output=True,
      text=True,
      timeout=120,
      cwd=REPO,
      env={"PYTHONPATH": str(REPO), "PATH": ""},
  )
  assert done.returncode == 130, done.stderr
  assert "interrupted" in done.stderr and "Traceback" not in done.stderr
  assert json.loads((policy / "policy.json").read_text()) == {"old": True}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]
