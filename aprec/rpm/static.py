"""The ``static`` policy: one fixed assignment, whatever the hardware does.

Example:
  >>> import jax, jax.numpy as jnp
  >>> policy = Static()
  >>> state = policy.init(None, jnp.array([2, 5]))
  >>> _, a = policy(state, None, jax.random.key(0))
  >>> a.tolist()
  [2, 5]
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class StaticState(NamedTuple):
  assignment: jax.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class Static:
  """Runs the assignment it was initialised with at every step (reads nothing)."""

  name: str = "static"
  reads_true_state: bool = False

  def init(self, ctx: Any, assignment: jax.Array) -> StaticState:
    return StaticState(jnp.asarray(assignment, jnp.int32))

  def __call__(
      self, state: StaticState, metrics: Any, key: jax.Array
  ) -> tuple[StaticState, jax.Array]:
    return state, state.assignment
