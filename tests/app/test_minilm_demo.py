"""Tests for aprec/app/minilm_demo.py and minilm_loop_demo.py: ``aprec demo``'s MiniLM part
end to end, shortened (4 pairs, 6 closed-loop steps), with its numbers checked against
independent computations. (One test: it compiles MiniLM-L6's emulator twice, ~40 s cold.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from aprec.app import minilm_demo, minilm_loop_demo


@pytest.mark.slow
def test_minilm_demo_runs_every_mode_the_plan_and_every_policy(tmp_path, monkeypatch):
  monkeypatch.setattr(minilm_loop_demo, "DEMO_STEPS", 6)
  monkeypatch.setattr(minilm_loop_demo, "DEMO_PAIRS", 4)
  summary = minilm_demo.write(tmp_path, num_pairs=4)
  assert json.loads((tmp_path / "summary.json").read_text())["num_pairs"] == 4
  rows = {r["mode"]: r for r in summary["rows"]}
  assert rows["fp32"]["1 - cos to fp32"] < 1e-6  # fp32 against itself
  assert rows["bf16"]["1 - cos to fp32"] < rows["int4"]["1 - cos to fp32"]
  weight_kib = {m: rows[m]["weight KiB"] for m in ("fp32", "bf16", "int8", "int4")}
  assert weight_kib["fp32"] == 2 * weight_kib["bf16"] == 4 * weight_kib["int8"]
  assert weight_kib["int8"] == 2 * weight_kib["int4"]
  loop = summary["closed_loop"]
  q = {r["policy"]: r["quality"] for r in loop["rows"]}
  assert set(q) == {
      "static*",
      "hindsight",
      "oracle",
      "lookup",
      "greedy",
      "greedy_deadline",
      "learned",
  }
  assert all(0.0 <= v <= 1.0 for v in q.values())
  assert q["hindsight"] >= q["static*"]  # the best sequence includes staying on static*
  gap = q["hindsight"] - q["static*"]  # the headline, by hand
  if gap > 0:
    assert loop["gain_recovered"] == pytest.approx((q["learned"] - q["static*"]) / gap)
  else:
    assert np.isnan(loop["gain_recovered"])
  for name in [summary["figure"], *loop["figures"]]:
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
