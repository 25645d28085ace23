"""Sensitivity Analysis Module: per-op, per-mode Δloss from measured perturbation,
gradients (Taylor, Fisher), Hessian traces (HAWQ-V2) or in-training tracking; the
``SensitivityProfile`` saved beside the model; validation against measured Δloss."""

from aprec.sensitivity import tracker as tracker
from aprec.sensitivity.methods import DEFAULT_METHOD as DEFAULT_METHOD
from aprec.sensitivity.methods import METHODS as METHODS
from aprec.sensitivity.methods import analyze as analyze
from aprec.sensitivity.objective import DEFAULT_LOSS as DEFAULT_LOSS
from aprec.sensitivity.objective import LOSSES as LOSSES
from aprec.sensitivity.profile import ProfileError as ProfileError
from aprec.sensitivity.profile import SensitivityProfile as SensitivityProfile
from aprec.sensitivity.profile import load as load
from aprec.sensitivity.validation import Validation as Validation
from aprec.sensitivity.validation import validate as validate
