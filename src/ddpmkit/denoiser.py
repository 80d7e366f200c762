"""Denoiser: any network f(x_t, t) plus a parameterization, seen as an estimate of x_0.

What the network outputs is a preconditioning choice: x_0 itself, eps, v, the model mean mu, or
EDM's F with x0_hat = c_skip x_t + c_out F(c_in x_t, t) (``edm``, with the data's sigma_data).
The Denoiser converts its output exactly (``ddpmkit.diffusion``) so that samplers, losses and
the likelihood only ever see x0_hat(x_t, t). The choice matters for training, not for the maths:
under the ELBO weight C_t the network's raw error costs C_t (d x0_hat / d raw)^2, which eps, v
and edm keep bounded as t -> 1 and a raw x0 output does not (docs/theory.md).

The network is always called with the *original* chain's t (1..T) and the conversions use the
original chain's tables, whatever sub-chain a sampler walks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from . import diffusion as D
from .errors import InputError
from .schedules import NoiseSchedule

NetFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Denoiser(nn.Module):
    """x0_hat, eps_hat, v_hat and mu_theta from a network's prediction.

    Args:
        net: a callable ``net(x_t, t) -> tensor`` with x_t (B, ...) and t int64 (B,) in 1..T,
            returning a tensor shaped like x_t. An ``nn.Module`` is registered as a submodule
            (so ``.to()``, ``.parameters()`` and ``state_dict()`` see it); a plain function works.
        schedule: the training chain (length T+1 tables).
        parameterization: what the net predicts: ``"x0"``, ``"eps"``, ``"v"``, ``"mu"`` or
            ``"edm"`` (the net sees c_in x_t and outputs F; see :func:`ddpmkit.diffusion.
            edm_coefficients`).
        sigma_data: the data's standard deviation, used by ``"edm"`` only.
    """

    def __init__(self, net: NetFn, schedule: NoiseSchedule,
                 parameterization: D.Parameterization = "x0",
                 sigma_data: float = D.EDM_SIGMA_DATA) -> None:
        super().__init__()
        if parameterization not in D.PARAMETERIZATIONS:
            raise InputError(
                f"unknown parameterization {parameterization!r}; "
                f"choose one of {', '.join(D.PARAMETERIZATIONS)}"
            )
        if schedule.is_respaced:
            raise InputError("a Denoiser needs the full training schedule, not a respaced one")
        if not (isinstance(sigma_data, (int, float)) and sigma_data > 0):
            raise InputError(f"sigma_data must be a number > 0; got {sigma_data!r}")
        self.net = net
        self.schedule = schedule
        self.parameterization = parameterization
        self.sigma_data = float(sigma_data)

    @property
    def T(self) -> int:
        return self.schedule.T

    def raw(self, x_t: torch.Tensor, t: torch.Tensor | int,
            y: torch.Tensor | None = None) -> torch.Tensor:
        """The network's own output (in its parameterization), shape checked. ``y``: class
        labels (B,) for a class-conditional net (None: unconditional, the null class)."""
        t = D.as_timesteps(t, x_t, self.T)
        if self.parameterization == "edm":  # the net sees x_t at unit scale: c_in x_t
            x_t = D.edm_coefficients(self.schedule, t, x_t, self.sigma_data)[0] * x_t
        out = self.net(x_t, t) if y is None else self.net(x_t, t, y)
        if hasattr(out, "sample") and not isinstance(out, torch.Tensor):
            out = out.sample  # diffusers' UNet2DOutput
        if not isinstance(out, torch.Tensor) or out.shape != x_t.shape:
            shape = getattr(out, "shape", type(out))
            raise InputError(
                f"the net returned {shape} for input {tuple(x_t.shape)}; it must return a tensor "
                "shaped like x_t"
            )
        return out

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | int,
                y: torch.Tensor | None = None) -> torch.Tensor:
        """x0_hat(x_t, t), (B, ...)."""
        return self.x0_hat(x_t, t, y)

    def x0_hat(self, x_t: torch.Tensor, t: torch.Tensor | int,
               y: torch.Tensor | None = None) -> torch.Tensor:
        """The estimate of the clean data, E[x_0 | x_t] (E[x_0 | x_t, y] given labels y) for a
        perfect model."""
        t = D.as_timesteps(t, x_t, self.T)
        pred = self.raw(x_t, t, y).to(x_t.dtype)
        return D.x0_from_prediction(self.schedule, x_t, pred, t, self.parameterization,
                                    self.sigma_data)

    def eps_hat(self, x_t: torch.Tensor, t: torch.Tensor | int,
                y: torch.Tensor | None = None) -> torch.Tensor:
        """eps_hat = (x_t - sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t)."""
        t = D.as_timesteps(t, x_t, self.T)
        if self.parameterization == "eps" and type(self) is Denoiser:
            return self.raw(x_t, t, y).to(x_t.dtype)
        return D.eps_from_x0(self.schedule, x_t, self.x0_hat(x_t, t, y), t)

    def v_hat(self, x_t: torch.Tensor, t: torch.Tensor | int,
              y: torch.Tensor | None = None) -> torch.Tensor:
        """v_hat = (sqrt(alpha_bar_t) x_t - x0_hat) / sqrt(1 - alpha_bar_t)."""
        t = D.as_timesteps(t, x_t, self.T)
        if self.parameterization == "v" and type(self) is Denoiser:
            return self.raw(x_t, t, y).to(x_t.dtype)
        return D.v_from_x0(self.schedule, x_t, self.x0_hat(x_t, t, y), t)

    def mu(self, x_t: torch.Tensor, t: torch.Tensor | int,
           y: torch.Tensor | None = None) -> torch.Tensor:
        """mu_theta(x_t, t) = c_xt(t) x_t + c_x0(t) x0_hat on the full chain."""
        t = D.as_timesteps(t, x_t, self.T)
        if self.parameterization == "mu" and type(self) is Denoiser:
            return self.raw(x_t, t, y).to(x_t.dtype)
        return D.mu_from_x0(self.schedule, x_t, self.x0_hat(x_t, t, y), t)

    @property
    def num_classes(self) -> int:
        """K of a class-conditional net (its config's ``num_classes``), 0 if unconditional."""
        cfg = getattr(self.net, "cfg", None)
        return int(getattr(cfg, "num_classes", 0) or 0)

    def conditioned(self, y: torch.Tensor, guidance: float = 0.0) -> GuidedDenoiser:
        """This denoiser with the labels ``y`` (B,) fixed, and classifier-free guidance
        ``guidance`` (see :class:`GuidedDenoiser`): what a sampler needs to draw class y."""
        return GuidedDenoiser(self, y, guidance)


class GuidedDenoiser(Denoiser):
    """A class-conditional denoiser with its labels y (B,) fixed and guidance weight w >= 0:

        x0_hat(x_t, t) = x0_hat(x_t, t, y) + w (x0_hat(x_t, t, y) - x0_hat(x_t, t, null))

    (Ho & Salimans 2021; in the form x0(null) + s (x0(y) - x0(null)) the scale is s = 1 + w).
    w = 0 is the denoiser of p(x_0 | y), whose C_t-weighted regression is the ELBO of
    -log p(x_0 | y). For w > 0 it is the denoiser of no distribution (docs/theory.md): the bound
    no longer applies, which is why the likelihood only ever uses w = 0. Both halves run in one
    network call of twice the batch. Samplers see it as any other Denoiser.
    """

    def __init__(self, base: Denoiser, y: torch.Tensor, guidance: float = 0.0) -> None:
        super().__init__(base.net, base.schedule, base.parameterization, base.sigma_data)
        k = base.num_classes
        if k < 1:
            raise InputError("this run's denoiser is unconditional: it cannot draw a class; "
                             "train one with --conditional")
        y = torch.as_tensor(y)
        if y.dtype.is_floating_point or y.dim() != 1:
            raise InputError(f"labels must be whole numbers of shape (B,); got {y.dtype} "
                             f"{tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
            raise InputError(f"class {int(y.max()) if int(y.max()) >= k else int(y.min())} is "
                             f"not one of this model's classes 0..{k - 1}")
        if not (isinstance(guidance, (int, float)) and guidance >= 0):
            raise InputError(f"guidance must be a number >= 0; got {guidance!r}")
        self.y, self.guidance, self.null = y.to(torch.int64), float(guidance), k

    def x0_hat(self, x_t: torch.Tensor, t: torch.Tensor | int,
               y: torch.Tensor | None = None) -> torch.Tensor:
        y = (self.y if y is None else y).to(x_t.device)
        if y.shape != (x_t.shape[0],):
            raise InputError(f"{y.numel()} labels for a batch of {x_t.shape[0]}")
        if self.guidance == 0.0:
            return super().x0_hat(x_t, t, y)
        t = D.as_timesteps(t, x_t, self.T)
        both = super().x0_hat(torch.cat([x_t, x_t]), torch.cat([t, t]),
                              torch.cat([y, torch.full_like(y, self.null)]))
        cond, unc = both.chunk(2)
        return cond + self.guidance * (cond - unc)
