"""Samplers: one entry, :func:`sample`, over one small core per sampler.

``sample(denoiser, shape, sampler=NAME, steps=..., spacing=..., ...)`` builds the time grid, x_T,
the generator, progress and trajectory recording once and runs ``CORES[NAME]``, a plain function
``core(denoise, x, grid, *, noise, callback, **its_options) -> x_0`` (see ``samplers/common.py``).
Adding a sampler is one core and one entry in ``CORES``. ``sample_<name>`` and ``SAMPLERS[name]``
are ``sample`` with the sampler named.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import InputError
from .ancestral import ancestral, ancestral_step
from .common import (
    CLIP_POLICIES,
    SAMPLER_SPACINGS,
    Callback,
    ClipPolicy,
    Grid,
    SampleResult,
    SamplerSpacing,
    Step,
    apply_x0_policy,
    sampling_grid,
)
from .ddim import ddim
from .dpm_solver import dpmpp_2m, dpmpp_2m_sde, dpmpp_3m
from .heun import heun
from .unipc import unipc

CORES: dict[str, Callable[..., torch.Tensor]] = {
    "ancestral": ancestral,
    "ddim": ddim,
    "dpmpp2m": dpmpp_2m,
    "dpmpp3m": dpmpp_3m,
    "dpmpp2m_sde": dpmpp_2m_sde,
    "heun": heun,
    "unipc": unipc,
}
SAMPLER_NAMES: tuple[str, ...] = tuple(CORES)


def _core(name: str) -> Callable[..., torch.Tensor]:
    if name not in CORES:
        raise InputError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLER_NAMES)}")
    return CORES[name]


def _options(core: Callable[..., torch.Tensor], given: dict[str, Any]) -> dict[str, Any]:
    """The core's own keyword options (its defaults, then ``given``), as recorded in meta."""
    params = inspect.signature(core).parameters.values()
    return {p.name: p.default for p in params
            if p.kind is p.KEYWORD_ONLY and p.name not in ("noise", "callback")} | given


@torch.no_grad()
def sample(denoiser, shape: Sequence[int] | None = None, *, sampler: str = "ancestral",
           steps: int | None = None, spacing: SamplerSpacing = "uniform",
           clip: ClipPolicy = "none", x_T: torch.Tensor | None = None, seed: int | None = None,
           generator: torch.Generator | None = None, device=None,
           dtype: torch.dtype = torch.float32, progress: bool = False,
           return_trajectory: bool = False, callback: Callback | None = None,
           **options: Any) -> SampleResult:
    """Samples (B, ...) from ``denoiser`` (x0_hat(x_t, t)) with one of ``SAMPLER_NAMES``.

    ``shape`` (B, ...) or an initial ``x_T``; ``steps`` grid points (default all T) placed by
    ``spacing``; ``clip`` is the x0_hat policy; all noise, x_T first, comes from ``generator``
    or a new one seeded with ``seed`` (default 0); the network runs in ``dtype``. ``callback``
    gets a :class:`Step` per grid point (also kept in ``trajectory`` on request); ``options``
    go to the core (ancestral ``variance``, ddim ``eta``, unipc ``order`` and ``corrector``).
    """
    core = _core(sampler)
    if clip not in CLIP_POLICIES:
        raise InputError(f"unknown clip policy {clip!r}; choose one of {', '.join(CLIP_POLICIES)}")
    grid = sampling_grid(denoiser.schedule, steps, spacing)
    device = device if device is not None else (x_T.device if x_T is not None else "cpu")
    if generator is None:
        generator = torch.Generator(device=device)
        generator.manual_seed(0 if seed is None else int(seed))
    if x_T is None and shape is None:
        raise InputError("give either shape or x_T")
    x = (x_T.to(device=device, dtype=dtype) if x_T is not None
         else torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype))
    calls, trajectory = [0], [] if return_trajectory else None
    bar = _progress_bar(grid.S, sampler) if progress else None

    def denoise(x_t: torch.Tensor, t: int) -> torch.Tensor:
        calls[0] += 1
        return apply_x0_policy(denoiser.x0_hat(x_t.to(dtype), t), clip).to(x_t.dtype)

    def noise(like: torch.Tensor) -> torch.Tensor:
        z = torch.randn(like.shape, generator=generator, device=like.device, dtype=dtype)
        return z.to(like.dtype)

    def on_step(k: int, x_k: torch.Tensor, x0_hat: torch.Tensor) -> None:
        if bar is not None:
            bar.update()
        if trajectory is not None or callback is not None:
            step = Step(k=k, t=grid.t[k], x_t=x_k.to(dtype), x0_hat=x0_hat.to(dtype))
            if trajectory is not None:
                trajectory.append(step)
            if callback is not None:
                callback(step)

    x = core(denoise, x, grid, noise=noise, callback=on_step, **options)
    if bar is not None:
        bar.close()
    meta = {"sampler": sampler, "steps": grid.S, "network_calls": calls[0], "spacing": spacing,
            "clip": clip, "seed": seed, "timesteps": grid.t[1:]} | _options(core, options)
    return SampleResult(x=x.to(dtype), trajectory=trajectory, meta=meta)


def _progress_bar(total: int, desc: str):
    from ..progress import progress

    return progress(total=total, desc=desc, unit="step", leave=False)


def _named(name: str) -> Callable[..., SampleResult]:
    def sample_named(denoiser, shape: Sequence[int] | None = None, **kw: Any) -> SampleResult:
        return sample(denoiser, shape, sampler=name, **kw)

    sample_named.__name__ = sample_named.__qualname__ = f"sample_{name}"
    sample_named.__doc__ = f"``sample(denoiser, shape, sampler={name!r}, ...)``: see sample()."
    return sample_named


#: name -> ``sample`` with that sampler, for callers that pick a sampler by name
SAMPLERS: dict[str, Callable[..., SampleResult]] = {name: _named(name) for name in CORES}
sample_ancestral = SAMPLERS["ancestral"]
sample_ddim = SAMPLERS["ddim"]
sample_dpmpp_2m = SAMPLERS["dpmpp2m"]
sample_dpmpp_3m = SAMPLERS["dpmpp3m"]
sample_dpmpp_2m_sde = SAMPLERS["dpmpp2m_sde"]
sample_heun = SAMPLERS["heun"]
sample_unipc = SAMPLERS["unipc"]


def get_sampler(name: str) -> Callable[..., SampleResult]:
    """``sample`` with the sampler ``name``; InputError naming the choices otherwise."""
    _core(name)
    return SAMPLERS[name]


__all__ = ["CLIP_POLICIES", "CORES", "SAMPLERS", "SAMPLER_NAMES", "SAMPLER_SPACINGS", "Grid",
           "SampleResult", "Step", "ancestral_step", "apply_x0_policy", "get_sampler", "sample",
           "sample_ancestral", "sample_ddim", "sample_dpmpp_2m", "sample_dpmpp_2m_sde",
           "sample_dpmpp_3m", "sample_heun", "sample_unipc", "sampling_grid"]
