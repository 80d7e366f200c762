"""Samplers: plain functions over a Denoiser, one small module each, one interface.

``SAMPLERS`` maps the command-line names to the functions; every one is called as
``sample_<name>(denoiser, shape, *, x_T, steps, spacing, clip, seed, generator, device, dtype,
progress, return_trajectory, callback, **specific)`` and returns a :class:`SampleResult`.
"""

from collections.abc import Callable

from .ancestral import ancestral_step, sample_ancestral
from .common import (
    CLIP_POLICIES,
    SAMPLER_SPACINGS,
    Grid,
    SampleResult,
    Step,
    apply_x0_policy,
    sampling_grid,
)
from .ddim import sample_ddim
from .dpm_solver import sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_3m
from .heun import sample_heun
from .unipc import sample_unipc

SAMPLERS: dict[str, Callable[..., SampleResult]] = {
    "ancestral": sample_ancestral,
    "ddim": sample_ddim,
    "dpmpp2m": sample_dpmpp_2m,
    "dpmpp3m": sample_dpmpp_3m,
    "dpmpp2m_sde": sample_dpmpp_2m_sde,
    "heun": sample_heun,
    "unipc": sample_unipc,
}
SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)


def get_sampler(name: str) -> Callable[..., SampleResult]:
    """The sampler function for a command-line name; InputError naming the choices otherwise."""
    from ..errors import InputError

    if name not in SAMPLERS:
        raise InputError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLER_NAMES)}")
    return SAMPLERS[name]


__all__ = ["CLIP_POLICIES", "SAMPLERS", "SAMPLER_NAMES", "SAMPLER_SPACINGS", "Grid",
           "SampleResult", "Step", "ancestral_step", "apply_x0_policy", "get_sampler",
           "sample_ancestral", "sample_ddim", "sample_dpmpp_2m", "sample_dpmpp_2m_sde",
           "sample_dpmpp_3m", "sample_heun", "sample_unipc", "sampling_grid"]
