"""The exported program against the emulator: op by op, under jit, and what it holds."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from models import tiny, tiny_encoder

from aprec import Emulator
from aprec.emulator.formats import MODE_TABLE, MODES
from aprec.export import program as program_lib


@pytest.fixture(scope="module")
def setup():
  module, params, x = tiny()
  return Emulator(module.apply, params, x), params, x


def _assignments(emu):
  """Mixed assignments that together put every mode on a weighted and a weightless op."""
  n = len(emu.ops)
  return [np.array([(k + j) % len(MODES) for j in range(n)], np.int32) for k in (0, 2, 4)]


def test_equal_to_the_emulator_op_by_op(setup):
  emu, params, x = setup
  for modes in _assignments(emu):
    program = program_lib.build(emu, params, modes)
    with jax.disable_jit():
      got, expected = program(x), emu(params, x, modes)
    np.testing.assert_array_equal(
        np.asarray(got), np.asarray(expected), err_msg=str([MODES[m] for m in modes])
    )


@pytest.fixture(scope="module")
def encoder():
  module, params, inputs = tiny_encoder()
  return Emulator(module.apply, params, inputs), params, inputs


def _max_diff(a, b):
  return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def test_pytree_inputs_padding_mask_and_calibration_equal_the_emulator_op_by_op(encoder):
  emu, params, inputs = encoder
  assert emu.mask_input == "[1]"  # (ids, mask): the bool leaf
  ignoring_mask = Emulator(emu.apply_fn, params, inputs, padding_mask=None)
  amax = emu.calibrate(params, [inputs])
  modes = emu.assignment("fp8_e5m2,query=int8,key=int4,head=int4,out=bf16")
  dynamic = program_lib.build(emu, params, modes)
  calibrated = program_lib.build(emu, params, modes, activation_amax=amax)
  assert [a.name for a in calibrated.arrays if a.role == "amax"] == ["activation_amax"]
  with jax.disable_jit():
    expected = emu(params, inputs, modes)
    np.testing.assert_array_equal(np.asarray(dynamic(inputs)), np.asarray(expected))
    expected_static = emu(params, inputs, modes, activation_amax=amax)
    np.testing.assert_array_equal(np.asarray(calibrated(inputs)), np.asarray(expected_static))
    # Both settings change the outputs here, so the equalities check they are honoured.
    assert _max_diff(ignoring_mask(params, inputs, modes), expected) > 1e-4
    assert _max_diff(expected_static, expected) > 1e-4


def test_symbolic_batch_under_jit_within_tolerance(setup):
  emu, params, x = setup
  modes = emu.assignment("int4,embed=int8,head=fp8_e4m3")
  program = program_lib.build(emu, params, modes)
  exported = program.export(("cpu",))
  arrays = [a.array for a in program.arrays]
  y = exported.call(arrays, [x])
  expected = jax.jit(emu)(params, x, modes)
  np.testing.assert_allclose(
      np.asarray(y), np.asarray(expected), rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(expected)))
  )
  for batch in (1, 9):  # any batch size, one input shape per call
    assert exported.call(arrays, [jnp.ones((batch, 6, 6, 1))]).shape == (batch, 3)


def test_weights_only_in_storage_formats_and_integer_products(setup):
  emu, params, x = setup
  modes = emu.assignment("int8,head=int4")
  program = program_lib.build(emu, params, modes)
  kernel_paths = {"params.conv.kernel", "params.embed.kernel", "params.head.kernel"}
  assert set(program.params_left_out) == kernel_paths
  by_op = {a.op: a.array for a in program.arrays if a.role == "weight"}
  assert by_op["conv"].dtype == np.uint8 and by_op["conv"].size == 3 * 3 * 1 * 4
  assert by_op["head"].dtype == np.uint8 and by_op["head"].size == 4 * 3 // 2  # two per byte
  text = program.export(("cpu",)).mlir_module()
  products = re.findall(
      r"stablehlo\.(?:dot_general|convolution).*?: \((.*?)\) -> (tensor<\S+>)", text
  )
  assert len(products) == len(emu.ops)  # conv, embed, the weightless einsum, head
  for operands, result in products:
    assert operands.count("xi8>") == 2 and result.endswith("xi32>"), (operands, result)
  # No weight-sized float constant: nothing of the float32 kernels is baked in.
  weight_sizes = {int(np.prod(op.rhs_shape)) for op in emu.ops if op.has_weight}
  for shape in re.findall(r"stablehlo\.constant dense<[^>]*> : tensor<([\dx]+)xf32>", text):
    assert int(np.prod([int(d) for d in shape.split("x")])) not in weight_sizes


def test_float_modes_round_once_before_a_float32_product(setup):
  emu, params, x = setup
  text = program_lib.build(emu, params, emu.assignment("bf16")).export(("cpu",)).mlir_module()
  bf16 = MODE_TABLE[MODES.index("bf16")]
  rounding = f"reduce_precision %\\w+, format = e{bf16.exponent_bits}m{bf16.mantissa_bits}"
  # One rounding per activation operand: conv, embed, head and both sides of the einsum.
  assert len(re.findall(rounding, text)) == 5
  assert "tensor<3x3x1x4xbf16>" in text  # the conv weight arrives as bf16
  assert "xi8>" not in text
  # fp8 activations round with reduce_precision, never an f32 -> f8 cast XLA may drop.
  fp8 = program_lib.build(emu, params, emu.assignment("fp8_e4m3")).export(("cpu",)).mlir_module()
  assert len(re.findall(r"reduce_precision %\w+, format = e5m3", fp8)) == 5
  assert not re.findall(r"stablehlo\.convert .*-> tensor<\S+xf8E4M3FN>", fp8)


def test_rejects_an_assignment_of_another_model(setup):
  emu, params, _ = setup
  with pytest.raises(ValueError, match=r"shape \(4,\), one entry per op \(conv, embed"):
    program_lib.build(emu, params, np.zeros(7, np.int32))
  with pytest.raises(ValueError, match=r"activation_amax has shape \(3, 2\), expected \(4, 2\)"):
    program_lib.build(emu, params, emu.assignment("int8"), activation_amax=np.ones((3, 2)))
