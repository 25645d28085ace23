"""Hand-written op tables shared by the cost-model and simulator tests."""

from __future__ import annotations

from aprec.emulator.ops import Op


def dot(m, k, n, name="dot"):
  """An ``(m, k) @ (k, n)`` matmul with a weight."""
  return Op(
      name=name,
      kind="dot_general",
      lhs_shape=(m, k),
      rhs_shape=(k, n),
      out_shape=(m, n),
      weight_operand=1,
      macs=m * k * n,
      contraction_size=k,
  )


def digits_ops(b=8):
  """The digits CNN's four ops at batch ``b`` (convs SAME-padded on 8x8 images)."""
  return [
      Op(
          name="Conv_0",
          kind="conv_general_dilated",
          lhs_shape=(b, 8, 8, 1),
          rhs_shape=(3, 3, 1, 16),
          out_shape=(b, 8, 8, 16),
          weight_operand=1,
          macs=b * 64 * 9 * 16,
          contraction_size=9,
      ),
      Op(
          name="Conv_1",
          kind="conv_general_dilated",
          lhs_shape=(b, 8, 8, 16),
          rhs_shape=(3, 3, 16, 32),
          out_shape=(b, 8, 8, 32),
          weight_operand=1,
          macs=b * 64 * 144 * 32,
          contraction_size=144,
      ),
      dot(b, 512, 64, "Dense_0"),
      dot(b, 64, 10, "Dense_1"),
  ]
