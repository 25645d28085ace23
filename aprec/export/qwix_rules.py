"""A precision plan as qwix rules, and what qwix cannot express of it.

qwix (a JAX quantization library) configures a Flax model with ``QtRule``s matched by
module path; ``qwix.quantize_model`` applies them. ``rules_for`` writes one rule per op
with a weight, keyed by the op's name (the weight's module path), and returns every part
of the plan the rules leave out, with the reason, so none is dropped silently:

- ``bf16``/``fp16`` ops: qwix quantizes to integer and fp8 types; a product in a 16-bit
  float is not a qwix quantization type;
- matmuls between two activations (attention's ``q·kᵀ`` and ``p·v``): rules select a
  module's ops by module path and op kind, not one product inside a module.

``CAVEATS`` lists where qwix's arithmetic differs from the emulator's even when a rule
exists; ``agreement`` measures how far the qwix model's outputs are from the emulator's.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aprec.emulator.formats import MODES
from aprec.emulator.ops import Op

_QTYPES = {"int8": "int8", "int4": "int4", "fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}

CAVEATS = (
    "activation scales: qwix's default is one scale per example/token with absmax / 127.5 "
    "for int8; the emulator's default is one scale per token (per example for "
    "convolutions) with absmax / 127, and with activation_scaling='per_tensor' no public "
    "QtRule matches (it cannot make activations per tensor while keeping weights per "
    "channel: disable_channelwise_axes applies to both operands)",
    "int4 products may not compile on XLA:CPU in qwix ('custom element sizes on "
    "non-sub-byte types'); agreement then reports the error",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Unexpressed:
  """A part of the plan the qwix rules do not carry."""

  op: str
  mode: str
  reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class QwixPlan:
  """Rules for ``qwix.QtProvider`` plus what they leave out.

  Attributes:
    rules: one per quantized op with a weight, as keyword arguments of ``qwix.QtRule``.
    unexpressed: ops at a mode other than fp32 the rules do not quantize, with reasons.
    caveats: where qwix's arithmetic differs from the emulator's under a matching rule.
  """

  rules: tuple[dict[str, Any], ...]
  unexpressed: tuple[Unexpressed, ...]
  caveats: tuple[str, ...] = CAVEATS

  def qt_rules(self) -> list[Any]:
    """The rules as ``qwix.QtRule`` objects (needs qwix: ``pip install qwix``)."""
    import qwix

    return [
        qwix.QtRule(
            **{
                k: jnp.dtype(v) if k.endswith("qtype") and v.startswith("float8") else v
                for k, v in r.items()
            }
        )
        for r in self.rules
    ]

  def to_dict(self) -> dict[str, Any]:
    return {
        "rules": list(self.rules),
        "unexpressed": [vars(u) for u in self.unexpressed],
        "caveats": list(self.caveats),
    }


def rules_for(ops: Sequence[Op], modes: Any) -> QwixPlan:
  """The qwix rules of an assignment over ``ops`` (an emulator's op table).

  Example:
    >>> from aprec.emulator.ops import Op
    >>> dense = Op(name="Dense_0", kind="dot_general", lhs_shape=(2, 4), rhs_shape=(4, 3),
    ...            out_shape=(2, 3), weight_operand=1, macs=24, contraction_size=4)
    >>> attn = dataclasses.replace(dense, name="attn/dot_general", weight_operand=None)
    >>> plan = rules_for([dense, attn], [5, 1])
    >>> plan.rules
    ({'module_path': 'Dense_0', 'weight_qtype': 'int8', 'act_qtype': 'int8'},)
    >>> [u.op for u in plan.unexpressed]
    ['attn/dot_general']
  """
  names = [MODES[int(m)] for m in np.asarray(modes)]
  if len(names) != len(ops):
    raise ValueError(
        f"modes has {len(names)} entries for {len(ops)} ops "
        f"({', '.join(op.name for op in ops)})"
    )
  rules, unexpressed = [], []
  for op, mode in zip(ops, names):
    if mode == "fp32":
      continue
    if not op.has_weight:
      unexpressed.append(
          Unexpressed(
              op=op.name,
              mode=mode,
              reason=(
                  "matmul between two activations: qwix rules select a module's ops by module "
                  "path and op kind, not one product inside a module"
              ),
          )
      )
    elif mode not in _QTYPES:
      unexpressed.append(
          Unexpressed(
              op=op.name,
              mode=mode,
              reason=(f"{mode} is not a qwix quantization type (qwix quantizes to int4/int8/fp8)"),
          )
      )
    else:
      rules.append(
          {
              "module_path": re.escape(op.name),
              "weight_qtype": _QTYPES[mode],
              "act_qtype": _QTYPES[mode],
          }
      )
  return QwixPlan(rules=tuple(rules), unexpressed=tuple(unexpressed))


def agreement(
    module: Any, params: Any, x: jax.Array, expected: jax.Array, plan: QwixPlan
) -> dict[str, Any]:
  """The qwix model's outputs against the emulator's (``expected``) on inputs ``x``.

  ``module`` is a linen module applied as ``module.apply(params, x)`` or an nnx module.
  Returns relative L2 difference, max abs difference, top-1 agreement and the rules that
  matched no op; ``error`` holds the message when qwix fails to run the model.
  """
  import qwix
  from flax import nnx

  provider = qwix.QtProvider(plan.qt_rules())
  try:
    if isinstance(module, nnx.Module):
      got = qwix.quantize_model(module, provider, x)(x)
    else:
      got = jax.jit(qwix.quantize_model(module, provider).apply)(params, x)
    got = np.asarray(got, np.float64)
  except Exception as err:  # noqa: BLE001 - reported, the caller decides
    return {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
  ref = np.asarray(expected, np.float64)
  unused = provider.get_unused_rules()
  return {
      "rel_l2_diff": float(np.linalg.norm(got - ref) / np.linalg.norm(ref)),
      "max_abs_diff": float(np.abs(got - ref).max()),
      "top1_agreement": float(np.mean(got.argmax(-1) == ref.argmax(-1))),
      "unused_rules": [r.module_path for r in unused],
  }
