"""A U-Net denoiser in the style of Ho et al. (2020), built for speed on CPU and GPU.

x_t (B, C, H, W) and t (B,) int64 in 1..T -> a tensor shaped like x_t (whatever the
parameterization: x0, eps, v or mu; the Denoiser interprets it).

Layout (Ho et al., Appendix B): conv_in -> per level ``num_res_blocks`` residual blocks
(GroupNorm, SiLU, 3x3 conv, + Linear(temb), GroupNorm, SiLU, dropout, 3x3 conv; a 1x1 conv
skip when the width changes), self-attention at the levels in ``attn_levels``, a stride-2
3x3 conv between levels -> middle (res, attention, res) -> the mirror path with
``num_res_blocks + 1`` blocks per level on [h, skip] -> GroupNorm, SiLU, 3x3 conv.

Any H x W: a stride-2 conv with padding 1 maps n -> ceil(n / 2), and the up path resizes
(nearest) to the exact size of the skip it is joined with, so 28 -> 14 -> 7 -> 4 -> 7 -> 14
-> 28 works and nothing is padded or cropped. Level i therefore has ceil(H / 2^i) rows.

Speed (measured on a 2-core AMD EPYC, see docs/benchmarks.md): activations run in
channels_last (``channels_last=True``; the 3x3 convs are ~3-4x faster there on CPU through
oneDNN, and GroupNorm has a channels_last kernel); the parameters stay contiguous, so
state_dicts save with safetensors unchanged. Attention works on the channels_last buffer
as (B, HW, C) tokens without copies and uses ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .embeddings import ClassEmbedding, TimestepEmbedding, check_inputs, time_class_embedding
from .winograd import WinogradConv2d

CONV3X3 = ("direct", "winograd")


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of :class:`UNet` (Ho et al.'s names where they exist).

    ``attn_levels`` are level indices (0 = full resolution; level i has ceil(H/2^i) rows), so
    they mean the same for any H x W; Ho's CIFAR-10 ``attn_resolutions=(16,)`` is level 1.
    ``T`` is the number of steps of the training chain: t must lie in 1..T and is embedded
    as t*1000/T (see embeddings.py). ``out_channels=None`` means ``in_channels``.

    ``conv3x3``: "direct" (default) runs every 3x3 stride-1 conv through ``F.conv2d``;
    "winograd" computes those that were measured faster that way on CPU (float32, no
    autocast, >= 128 channels in and out on maps of 8x8 and more that fill whole 4x4 tiles,
    64 channels only in training from 64x64: see :func:`ddpmkit.nets.winograd.winograd_pays`)
    by Winograd F(4x4, 3x3), the rest directly.
    Same parameters and state_dict keys either way; outputs agree to float32 rounding
    (Winograd's is ~10x the direct conv's, ~1e-5 of the output's scale).

    ``fourier_frequencies``: VDM's fine-scale input features (Kingma et al. 2021, App. C):
    for each frequency f, sin(2 pi f x) and cos(2 pi f x) of every input channel are stacked
    onto the input. With f = 1/Delta for data on a grid of bin width Delta, they read off where
    x sits between two levels, which a smooth net finds hard at small noise. Empty: none.

    ``num_classes``: K > 0 makes the net class-conditional, ``net(x_t, t, y)``: a learned
    embedding of y in 0..K-1 (K = no class) is added to the time embedding. 0: unconditional
    (no such parameters, the net of before).
    """

    in_channels: int = 1
    out_channels: int | None = None
    ch: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attn_levels: tuple[int, ...] = ()
    mid_attn: bool = True
    num_heads: int = 1
    dropout: float = 0.0
    norm_groups: int = 32
    T: int = 1000
    max_period: float = 10000.0
    channels_last: bool = True
    conv3x3: str = "direct"
    fourier_frequencies: tuple[float, ...] = ()
    num_classes: int = 0

    def __post_init__(self) -> None:
        # JSON gives lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        object.__setattr__(self, "attn_levels", tuple(self.attn_levels))
        object.__setattr__(self, "fourier_frequencies",
                           tuple(float(f) for f in self.fourier_frequencies))
        if any(not (f > 0 and f < float("inf")) for f in self.fourier_frequencies):
            raise InputError(f"UNetConfig.fourier_frequencies must be > 0; got "
                             f"{self.fourier_frequencies}")
        for name in ("in_channels", "ch", "num_res_blocks", "num_heads", "norm_groups", "T"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"UNetConfig.{name} must be a whole number >= 1; got {v!r}")
        if self.out_channels is not None and (
            not isinstance(self.out_channels, int) or self.out_channels < 1
        ):
            raise InputError(f"UNetConfig.out_channels must be >= 1 or None; got "
                             f"{self.out_channels!r}")
        if not self.ch_mult or any(not isinstance(m, int) or m < 1 for m in self.ch_mult):
            raise InputError(f"UNetConfig.ch_mult must be whole numbers >= 1; got {self.ch_mult}")
        bad = [lv for lv in self.attn_levels if not 0 <= lv < len(self.ch_mult)]
        if bad:
            raise InputError(f"UNetConfig.attn_levels {bad} out of range; levels are "
                             f"0..{len(self.ch_mult) - 1} (one per ch_mult entry)")
        for w in {self.ch * m for m in self.ch_mult}:
            if w % self.norm_groups:
                raise InputError(f"width {w} (ch * ch_mult) is not divisible by norm_groups="
                                 f"{self.norm_groups}; pick ch as a multiple of it")
            if w % self.num_heads and (self.attn_levels or self.mid_attn):
                raise InputError(f"width {w} is not divisible by num_heads={self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"UNetConfig.dropout must be in [0, 1); got {self.dropout}")
        if self.conv3x3 not in CONV3X3:
            raise InputError(f"UNetConfig.conv3x3 must be one of {', '.join(CONV3X3)}; got "
                             f"{self.conv3x3!r}")
        if not self.max_period > 1.0:
            raise InputError(f"UNetConfig.max_period must be > 1; got {self.max_period}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or self.num_classes < 0:
            raise InputError(f"UNetConfig.num_classes must be a whole number >= 0; got "
                             f"{self.num_classes!r}")


def conv3x3(c_in: int, c_out: int, kind: str = "direct") -> nn.Conv2d:
    """A 3x3, stride-1, padding-1 conv: nn.Conv2d, or for ``kind="winograd"`` a
    WinogradConv2d (same parameters) that uses F(4x4, 3x3) where it pays (policy "auto")."""
    if kind == "winograd":
        return WinogradConv2d(c_in, c_out, m=4, policy="auto")
    return nn.Conv2d(c_in, c_out, 3, padding=1)


class ResBlock(nn.Module):
    """h = conv2(drop(silu(GN(conv1(silu(GN(x))) + W temb)))); out = skip(x) + h."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, groups: int, dropout: float,
                 conv: str = "direct"):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = conv3x3(c_in, c_out, conv)
        self.temb_proj = nn.Linear(temb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = conv3x3(c_out, c_out, conv)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # temb arrives already through SiLU (computed once per forward, not once per block)
        h = self.conv1(F.silu(self.norm1(x)))
        # in place: a conv does not keep its output for backward, so this saves an allocation
        h.add_(self.temb_proj(temb)[:, :, None, None])
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h.add_(self.skip(x))


class AttnBlock(nn.Module):
    """x + proj(softmax(q k^T / sqrt(d)) v) over the H*W positions, q, k, v from GN(x)."""

    def __init__(self, c: int, groups: int, num_heads: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        nh = self.num_heads
        # (B, C, H, W) channels_last is (B, H, W, C) in memory: tokens without a copy
        tok = self.norm(x).permute(0, 2, 3, 1).reshape(B, H * W, C)
        q, k, v = self.qkv(tok).view(B, H * W, 3, nh, C // nh).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, nh, HW, C/nh)
        a = self.proj(a.transpose(1, 2).reshape(B, H * W, C))
        return a.view(B, H, W, C).permute(0, 3, 1, 2).add_(x)  # proj's output: safe in place


class Downsample(nn.Module):
    """3x3 conv, stride 2, padding 1: n -> ceil(n / 2) for any n."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


# Nearest x2 then a 3x3 conv equals, per output parity (a, b), a 2x2 conv on the low-res input
# whose taps are sums of the 3x3 taps: row parity 0 reads low rows (i-1, i) with weights
# (w0, w1 + w2), parity 1 reads (i, i+1) with (w0 + w1, w2); the same for columns.
_SUBPIXEL = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]],
                          [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # (parity, tap, 3x3 row)


class Upsample(nn.Module):
    """Nearest resize to the skip's exact (H, W), then a 3x3 conv (odd sizes included).

    For an exact x2 it computes the same function as ``conv(interpolate(x, 2))`` by the
    sub-pixel identity above: four 2x2 convs at the low resolution, 16 C^2 instead of
    36 C^2 multiply-adds per low-res pixel (2.25x fewer), then the four results interleaved.
    The parameters are the 3x3 conv's, so state_dicts do not depend on the path.
    """

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        B, C, H, W = x.shape
        if (2 * H, 2 * W) != tuple(size):
            return self.conv(F.interpolate(x, size=size, mode="nearest"))
        A = _SUBPIXEL.to(device=x.device, dtype=self.conv.weight.dtype)
        # (a, b, C_out, C_in, 2, 2): W2[a, b] = A[a] w A[b]^T over the kernel's (rows, cols)
        w2 = torch.einsum("aik,ockl,bjl->abocij", A, self.conv.weight, A)
        y = F.conv2d(x, w2.reshape(4 * C, C, 2, 2), self.conv.bias.repeat(4), padding=1)
        y = y.permute(0, 2, 3, 1)  # (B, H+1, W+1, 4C); a free view in channels_last
        # parity (a, b) of output pixel (2i+a, 2j+b) sits at y[:, i+a, j+b, (2a+b)C:(2a+b+1)C]
        rows = [torch.stack([y[:, a:a + H, b:b + W, (2 * a + b) * C:(2 * a + b + 1) * C]
                             for b in (0, 1)], dim=3) for a in (0, 1)]
        out = torch.stack(rows, dim=2).reshape(B, 2 * H, 2 * W, C)
        return out.permute(0, 3, 1, 2)


def fourier_features(x: torch.Tensor, freqs: tuple[float, ...]) -> torch.Tensor:
    """[x, sin(2 pi f x), cos(2 pi f x) for f in freqs] along channels: (B, C(1 + 2F), H, W)."""
    feats = [x]
    for f in freqs:
        z = (2.0 * math.pi * f) * x
        feats += [torch.sin(z), torch.cos(z)]
    return torch.cat(feats, dim=1)


class UNet(nn.Module):
    """Ho et al.'s U-Net: ``net(x_t, t) -> tensor shaped like x_t`` (see the module doc)."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch, g, drop, cv = cfg.ch, cfg.norm_groups, cfg.dropout, cfg.conv3x3
        temb_dim = 4 * ch
        self.temb = TimestepEmbedding(ch, temb_dim, cfg.T, cfg.max_period)
        self.conv_in = conv3x3(cfg.in_channels * (1 + 2 * len(cfg.fourier_frequencies)), ch, cv)

        widths = [ch * m for m in cfg.ch_mult]
        n_levels = len(widths)
        self.down = nn.ModuleList()
        skips = [ch]
        c = ch
        for level, w in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                attn = AttnBlock(w, g, cfg.num_heads) if level in cfg.attn_levels else None
                self.down.append(nn.ModuleList([ResBlock(c, w, temb_dim, g, drop, cv),
                                                attn or nn.Identity()]))
                c = w
                skips.append(c)
            if level != n_levels - 1:
                self.down.append(Downsample(c))
                skips.append(c)

        self.mid1 = ResBlock(c, c, temb_dim, g, drop, cv)
        self.mid_attn = AttnBlock(c, g, cfg.num_heads) if cfg.mid_attn else nn.Identity()
        self.mid2 = ResBlock(c, c, temb_dim, g, drop, cv)

        self.up = nn.ModuleList()
        for level in reversed(range(n_levels)):
            w = widths[level]
            for _ in range(cfg.num_res_blocks + 1):
                attn = AttnBlock(w, g, cfg.num_heads) if level in cfg.attn_levels else None
                self.up.append(nn.ModuleList([
                    ResBlock(c + skips.pop(), w, temb_dim, g, drop, cv), attn or nn.Identity()]))
                c = w
            if level != 0:
                self.up.append(Upsample(c))

        self.norm_out = nn.GroupNorm(g, c)
        self.conv_out = conv3x3(c, cfg.out_channels or cfg.in_channels, cv)
        # created last, so that an unconditional net draws its initial weights as before
        self.class_emb = ClassEmbedding(cfg.num_classes, temb_dim) if cfg.num_classes else None

    def forward(self, x: torch.Tensor, t: torch.Tensor,
                y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W), t (B,) int64 in 1..T, y (B,) class labels or None -> (B, C_out, H, W).
        """
        check_inputs(x, t, rank=4, channels=self.cfg.in_channels, T=self.cfg.T, what="UNet")
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        temb = time_class_embedding(self.temb, self.class_emb, t, y, x.shape[0], x.device)
        if self.cfg.fourier_frequencies:
            x = fourier_features(x, self.cfg.fourier_frequencies)
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            if isinstance(block, Downsample):
                h = block(h)
            else:
                res, attn = block
                h = attn(res(h, temb))
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for block in self.up:
            if isinstance(block, Upsample):
                h = block(h, hs[-1].shape[-2:])
            else:
                res, attn = block
                h = attn(res(torch.cat([h, hs.pop()], dim=1), temb))
        return self.conv_out(F.silu(self.norm_out(h)))
