"""The NNP: specs (presets with cited numbers), the differentiable cost model, fitting a
spec to measurements, and the time-stepped runtime simulator with its scenarios."""

from aprec.hardware import cost as cost
from aprec.hardware import fit as fit
from aprec.hardware import scenarios as scenarios
from aprec.hardware import simulator as simulator
from aprec.hardware.cost import Cost as Cost
from aprec.hardware.cost import HardwareState as HardwareState
from aprec.hardware.cost import OpArrays as OpArrays
from aprec.hardware.cost import checked_cost as checked_cost
from aprec.hardware.cost import nominal_state as nominal_state
from aprec.hardware.cost import one_hot as one_hot
from aprec.hardware.cost import op_arrays as op_arrays
from aprec.hardware.fit import fit_spec as fit_spec
from aprec.hardware.specs import NNPSpec as NNPSpec
from aprec.hardware.specs import datacenter_gpu as datacenter_gpu
from aprec.hardware.specs import edge_npu as edge_npu
from aprec.hardware.specs import get_spec as get_spec
from aprec.hardware.spec_io import load_spec as load_spec
from aprec.hardware.spec_io import save_spec as save_spec
from aprec.hardware.specs import presets as presets
from aprec.hardware.specs import validate as validate
