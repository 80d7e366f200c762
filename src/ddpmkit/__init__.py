"""ddpmkit: Denoising Diffusion Probabilistic Models with exact maths. The network is a denoiser."""

from . import diffusion
from .denoiser import Denoiser
from .errors import InputError
from .likelihood import DecoderSpec, ELBOEstimator, elbo_terms, fit_mmse, negative_elbo_bpd
from .losses import loss_weights
from .samplers import sample, sample_ancestral
from .schedules import NoiseSchedule, cosine, from_betas, linear, make_schedule, respace, sigmoid

__version__ = "0.1.0"

__all__ = [
    "DecoderSpec", "Denoiser", "ELBOEstimator", "InputError", "NoiseSchedule", "cosine",
    "diffusion",
    "elbo_terms", "fit_mmse", "from_betas", "linear", "loss_weights", "make_schedule",
    "negative_elbo_bpd", "respace", "sample", "sample_ancestral", "sigmoid",
]
