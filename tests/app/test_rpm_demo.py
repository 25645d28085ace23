"""A short smoke run of aprec/rpm/demo.py on the shipped digits CNN."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_demo_smoke(tmp_path):
  from aprec.app import rpm_demo as demo

  summary = demo.run(tmp_path, steps=20)
  rows = summary["models"]["digits_cnn"]["rows"]
  assert {r["policy"] for r in rows} == {
      "static_fp16",
      "static_int8",
      "greedy",
      "greedy_restore",
      "oracle",
      "learned",
  }
  for name in (
      "report.md",
      "summary.json",
      "metrics.jsonl",
      "power_digits_cnn.png",
      "modes_digits_cnn.png",
      "accuracy_energy_digits_cnn.png",
  ):
    assert (tmp_path / name).is_file()
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 6 * 20 and json.loads(lines[0])["policy"] == "static_fp16"
