"""The runtime precision manager (RPM): policies that pick each op's mode from live metrics.

Every policy is a ``Policy`` (``policy.py``): ``policy.init(ctx, assignment) -> state`` and
the pure ``policy(state, metrics, key) -> (state, next_assignment)``, so each runs jitted
inside ``lax.scan`` with the simulator (``loop.run_episode``):

- ``Static``: a fixed assignment;
- ``Greedy``: the seed's threshold rule (``restore=True``: with hysteresis back up);
- ``Oracle``: the exact optimum for the true current state (a yardstick);
- ``Learned``: a Flax network trained against the differentiable cost model.

``guard(policy)`` wraps a deployable policy so it falls back to a safe assignment on
faulty sensors; ``compare`` runs a registry of policies (``POLICIES``) on a ``Deployment``.
"""

from aprec.rpm.compare import POLICIES as POLICIES
from aprec.rpm.compare import compare as compare
from aprec.rpm.compare import make_policies as make_policies
from aprec.rpm.context import LADDER as LADDER
from aprec.rpm.context import Context as Context
from aprec.rpm.context import make_context as make_context
from aprec.rpm.deployment import Deployment as Deployment
from aprec.rpm.deployment import deploy as deploy
from aprec.rpm.deployment import sensitivity_table as sensitivity_table
from aprec.rpm.greedy import Greedy as Greedy
from aprec.rpm.fault_guard import Guarded as Guarded
from aprec.rpm.fault_guard import guard as guard
from aprec.rpm.learned import Learned as Learned
from aprec.rpm.learned import PolicyNet as PolicyNet
from aprec.rpm.loop import Trace as Trace
from aprec.rpm.loop import run_episode as run_episode
from aprec.rpm.oracle import Oracle as Oracle
from aprec.rpm.policy import Policy as Policy
from aprec.rpm.static import Static as Static
