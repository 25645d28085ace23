"""aprec: adaptive-precision neural network execution in JAX."""

from aprec.formats import MODE_TABLE as MODE_TABLE
from aprec.formats import MODES as MODES
from aprec.formats import mode_index as mode_index
from aprec.ops import Op as Op

__version__ = "0.1.0"
