"""The NNP emulator: precision modes, the Precision Adaptation Kernel (PAK), op discovery,
precision-aware DMA and the one sweep loop over batches of assignments.

Modules behind this face:
  ``formats`` — the mode table and its arithmetic (casts, integer quantizers, STE);
  ``pak`` — one matmul/convolution in a traced mode: scale → round → multiply → scale back;
  ``ops`` — op discovery and naming from a jaxpr; ``_jaxpr`` — the only use of JAX internals;
  ``dma`` — tensors in their storage formats (INT4 two per byte, FP8, scales), exact bytes;
  ``core`` — the ``Emulator``; ``sweep`` — assignments × batches in one compiled call;
  ``scoring`` — measured loss/accuracy of a classifier under many assignments;
  ``retrieval_scoring`` — measured retrieval metrics and fidelity of a sentence embedder.
"""

from aprec.emulator import dma as dma
from aprec.emulator import formats as formats
from aprec.emulator import pak as pak
from aprec.emulator.core import Emulator as Emulator
from aprec.emulator.formats import MODE_BITS as MODE_BITS
from aprec.emulator.formats import MODE_TABLE as MODE_TABLE
from aprec.emulator.formats import MODES as MODES
from aprec.emulator.formats import N_MODES as N_MODES
from aprec.emulator.formats import STE as STE
from aprec.emulator.formats import mode_index as mode_index
from aprec.emulator.formats import mode_indices as mode_indices
from aprec.emulator.ops import Op as Op
from aprec.emulator.ops import Passthrough as Passthrough
from aprec.emulator.pak import ActivationScaling as ActivationScaling
from aprec.emulator.scoring import Evaluator as Evaluator
from aprec.emulator.scoring import Measured as Measured
from aprec.emulator.retrieval_scoring import RetrievalEvaluator as RetrievalEvaluator
from aprec.emulator.retrieval_scoring import RetrievalMeasured as RetrievalMeasured
from aprec.emulator.batching import sweep as sweep
