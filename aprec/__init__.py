"""aprec: adaptive-precision neural network execution in JAX.

Public surface: the mode table (``MODES``, ``MODE_TABLE``), the op record (``Op``), the
NNP emulator (``Emulator``), and the reference models (``aprec.models.load``).
"""

from aprec.emulator import Emulator as Emulator
from aprec.formats import MODE_TABLE as MODE_TABLE
from aprec.formats import MODES as MODES
from aprec.formats import STE as STE
from aprec.formats import mode_index as mode_index
from aprec.formats import mode_indices as mode_indices
from aprec.ops import Op as Op
from aprec.ops import Passthrough as Passthrough
from aprec.pak import ActivationScaling as ActivationScaling

__version__ = "0.1.0"
