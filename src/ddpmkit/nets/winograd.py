"""Winograd minimal filtering for 3x3, stride-1, padding-1 convolutions, in plain PyTorch ops.

For an output tile of m x m pixels and the (m+2) x (m+2) input tile d that covers it, with
the 3x3 filter g (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
CVPR 2016, arXiv:1509.09308):

    Y = A^T [ (G g G^T) ⊙ (B^T d B) ] A

Summed over input channels, the ⊙ becomes, at each of the (m+2)^2 transform positions, a
matrix product (tiles, C_in) @ (C_in, C_out): one batched matmul does all of them. F(2x2,
3x3) (``m=2``) needs 16 multiplies per 4 outputs instead of 36 (2.25x fewer); F(4x4, 3x3)
(``m=4``) 36 per 16 instead of 144 (4x fewer), with larger constants, so less accurate in
float32. The matrices A^T, G, B^T below are the ones Lavin & Gray give in their section 4
for F(2x2, 3x3) and F(4x4, 3x3) (interpolation points 0, +-1, +-2 and infinity). Like
``F.conv2d`` this computes a cross-correlation.

H and W are padded up to a multiple of m and the output cropped, so any size works. The tiles
are gathered once into a position-major (m+2, m+2, tiles*C) buffer and B^T and A^T applied
separably (rows, then columns) as matmuls on whole buffers; the gather's backward is a
hand-written overlap-add (autograd's unfold_backward is slow). (The transforms written as sums
of strided slices, for ``torch.compile``, live with the benchmark: benchmarks/winograd_sums.py.)
Gradients flow to input, weight and bias. The weight transform is recomputed at each call
(once per forward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_MATRICES: dict[int, tuple[list[list[float]], list[list[float]], list[list[float]]]] = {
    # m: (A^T (m, m+2), G (m+2, 3), B^T (m+2, m+2))
    2: (
        [[1, 1, 1, 0],
         [0, 1, -1, -1]],
        [[1, 0, 0],
         [0.5, 0.5, 0.5],
         [0.5, -0.5, 0.5],
         [0, 0, 1]],
        [[1, 0, -1, 0],
         [0, 1, 1, 0],
         [0, -1, 1, 0],
         [0, 1, 0, -1]],
    ),
    4: (
        [[1, 1, 1, 1, 1, 0],
         [0, 1, -1, 2, -2, 0],
         [0, 1, 1, 4, 4, 0],
         [0, 1, -1, 8, -8, 1]],
        [[1 / 4, 0, 0],
         [-1 / 6, -1 / 6, -1 / 6],
         [-1 / 6, 1 / 6, -1 / 6],
         [1 / 24, 1 / 12, 1 / 6],
         [1 / 24, -1 / 12, 1 / 6],
         [0, 0, 1]],
        [[4, 0, -5, 0, 1, 0],
         [0, -4, -4, 1, 1, 0],
         [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0],
         [0, 4, 0, -5, 0, 1]],
    ),
}

_CACHE: dict[tuple[int, torch.dtype, torch.device], tuple[torch.Tensor, ...]] = {}


def winograd_matrices(m: int, dtype: torch.dtype = torch.float64,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """(A^T, G, B^T) of F(m x m, 3 x 3), shapes (m, m+2), (m+2, 3), (m+2, m+2)."""
    if m not in _MATRICES:
        raise ValueError(f"winograd tile size m must be 2 or 4; got {m!r}")
    key = (m, dtype, torch.device(device))
    if key not in _CACHE:
        # built in float64, then rounded once (1/6, 1/24 are not exact in binary)
        _CACHE[key] = tuple(torch.tensor(M, dtype=torch.float64).to(dtype=dtype, device=device)
                            for M in _MATRICES[m])
    return _CACHE[key]


def winograd_weight(weight: torch.Tensor, m: int = 2) -> torch.Tensor:
    """U = G g G^T for every (C_out, C_in) filter: (O, C, 3, 3) -> ((m+2)^2, C, O)."""
    _, G, _ = winograd_matrices(m, weight.dtype, weight.device)
    O, C = weight.shape[:2]
    a = m + 2
    U = torch.einsum("ik,ockl,jl->ijco", G, weight, G)
    return U.reshape(a * a, C, O)


class _Tiles(torch.autograd.Function):
    """xp (N, m*nh+2, m*nw+2, C) -> its (m+2)^2 tiles, stride m, as (a_k, a_l, N*nh*nw, C).

    The forward is unfold + one copy; the backward is a plain overlap-add (rows, then
    columns), which is much faster on CPU than autograd's generic ``unfold_backward``."""

    @staticmethod
    def forward(ctx, xp: torch.Tensor, m: int) -> torch.Tensor:
        N, Hp, Wp, C = xp.shape
        a, nh, nw = m + 2, (Hp - 2) // m, (Wp - 2) // m
        ctx.m, ctx.shape = m, xp.shape
        d = xp.unfold(1, a, m).unfold(2, a, m).permute(4, 5, 0, 1, 2, 3)
        # always a fresh buffer (reshape could return a view when sizes are 1)
        return xp.new_empty(a, a, N, nh, nw, C).copy_(d).view(a, a, N * nh * nw, C)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        # Window j along a line starts at m*j and is a = m+2 long: windows overlap by 2. Its
        # first m elements fill block j of a (n+1, m) blocked line, its last 2 are added to
        # the start of block j+1. Columns first, then rows.
        m = ctx.m
        N, Hp, Wp, C = ctx.shape
        a, nh, nw = m + 2, (Hp - 2) // m, (Wp - 2) // m
        g = g.reshape(a, a, N, nh, nw, C)
        z = g.new_empty(a, N, nh, nw + 1, m, C)
        z[:, :, :, nw].zero_()
        z[:, :, :, :nw] = g[:, :m].permute(0, 2, 3, 4, 1, 5)
        z[:, :, :, 1:, :2] += g[:, m:].permute(0, 2, 3, 4, 1, 5)
        z = z.view(a, N, nh, (nw + 1) * m, C)[:, :, :, :Wp]  # (a_k, N, nh, Wp, C)
        r = g.new_empty(N, nh + 1, m, Wp, C)
        r[:, nh].zero_()
        r[:, :nh] = z[:m].permute(1, 2, 0, 3, 4)
        r[:, 1:, :2] += z[m:].permute(1, 2, 0, 3, 4)
        return r.view(N, (nh + 1) * m, Wp, C)[:, :Hp], None


# The batch is cut into chunks whose transformed tiles, (m+2)^2 * tiles * max(C_in, C_out)
# floats, stay under TILE_BYTES, so that they live in the caches: whole-batch buffers at 32x32
# or 28x28 maps are 30-120 MB that go through main memory (and are mmapped afresh at every
# call). A chunk keeps at least MIN_TILES tiles, or the matmuls get too thin. Measured on this
# project's CPU (fwd + bwd, 1 thread, `benchmarks/bench_winograd.py --parts policy`):
# 128->128 at 32x32, batch 32: 269 ms direct, 299 ms Winograd in one piece, 192 ms in chunks;
# 128->128 at 64x64, batch 16: 560 / 809 / 360 ms; at 16x16 the one piece and the chunks
# are equal (the many-tiles bound keeps whole batches there).
TILE_BYTES = 8 * 2**20
MIN_TILES = 512


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     m: int = 2, tile_bytes: int | None = TILE_BYTES) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride=1, padding=1)`` for a 3x3 ``weight`` by Winograd.

    x (N, C, H, W), any H, W >= 1, contiguous or channels_last; weight (O, C, 3, 3);
    bias (O,) or None; m = 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3)). Returns (N, O, H, W) in
    channels_last memory (a (N, H, W, O) buffer), whatever the input's layout.

    ``tile_bytes``: the batch is processed in chunks whose transformed tiles stay under this
    many bytes (``TILE_BYTES``; at least ``MIN_TILES`` tiles a chunk; None: the whole batch at
    once). The filter transform U = G g G^T is computed once for all chunks.
    """
    return in_chunks(_winograd_chunk, x, weight, bias, m, tile_bytes)


def in_chunks(chunk_fn, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
              m: int, tile_bytes: int | None) -> torch.Tensor:
    """Check the shapes, compute U once and run ``chunk_fn(x_chunk, U, bias, m)`` on chunks of
    the batch sized by ``tile_bytes`` (see :func:`winograd_conv3x3`); concatenated."""
    if x.dim() != 4 or weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"expected x (N, C, H, W) and a 3x3 weight; got {tuple(x.shape)} and "
                         f"{tuple(weight.shape)}")
    N, C, H, W = x.shape
    O = weight.shape[0]
    if weight.shape[1] != C:
        raise ValueError(f"weight has {weight.shape[1]} input channels, x has {C}")
    U = winograd_weight(weight, m)  # ((m+2)^2, C, O), once for every chunk
    a = m + 2
    tiles = (-(-H // m)) * (-(-W // m))  # per image
    per_image = a * a * tiles * max(C, O) * x.element_size()
    n = N if not tile_bytes else max(tile_bytes // per_image, -(-MIN_TILES // tiles), 1)
    if n >= N:
        return chunk_fn(x, U, bias, m)
    # each chunk is its own small autograd graph: its backward also runs in cache
    return torch.cat([chunk_fn(xc, U, bias, m) for xc in x.split(n)], 0)


def pad_to_tiles(x: torch.Tensor, m: int) -> torch.Tensor:
    """x (N, C, H, W) -> (N, m*nh+2, m*nw+2, C): 1 zero before, 1 + the round-up to whole m x m
    tiles after (a free view for channels_last x, then the pad)."""
    _, _, H, W = x.shape
    nh, nw = -(-H // m), -(-W // m)
    return F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, nw * m + 1 - W, 1, nh * m + 1 - H))


def crop_and_bias(y: torch.Tensor, H: int, W: int, bias: torch.Tensor | None) -> torch.Tensor:
    """The padded output image (N, nh*m, nw*m, O) -> (N, O, H, W) (channels_last), plus bias."""
    if y.shape[1] != H or y.shape[2] != W:
        y = y[:, :H, :W].contiguous()
    if bias is not None:
        y = y + bias
    return y.permute(0, 3, 1, 2)


def _winograd_chunk(x: torch.Tensor, U: torch.Tensor, bias: torch.Tensor | None,
                    m: int) -> torch.Tensor:
    """winograd_conv3x3 on one chunk, U = winograd_weight(weight, m) given."""
    N, C, H, W = x.shape
    O = U.shape[-1]
    AT, _, BT = winograd_matrices(m, x.dtype, x.device)
    a = m + 2
    nh, nw = -(-H // m), -(-W // m)
    T = N * nh * nw
    # tiles d: position-major (a_k, a_l, T*C), one copy (overlap-add backward: _Tiles)
    d = _Tiles.apply(pad_to_tiles(x, m), m).view(a, a * T * C)
    # B^T d B: rows (k -> i) then columns (l -> j), both plain matmuls on this layout
    V = (BT @ d).view(a, a, T * C)
    V = torch.matmul(BT, V)  # (a_i, a_j, T*C): batched over i, contracts l
    # the element-wise product summed over C: one matmul over the a^2 positions
    M = torch.bmm(V.view(a * a, T, C), U)  # (a^2, T, O)
    # A^T M A: rows (i -> r) then columns (j -> s)
    Y = (AT @ M.view(a, a * T * O)).view(m, a, T * O)
    Y = torch.matmul(AT, Y)  # (m_r, m_s, T*O)
    # (m_r, m_s, N, nh, nw, O) -> (N, nh, m_r, nw, m_s, O) -> image (N, nh*m, nw*m, O)
    y = Y.view(m, m, N, nh, nw, O).permute(2, 3, 0, 4, 1, 5)
    return crop_and_bias(y.reshape(N, nh * m, nw * m, O), H, W, bias)


def autocast_active(device_type: str) -> bool:
    """Whether torch.autocast is on for ``device_type`` (older torch: the per-device calls)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no argument
        return (torch.is_autocast_cpu_enabled() if device_type == "cpu"
                else torch.is_autocast_enabled())


# Where F(4x4, 3x3) (in chunks, see TILE_BYTES) beat oneDNN's direct conv on this project's
# 2-core Zen 4 CPU, 1 thread, float32, at every 3x3 conv shape of the mnist and cifar10 presets
# plus a few others (`benchmarks/bench_winograd.py --parts policy`, results/winograd.json):
# - >= 128 channels in and out, maps of 8x8 and more: forward + backward 1.27-1.28x at 8x8,
#   1.34-1.85x at 16x16, 1.37-1.5x at 32x32, 1.55x at 64x64; forward alone 1.0-1.5x;
# - 64 channels: forward + backward 1.25x at 64x64 and 128x128, but forward alone 0.93x, and
#   0.91-1.0x (0.9-1.2x in other runs: noise) at 28x28: only large maps, only in training;
# - maps that pad to whole 4x4 tiles with > 10 % waste (7x7, 9x9, 14x14: 0.6-1.07x), maps
#   under 8x8 and the nets' first and last convs (1-3 channels): 0.36-0.73x.
AUTO_MIN_CHANNELS = 128
AUTO_MIN_SIDE = 8
AUTO_MAX_PAD_WASTE = 0.10
AUTO_THIN = (64, 4096)  # (channels, pixels): thinner convs pay only in training, on large maps


def winograd_pays(x: torch.Tensor, out_channels: int, backward: bool | None = None) -> bool:
    """The "auto" policy: True where F(4x4, 3x3) was measured faster than the direct conv.

    x (N, C_in, H, W); ``backward``: whether a backward pass will follow (default:
    ``torch.is_grad_enabled()``). CPU, float32, autocast off (in bf16 Winograd's constants
    would amplify rounding); H, W >= AUTO_MIN_SIDE; padding H, W up to multiples of 4 adds at
    most AUTO_MAX_PAD_WASTE; and c = min(C_in, C_out) >= AUTO_MIN_CHANNELS, or, when training,
    c >= AUTO_THIN[0] with H * W >= AUTO_THIN[1].
    """
    if x.device.type != "cpu" or x.dtype != torch.float32 or autocast_active("cpu"):
        return False
    _, c_in, h, w = x.shape
    if min(h, w) < AUTO_MIN_SIDE:
        return False
    if 1 - h * w / (-(-h // 4) * 4 * (-(-w // 4)) * 4) > AUTO_MAX_PAD_WASTE:
        return False
    c = min(c_in, out_channels)
    if backward is None:
        backward = torch.is_grad_enabled()
    return c >= AUTO_MIN_CHANNELS or (backward and c >= AUTO_THIN[0] and h * w >= AUTO_THIN[1])


class WinogradConv2d(nn.Conv2d):
    """``nn.Conv2d(c_in, c_out, 3, padding=1)`` computed by Winograd F(m x m, 3 x 3).

    Same parameters, names and initialisation as nn.Conv2d (``weight`` (O, C, 3, 3),
    ``bias`` (O,)), so state_dicts are interchangeable; only 3x3 kernels, stride 1,
    padding 1, dilation 1, groups 1, zero padding. ``m`` = 2 or 4 (see the module doc:
    Y = A^T [ (G g G^T) ⊙ (B^T d B) ] A, Lavin & Gray 2016). Output in channels_last memory.

    ``policy``: "always" runs Winograd for every input; "auto" asks :func:`winograd_pays`
    at each call and otherwise runs the ordinary ``F.conv2d`` with the same parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=1,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None, m: int = 2, policy: str = "always"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)
        if (self.kernel_size != (3, 3) or self.stride != (1, 1) or self.padding != (1, 1)
                or self.dilation != (1, 1) or groups != 1 or padding_mode != "zeros"):
            raise ValueError("WinogradConv2d supports only 3x3, stride 1, padding 1, "
                             "dilation 1, groups 1, zero padding")
        if m not in _MATRICES:
            raise ValueError(f"winograd tile size m must be 2 or 4; got {m!r}")
        if policy not in ("always", "auto"):
            raise ValueError(f"policy must be 'always' or 'auto'; got {policy!r}")
        self.m, self.policy = m, policy

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, m: int = 2, policy: str = "always") -> WinogradConv2d:
        """A WinogradConv2d sharing ``conv``'s parameter tensors (no copy)."""
        new = cls(conv.in_channels, conv.out_channels, bias=conv.bias is not None,
                  device=conv.weight.device, dtype=conv.weight.dtype, m=m, policy=policy)
        new.weight = conv.weight
        new.bias = conv.bias
        return new

    def extra_repr(self) -> str:
        return (super().extra_repr()
                + f", m={self.m}, policy={self.policy!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.policy == "auto" and not winograd_pays(
                x, self.out_channels,
                torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return super().forward(x)
        return winograd_conv3x3(x, self.weight, self.bias, self.m)
