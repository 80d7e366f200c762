"""An MLP denoiser for vector data (2-D toys, low-dimensional Gaussians).

x_t (B, D) and t (B,) int64 in 1..T -> (B, D). Same step embedding as the U-Net
(sinusoids of t*1000/T, then an MLP), added inside every residual block:
h <- h + W2 silu(LN(W1 silu(LN(h)) + W_t temb)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .embeddings import ClassEmbedding, TimestepEmbedding, check_inputs, time_class_embedding


@dataclass(frozen=True)
class MLPConfig:
    """Hyper-parameters of :class:`MLP`. ``T``: steps of the training chain (t in 1..T)."""

    dim: int = 2
    hidden: int = 256
    depth: int = 3
    temb_dim: int = 128
    dropout: float = 0.0
    T: int = 1000
    max_period: float = 10000.0
    num_classes: int = 0  # > 0: class-conditional net(x_t, t, y), as UNetConfig.num_classes

    def __post_init__(self) -> None:
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or self.num_classes < 0:
            raise InputError(f"MLPConfig.num_classes must be a whole number >= 0; got "
                             f"{self.num_classes!r}")
        for name in ("dim", "hidden", "depth", "temb_dim", "T"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"MLPConfig.{name} must be a whole number >= 1; got {v!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"MLPConfig.dropout must be in [0, 1); got {self.dropout}")
        if not self.max_period > 1.0:
            raise InputError(f"MLPConfig.max_period must be > 1; got {self.max_period}")


class MLPBlock(nn.Module):
    """h + W2 drop(silu(LN(W1 silu(LN(h)) + W_t temb)))."""

    def __init__(self, hidden: int, temb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.lin1 = nn.Linear(hidden, hidden)
        self.temb_proj = nn.Linear(temb_dim, hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lin2 = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        a = self.lin1(F.silu(self.norm1(h))) + self.temb_proj(temb)
        return h + self.lin2(self.dropout(F.silu(self.norm2(a))))


class MLP(nn.Module):
    """``net(x_t, t) -> (B, D)`` for vector data."""

    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        self.temb = TimestepEmbedding(cfg.temb_dim, cfg.temb_dim, cfg.T, cfg.max_period)
        self.lin_in = nn.Linear(cfg.dim, cfg.hidden)
        self.blocks = nn.ModuleList(
            MLPBlock(cfg.hidden, cfg.temb_dim, cfg.dropout) for _ in range(cfg.depth)
        )
        self.norm_out = nn.LayerNorm(cfg.hidden)
        self.lin_out = nn.Linear(cfg.hidden, cfg.dim)
        self.class_emb = (ClassEmbedding(cfg.num_classes, cfg.temb_dim) if cfg.num_classes
                          else None)

    def forward(self, x: torch.Tensor, t: torch.Tensor,
                y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, D), t (B,) int64 in 1..T, y (B,) class labels or None -> (B, D)."""
        check_inputs(x, t, rank=2, channels=self.cfg.dim, T=self.cfg.T, what="MLP")
        temb = time_class_embedding(self.temb, self.class_emb, t, y, x.shape[0], x.device)
        h = self.lin_in(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.lin_out(F.silu(self.norm_out(h)))
