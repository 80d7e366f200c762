"""ddpmkit.nets.winograd: Winograd F(2x2,3x3) / F(4x4,3x3) equals F.conv2d (values, grads);
so does its benchmark-only twin, transforms written as sums (benchmarks/winograd_sums.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddpmkit.nets import winograd as wg
from ddpmkit.nets.winograd import (
    WinogradConv2d,
    winograd_conv3x3,
    winograd_pays,
    winograd_weight,
)

SUMS = Path(__file__).resolve().parents[1] / "benchmarks" / "winograd_sums.py"


def _sums():
    spec = importlib.util.spec_from_file_location("winograd_sums", SUMS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def conv_by(transforms: str):
    """winograd_conv3x3 ("matmul", the library's) or the benchmark's "sums" twin."""
    return winograd_conv3x3 if transforms == "matmul" else _sums().winograd_conv3x3_sums


SHAPES = [  # N, C_in, C_out, H, W
    (1, 1, 1, 1, 1), (2, 3, 5, 1, 1), (1, 4, 4, 3, 3), (2, 8, 6, 7, 7), (3, 5, 7, 13, 17),
    (1, 6, 3, 14, 14), (2, 4, 8, 2, 9), (1, 16, 8, 28, 28), (2, 12, 24, 5, 4),
]
# float32 relative error (max |err| / max |ref|, reference float64 F.conv2d), measured at
# every 3x3 conv shape of the mnist and cifar10 U-Nets (C_in up to 512; see
# benchmarks/results/winograd.json): m=2 <= 6.2e-7, m=4 <= 1.4e-5. Tolerances with margin:
F32_TOL = {2: 2e-6, 4: 3e-5}


def _case(N, C, O, H, W, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, H, W, generator=g, dtype=dtype)
    w = torch.randn(O, C, 3, 3, generator=g, dtype=dtype) / (3 * C**0.5)
    b = torch.randn(O, generator=g, dtype=dtype)
    return x, w, b


def _rel(y, ref):
    return ((y.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


@pytest.mark.parametrize("transforms", ["matmul", "sums"])
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("shape", SHAPES)
def test_equals_conv2d_float64(m, shape, transforms):
    x, w, b = _case(*shape, torch.float64)
    ref = F.conv2d(x, w, b, padding=1)
    for xin in (x, x.contiguous(memory_format=torch.channels_last)):
        y = conv_by(transforms)(xin, w, b, m)
        assert y.shape == ref.shape
        assert (y - ref).abs().max().item() <= 1e-10 * max(1.0, ref.abs().max().item())
    y = conv_by(transforms)(x, w, None, m)
    torch.testing.assert_close(y, F.conv2d(x, w, None, padding=1), rtol=0, atol=1e-10)


@pytest.mark.parametrize("transforms", ["matmul", "sums"])
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("shape", SHAPES + [(2, 64, 64, 28, 28), (2, 256, 128, 7, 7)])
def test_equals_conv2d_float32(m, shape, transforms):
    x, w, b = _case(*shape, torch.float32, seed=1)
    ref = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    y = conv_by(transforms)(x.contiguous(memory_format=torch.channels_last), w, b, m)
    assert y.dtype == torch.float32
    assert _rel(y, ref) < F32_TOL[m]


@pytest.mark.parametrize("transforms", ["matmul", "sums"])
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("shape", [(1, 2, 3, 3, 3), (2, 2, 2, 5, 7), (1, 3, 2, 1, 1),
                                   (1, 2, 2, 6, 4)])
def test_gradcheck_float64(m, shape, transforms):
    x, w, b = _case(*shape, torch.float64, seed=2)
    x, w, b = (t.requires_grad_() for t in (x, w, b))
    conv = conv_by(transforms)
    assert torch.autograd.gradcheck(lambda x, w, b: conv(x, w, b, m), (x, w, b))


@pytest.mark.parametrize("transforms", ["matmul", "sums"])
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("shape", [(2, 8, 6, 7, 7), (3, 5, 7, 13, 17), (1, 16, 8, 28, 28)])
def test_gradients_equal_conv2d(m, shape, transforms):
    x, w, b = _case(*shape, torch.float64, seed=3)
    gy = torch.randn(shape[0], shape[2], shape[3], shape[4], dtype=torch.float64)
    grads, conv = [], conv_by(transforms)
    for fn in (lambda x, w, b: F.conv2d(x, w, b, padding=1),
               lambda x, w, b: conv(x, w, b, m)):
        for layout in (torch.contiguous_format, torch.channels_last):
            xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
            fn(xs.contiguous(memory_format=layout), ws, bs).backward(gy)
            grads.append((xs.grad, ws.grad, bs.grad))
    for got in grads[2:]:
        for a, r in zip(got, grads[0]):
            torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)


def test_output_is_channels_last():
    x, w, b = _case(2, 4, 6, 7, 9, torch.float32)
    for xin in (x, x.contiguous(memory_format=torch.channels_last)):
        assert winograd_conv3x3(xin, w, b).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("m", [2, 4])
def test_module_is_a_drop_in_conv2d(m):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, padding=1)
    wconv = WinogradConv2d(6, 10, 3, padding=1, m=m)
    assert isinstance(wconv, nn.Conv2d)
    assert set(wconv.state_dict()) == set(conv.state_dict()) == {"weight", "bias"}
    wconv.load_state_dict(conv.state_dict())
    x = torch.randn(3, 6, 11, 5).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(wconv(x), conv(x), rtol=1e-4, atol=1e-5)
    shared = WinogradConv2d.from_conv(conv, m)
    assert shared.weight is conv.weight and shared.bias is conv.bias
    nob = WinogradConv2d(6, 4, bias=False, m=m)
    assert nob.bias is None and nob(x).shape == (3, 4, 11, 5)


def test_rejects_what_it_does_not_compute():
    with pytest.raises(ValueError):
        WinogradConv2d(4, 4, 3, stride=2)
    with pytest.raises(ValueError):
        WinogradConv2d(4, 4, 5, padding=2)
    with pytest.raises(ValueError):
        WinogradConv2d(4, 4, m=3)
    with pytest.raises(ValueError):
        WinogradConv2d(4, 4, policy="sometimes")
    with pytest.raises(ValueError):
        winograd_conv3x3(torch.randn(1, 4, 5, 5), torch.randn(4, 3, 3, 3))


def test_weight_transform_shape():
    assert winograd_weight(torch.randn(5, 3, 3, 3), 2).shape == (16, 3, 5)
    assert winograd_weight(torch.randn(5, 3, 3, 3), 4).shape == (36, 3, 5)


def test_auto_policy_decides_by_device_dtype_channels_and_size():
    x = torch.empty(2, 128, 16, 16)
    assert winograd_pays(x, 128)
    assert winograd_pays(torch.empty(2, 256, 8, 12), 512)
    assert winograd_pays(torch.empty(2, 128, 32, 32), 128, backward=False)
    assert winograd_pays(torch.empty(2, 64, 64, 64), 64, backward=True)   # thin, large map
    assert not winograd_pays(torch.empty(2, 64, 64, 64), 64, backward=False)  # ... no backward
    assert not winograd_pays(torch.empty(2, 64, 28, 28), 64, backward=True)   # ... too small
    with torch.no_grad():
        assert not winograd_pays(torch.empty(2, 64, 64, 64), 64)
    assert not winograd_pays(torch.empty(2, 128, 14, 14), 128)    # 14 -> 16: 23 % padding
    assert not winograd_pays(torch.empty(2, 1, 28, 28), 64)       # a net's first conv
    assert not winograd_pays(torch.empty(2, 64, 28, 28), 3)       # ... and its last
    assert not winograd_pays(torch.empty(2, 128, 4, 4), 128)      # map too small
    assert not winograd_pays(torch.empty(2, 128, 16, 4), 128)     # one side too small
    assert not winograd_pays(x.double(), 128)                     # only float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not winograd_pays(x, 128)                          # not under bf16 autocast


def test_chunks_of_the_batch_give_the_same_result_and_gradients(monkeypatch):
    """tile_bytes cuts the batch into chunks (each its own graph); U is shared."""
    x, w, b = _case(7, 5, 6, 9, 8, torch.float64)
    x.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    monkeypatch.setattr(wg, "MIN_TILES", 12)  # 6 tiles an image: chunks of 2 images
    sizes = []
    real = wg._winograd_chunk
    monkeypatch.setattr(wg, "_winograd_chunk", lambda xc, *a: sizes.append(len(xc))
                        or real(xc, *a))
    outs = []
    for tb in (None, 1):  # 1 byte: every chunk as small as MIN_TILES allows
        y = winograd_conv3x3(x, w, b, 4, tile_bytes=tb)
        g = torch.autograd.grad(y.square().sum(), (x, w, b))
        outs.append((y, *g))
    assert sizes == [7, 2, 2, 2, 1]
    assert outs[1][0].is_contiguous(memory_format=torch.channels_last)
    for u, v in zip(*outs):
        torch.testing.assert_close(u, v)
    torch.testing.assert_close(outs[0][0], F.conv2d(x, w, b, padding=1))


def test_auto_policy_dispatches_and_matches_the_direct_conv(monkeypatch):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    auto = WinogradConv2d.from_conv(conv, 4, policy="auto")
    assert "policy='auto'" in repr(auto)
    calls = []
    real = wg.winograd_conv3x3
    monkeypatch.setattr(wg, "winograd_conv3x3", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(2, 8, 12, 12)
    monkeypatch.setattr(wg, "AUTO_MIN_CHANNELS", 16)          # 8 channels: direct conv
    torch.testing.assert_close(auto(x), conv(x))
    assert calls == []
    monkeypatch.setattr(wg, "AUTO_MIN_CHANNELS", 8)           # now it pays: Winograd
    y = auto(x)
    assert calls == [1]
    torch.testing.assert_close(y, conv(x), rtol=1e-4, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):         # never under bf16
        auto(x)
    assert calls == [1]
