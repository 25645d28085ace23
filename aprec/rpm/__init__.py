"""The runtime precision manager (RPM): policies that pick each op's mode from live metrics.

Policies share one interface, ``policy.init(ctx, assignment) -> state`` and the pure
``policy(state, metrics, key) -> (state, next_assignment)``, so each runs jitted inside
``lax.scan`` with the simulator (``loop.run_episode``):

- ``Static``: a fixed assignment;
- ``Greedy``: the seed's threshold rule (``restore=True``: with hysteresis back up);
- ``Oracle``: the exact optimum for the true current state (a yardstick);
- ``Learned``: a Flax network trained against the differentiable cost model.

``demo.run`` is the end-to-end job; ``cli`` holds the experiment commands.
"""

from aprec.rpm.context import LADDER as LADDER
from aprec.rpm.context import Context as Context
from aprec.rpm.context import make_context as make_context
from aprec.rpm.deployment import Deployment as Deployment
from aprec.rpm.deployment import deploy as deploy
from aprec.rpm.deployment import sensitivity_table as sensitivity_table
from aprec.rpm.greedy import Greedy as Greedy
from aprec.rpm.learned import Learned as Learned
from aprec.rpm.learned import PolicyNet as PolicyNet
from aprec.rpm.loop import Trace as Trace
from aprec.rpm.loop import run_episode as run_episode
from aprec.rpm.oracle import Oracle as Oracle
from aprec.rpm.static import Static as Static
