"""Samplers: plain functions over a Denoiser, one small module each, one interface."""

from .ancestral import ancestral_step, sample_ancestral
from .common import CLIP_POLICIES, SampleResult, Step, apply_x0_policy

__all__ = ["CLIP_POLICIES", "SampleResult", "Step", "ancestral_step", "apply_x0_policy",
           "sample_ancestral"]
