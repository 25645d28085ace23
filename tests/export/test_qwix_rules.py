"""The plan as qwix rules on a small linen model: what they carry, what they leave out."""

import numpy as np
import pytest
from models import tiny

from aprec import Emulator
from aprec.export import qwix_rules

qwix = pytest.importorskip("qwix")


@pytest.fixture(scope="module")
def setup():
  module, params, x = tiny(batch=16)
  return module, params, x, Emulator(module.apply, params, x)


def test_rules_carry_weighted_ops_and_report_the_rest(setup):
  _, _, _, emu = setup
  plan = qwix_rules.rules_for(emu.ops, emu.assignment("int8,embed=bf16,head=fp32"))
  assert plan.rules == ({"module_path": "conv", "weight_qtype": "int8", "act_qtype": "int8"},)
  unexpressed = {u.op: (u.mode, u.reason) for u in plan.unexpressed}
  assert set(unexpressed) == {"embed", "embed/dot_general"}  # bf16, and the einsum of h·hᵀ
  mode, reason = unexpressed["embed"]
  assert mode == "bf16" and "not a qwix quantization type" in reason
  assert "two activations" in unexpressed["embed/dot_general"][1]
  with pytest.raises(ValueError, match="modes has 2 entries for 4 ops"):
    qwix_rules.rules_for(emu.ops, [5, 5])


def test_qwix_model_agrees_with_the_emulator(setup):
  module, params, x, emu = setup
  modes = emu.assignment("int8,embed/dot_general=fp32")  # fully expressible
  plan = qwix_rules.rules_for(emu.ops, modes)
  assert plan.unexpressed == ()
  expected = emu(params, x, modes)
  measured = qwix_rules.agreement(module, params, x, expected, plan)
  assert measured["unused_rules"] == []
  # Same grid up to activation granularity (qwix: per example, ours: per tensor).
  assert measured["rel_l2_diff"] < 0.05 and measured["top1_agreement"] >= 0.9
  # The rules did quantize: qwix's output is not the fp32 model's.
  fp32 = np.asarray(module.apply(params, x))
  qwix_out = qwix.quantize_model(module, qwix.QtProvider(plan.qt_rules())).apply(params, x)
  assert np.linalg.norm(np.asarray(qwix_out) - fp32) / np.linalg.norm(fp32) > 1e-4
  assert np.allclose(
      np.asarray(qwix_out), np.asarray(expected), rtol=0, atol=0.2 * float(np.abs(fp32).max())
  )
