"""The ``Policy`` contract every runtime precision policy satisfies.

A policy is a pair of pure functions over explicit state, as optax's
``GradientTransformation`` is a pair ``init``/``update``:

- ``policy.init(ctx, assignment) -> state``: the state before step 0, given the
  deployment ``Context`` and the assignment step 0 runs;
- ``policy(state, metrics, key) -> (state, next_assignment)``: after a step, from what the
  step's ``Metrics`` read, the int32 mode per op the next step runs.

Both are jittable and run inside ``lax.scan`` with the simulator (``loop.run_episode``).
A policy is a frozen dataclass (hashable: it is a static argument of the compiled loop)
with declared fields:

- ``name``: how reports call it;
- ``reads_true_state``: it reads the simulator's ground truth (``true_*`` fields), so it is
  a yardstick, not deployable (the oracle); deployable policies read sensors only.

Behaviour common to many policies is added by wrapping one (``aprec.rpm.fault_guard.guard``
falls back to a safe assignment on faulty sensors), not by branching on names.

Example:
  >>> from aprec.rpm.static import Static
  >>> from aprec.rpm.oracle import Oracle
  >>> isinstance(Static(), Policy), Oracle().reads_true_state
  (True, True)
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from aprec.typing import Array, Modes

PolicyState = Any
"""A policy's state: a pytree (usually a NamedTuple holding the ``Context``)."""


@runtime_checkable
class Policy(Protocol):
  """A runtime precision policy (see module doc)."""

  @property
  def name(self) -> str:
    """How reports call the policy."""

  @property
  def reads_true_state(self) -> bool:
    """Whether it reads ground truth (not deployable)."""

  def init(self, ctx: Any, assignment: Modes) -> PolicyState:
    """The state before step 0; ``assignment`` is what step 0 runs."""

  def __call__(self, state: PolicyState, metrics: Any, key: Array) -> tuple[PolicyState, Modes]:
    """The next state and the assignment the next step runs."""
