"""The op table: one record per matrix-multiplying operation of a model."""

from __future__ import annotations

import dataclasses
import math

KINDS = ("dot_general", "conv_general_dilated")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Op:
  """One matmul or convolution of a model, as the emulator and the cost model see it.

  Attributes:
    name: stable, readable name (the weight's parameter path, e.g. ``Dense_0`` or
      ``encoder/layers/0/attn/query``; else where its operands came from).
    kind: ``"dot_general"`` or ``"conv_general_dilated"``.
    lhs_shape, rhs_shape, out_shape: operand and result shapes.
    weight_operand: 0 (lhs) or 1 (rhs) when that operand is a model parameter, else None.
    macs: multiply-accumulates of one call.
    contraction_size: MACs per output element (the ``K`` of the product).
    weight_elements: elements of the weight operand (0 without one).
    activation_elements: elements of the non-weight operand(s).
    output_elements: elements of the result.
  """

  name: str
  kind: str
  lhs_shape: tuple[int, ...]
  rhs_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  weight_operand: int | None
  macs: int
  contraction_size: int

  @property
  def has_weight(self) -> bool:
    return self.weight_operand is not None

  @property
  def weight_elements(self) -> int:
    if self.weight_operand is None:
      return 0
    return math.prod((self.lhs_shape, self.rhs_shape)[self.weight_operand])

  @property
  def activation_elements(self) -> int:
    sizes = (math.prod(self.lhs_shape), math.prod(self.rhs_shape))
    return sum(s for i, s in enumerate(sizes) if i != self.weight_operand)

  @property
  def output_elements(self) -> int:
    return math.prod(self.out_shape)

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d.update(has_weight=self.has_weight, weight_elements=self.weight_elements,
             activation_elements=self.activation_elements,
             output_elements=self.output_elements)
    return d
