"""The step embedding shared by every network: sinusoids of t, then an MLP.

t is the *original* chain's 1-based step (1..T), never "t - 1". It is rescaled to
s = t * 1000 / T before the sinusoids, so every T (50, 1000, 4000, ...) spans the same
frequency band that Ho et al. used for T = 1000 (max_period = 10000). T comes from the
network's config; nothing here assumes T = 1000.

Also home of the input checks the networks share (rank, channels, t dtype/shape/range).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

# Ho et al. trained with T = 1000 and embedded the raw step; we embed t * TIME_SCALE / T.
TIME_SCALE = 1000.0


def sinusoidal_embedding(t: torch.Tensor, dim: int, T: int,
                         max_period: float = 10000.0) -> torch.Tensor:
    """(B,) steps in 1..T -> (B, dim) float32 [sin(s w_i), cos(s w_i)], s = t*1000/T.

    w_i = max_period^(-i / (dim/2)), i = 0..dim/2-1 (Ho et al.'s get_timestep_embedding,
    with s in place of the raw step); an odd dim gets one zero column.
    """
    half = dim // 2
    s = t.to(torch.float32) * (TIME_SCALE / T)
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = s[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """t (B,) int64 in 1..T -> (B, out_dim): sinusoids(base_dim) -> Linear -> SiLU -> Linear."""

    def __init__(self, base_dim: int, out_dim: int, T: int, max_period: float = 10000.0):
        super().__init__()
        self.base_dim, self.T, self.max_period = base_dim, T, max_period
        self.lin1 = nn.Linear(base_dim, out_dim)
        self.lin2 = nn.Linear(out_dim, out_dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = sinusoidal_embedding(t, self.base_dim, self.T, self.max_period)
        return self.lin2(nn.functional.silu(self.lin1(emb)))


def check_inputs(x: torch.Tensor, t: torch.Tensor, *, rank: int, channels: int, T: int,
                 what: str) -> None:
    """Raise InputError for a wrong rank / channel count of x, or t not int (B,) in 1..T.

    Skipped while torch.compile traces (the range check reads values, a graph break).
    """
    if torch.compiler.is_compiling():
        return
    if not isinstance(x, torch.Tensor) or x.dim() != rank:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        layout = "(B, C, H, W)" if rank == 4 else "(B, D)"
        raise InputError(f"{what} expects x of shape {layout}; got {shape}")
    if x.shape[1] != channels:
        kind = "channels" if rank == 4 else "features"
        raise InputError(
            f"{what} was built for {channels} {kind}, got x with {x.shape[1]}; "
            f"set in_channels/dim={x.shape[1]} in its config"
        )
    if not isinstance(t, torch.Tensor) or t.dtype.is_floating_point or t.dtype == torch.bool:
        got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
        raise InputError(f"{what} expects t as an int64 tensor of steps 1..T; got {got}")
    if t.shape != (x.shape[0],):
        raise InputError(f"{what} expects t of shape ({x.shape[0]},); got {tuple(t.shape)}")
    if t.numel():
        lo, hi = int(t.min()), int(t.max())
        if lo < 1 or hi > T:
            raise InputError(
                f"{what} expects t in 1..{T} (the original chain's steps); got {lo}..{hi}"
            )


class ClassEmbedding(nn.Module):
    """A learned vector per class, added to the time embedding (Ho & Salimans 2021).

    ``num_classes`` real classes 0..K-1 and one more, index K, for "no class" (the null label
    of classifier-free guidance): ``y = None`` means every example is unconditional.
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.emb = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        if y is None:
            y = torch.full((batch,), self.num_classes, dtype=torch.int64, device=device)
        elif not torch.compiler.is_compiling():
            if y.shape != (batch,) or y.dtype.is_floating_point or y.dtype == torch.bool:
                raise InputError(f"labels must be an int64 tensor of shape ({batch},); got "
                                 f"{y.dtype} {tuple(y.shape)}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
                raise InputError(f"labels must lie in 0..{self.num_classes - 1} (or "
                                 f"{self.num_classes} for none); got {int(y.min())}.."
                                 f"{int(y.max())}")
        return self.emb(y.to(device=device, dtype=torch.int64))


def time_class_embedding(temb: nn.Module, class_emb: ClassEmbedding | None, t: torch.Tensor,
                         y: torch.Tensor | None, batch: int, device) -> torch.Tensor:
    """SiLU(time embedding of t (+ the class embedding of y)) -> (batch, dim); an unconditional
    net (``class_emb`` None) refuses labels."""
    e = temb(t)
    if class_emb is not None:
        e = e + class_emb(y, batch, device)
    elif y is not None:
        raise InputError("this net is unconditional (num_classes = 0); drop the labels")
    return F.silu(e)
