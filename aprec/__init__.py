"""aprec: adaptive-precision neural network execution in JAX.

The packages follow the system's components (see the README's Architecture section):

- ``aprec.emulator`` — mode table, PAK, op discovery, DMA, the ``Emulator``, sweeps;
- ``aprec.hardware`` — NNP specs, the differentiable cost model, fitting, the simulator;
- ``aprec.sensitivity`` — per-op, per-mode sensitivity profiles and their validation;
- ``aprec.planning`` — budgets and the exact knapsack planner;
- ``aprec.rpm`` — the Runtime Precision Manager: policies, training, the closed loop;
- ``aprec.export`` — a model at an assignment as a servable ``jax.export`` artifact;
- ``aprec.models`` — the reference models and their data; ``aprec.app`` — the CLI;
- ``aprec.workflow`` — your own model to a running RPM in a few calls (``own_model``,
  ``analyze_model``, ``plan``, ``deploy``, ``train_policy``, ``run``, ``report``).

The most used entry points are here at the top level.
"""

from aprec import emulator as emulator
from aprec import export as export
from aprec import hardware as hardware
from aprec import models as models
from aprec import planning as planning
from aprec import rpm as rpm
from aprec import sensitivity as sensitivity
from aprec.emulator import MODE_TABLE as MODE_TABLE
from aprec.emulator import MODES as MODES
from aprec.emulator import N_MODES as N_MODES
from aprec.emulator import STE as STE
from aprec.emulator import ActivationScaling as ActivationScaling
from aprec.emulator import Emulator as Emulator
from aprec.emulator import Op as Op
from aprec.emulator import Passthrough as Passthrough
from aprec.emulator import mode_index as mode_index
from aprec.emulator import mode_indices as mode_indices
from aprec.hardware import NNPSpec as NNPSpec
from aprec.planning import Budget as Budget
from aprec.planning import plan as plan
from aprec.sensitivity import SensitivityProfile as SensitivityProfile
from aprec.sensitivity import analyze as analyze
from aprec.workflow import analyze_model as analyze_model
from aprec.workflow import deploy as deploy
from aprec.workflow import own_model as own_model
from aprec.workflow import report as report
from aprec.workflow import run as run
from aprec.workflow import train_policy as train_policy

__version__ = "0.1.0"
