"""Winograd F(m x m, 3 x 3) with the input and output transforms written as sums of strided
slices times the constants, for ``torch.compile`` (benchmarks/bench_winograd.py measures it).

``ddpmkit.nets.winograd`` applies B^T and A^T as matmuls on whole buffers, the fastest eager
form and the one ``UNetConfig(conv3x3="winograd")`` uses. Written as sums, with hand-written
backwards of the same form, the transforms are slow eagerly, but Inductor turns each one (and
its backward) into one fused loop. Same maths, same chunking of the batch, same gradients
(tests/test_winograd.py checks both against F.conv2d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ddpmkit.nets.winograd import (
    _MATRICES,
    TILE_BYTES,
    crop_and_bias,
    in_chunks,
    pad_to_tiles,
)


def winograd_conv3x3_sums(x: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor | None = None, m: int = 2,
                          tile_bytes: int | None = TILE_BYTES) -> torch.Tensor:
    """``ddpmkit.nets.winograd.winograd_conv3x3`` with the transforms written as sums."""
    return in_chunks(_chunk_sums, x, weight, bias, m, tile_bytes)


def _chunk_sums(x: torch.Tensor, U: torch.Tensor, bias: torch.Tensor | None,
                m: int) -> torch.Tensor:
    N, C, H, W = x.shape
    O = U.shape[-1]
    a = m + 2
    nh, nw = -(-H // m), -(-W // m)
    V = _InputTransformSums.apply(pad_to_tiles(x, m), m)  # (a_i * a_j, N, nh, nw, C)
    M = torch.bmm(V.view(a * a, N * nh * nw, C), U)  # (a^2, T, O)
    y = _OutputTransformSums.apply(M.view(a, a, N, nh, nw, O), m)
    return crop_and_bias(y.reshape(N, nh * m, nw * m, O), H, W, bias)


def _lincomb(coeffs, terms):
    """sum_k coeffs[k] * terms[k] over the non-zero constants (+-1 without a multiply)."""
    out = None
    for c, t in zip(coeffs, terms):
        c = float(c)
        if c == 0.0:
            continue
        t = t if c == 1.0 else -t if c == -1.0 else c * t
        out = t if out is None else out + t
    return out


class _InputTransformSums(torch.autograd.Function):
    """xp (N, m*nh+2, m*nw+2, C) -> B^T d B of every tile, (a*a, N, nh, nw, C), written as
    sums of strided slices; the backward is written out too (B dV B^T, then the overlapping
    tiles added back block by block), so that torch.compile makes each one fused loop
    instead of one scatter per slice."""

    @staticmethod
    def forward(ctx, xp: torch.Tensor, m: int) -> torch.Tensor:
        N, Hp, Wp, C = xp.shape
        a, nh, nw = m + 2, (Hp - 2) // m, (Wp - 2) // m
        ctx.m, ctx.shape = m, xp.shape
        bt = _MATRICES[m][2]
        rows = [xp[:, k:k + m * (nh - 1) + 1:m] for k in range(a)]  # (N, nh, Wp, C)
        # stacked, so that a compiler keeps R as one buffer instead of recomputing it
        R = torch.stack([_lincomb(bt[i], rows) for i in range(a)]).unbind(0)
        return torch.stack([_lincomb(bt[j], [r[:, :, k:k + m * (nw - 1) + 1:m]
                                             for k in range(a)])
                            for r in R for j in range(a)])

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        m = ctx.m
        N, Hp, Wp, C = ctx.shape
        a = m + 2
        bt = _MATRICES[m][2]
        b = [[bt[i][k] for i in range(a)] for k in range(a)]  # B = (B^T)^T
        nh, nw = (Hp - 2) // m, (Wp - 2) // m
        g = g.view(a, a, N, nh, nw, C)

        def overlap_add(t, dim):
            """t[l] (l < a): window j's element l along ``dim`` (n windows, stride m) ->
            the line, in (n + 1) blocks of m at ``dim``: block j, element r gets t[r] of
            window j plus, for r < 2, t[r + m] of window j - 1."""
            pad_after = [0, 0] * (t[0].dim() - 1 - dim) + [0, 1]
            pad_before = [0, 0] * (t[0].dim() - 1 - dim) + [1, 0]
            parts = [F.pad(t[r], pad_after) + F.pad(t[r + m], pad_before) if r < 2
                     else F.pad(t[r], pad_after) for r in range(m)]
            return torch.stack(parts, dim=dim + 1)

        # columns: dR_i = overlap-add over l of sum_j B[l, j] dV_ij  -> (N, nh, nw+1, m, C)
        dr = torch.stack([overlap_add([_lincomb(b[l], g[i].unbind(0)) for l in range(a)], 2)
                          for i in range(a)])
        dr = dr.view(a, N, nh, (nw + 1) * m, C)[:, :, :, :Wp]
        # rows: dxp = overlap-add over k of sum_i B[k, i] dR_i  -> (N, nh+1, m, Wp, C)
        out = overlap_add([_lincomb(b[k], dr.unbind(0)) for k in range(a)], 1)
        return out.reshape(N, (nh + 1) * m, Wp, C)[:, :Hp], None


class _OutputTransformSums(torch.autograd.Function):
    """M (a, a, N, nh, nw, O) -> A^T M A of every tile laid out as the image
    (N, nh, m, nw, m, O); forward and backward (A dY A^T on the non-overlapping m x m tiles)
    written as sums of slices times constants, each stage stacked into one buffer."""

    @staticmethod
    def forward(ctx, M: torch.Tensor, m: int) -> torch.Tensor:
        ctx.m = m
        at = _MATRICES[m][0]
        q = torch.stack([_lincomb(at[r], M.unbind(0)) for r in range(m)])  # (m_r, a_j, ...)
        return torch.stack([torch.stack([_lincomb(at[s_], q[r].unbind(0)) for s_ in range(m)],
                                        dim=3) for r in range(m)], dim=2)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        m = ctx.m
        a = m + 2
        at = _MATRICES[m][0]
        a_ = [[at[r][i] for r in range(m)] for i in range(a)]  # A = (A^T)^T
        gy = [[g[:, :, r, :, s_] for s_ in range(m)] for r in range(m)]  # (N, nh, nw, O)
        gq = torch.stack([torch.stack([_lincomb(a_[j], gy[r]) for j in range(a)])
                          for r in range(m)])  # (m_r, a_j, N, nh, nw, O)
        gm = torch.stack([torch.stack([_lincomb(a_[i], gq[:, j].unbind(0)) for j in range(a)])
                          for i in range(a)])  # (a_i, a_j, N, nh, nw, O)
        return gm, None
