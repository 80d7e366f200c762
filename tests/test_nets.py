"""ddpmkit.nets: shapes for any (C, H, W), t handling, determinism, gradients, presets, errors."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from ddpmkit import Denoiser, linear
from ddpmkit.errors import InputError
from ddpmkit.nets import (
    PRESETS,
    MLPConfig,
    UNetConfig,
    build_net,
    config_from_dict,
    config_to_dict,
    count_parameters,
    preset,
    sinusoidal_embedding,
)
from ddpmkit.train import maybe_compile


def tiny(**kw) -> UNetConfig:
    base = dict(in_channels=1, ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_levels=(1,),
                norm_groups=4, T=100)
    return UNetConfig(**{**base, **kw})


def _xt(B: int, C: int, H: int, W: int, T: int = 100, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, H, W, generator=g), torch.randint(1, T + 1, (B,), generator=g)


@pytest.mark.parametrize("C,H,W", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 7, 5), (2, 13, 31),
                                   (4, 1, 1), (1, 3, 17), (5, 9, 9)])
def test_unet_output_shape_equals_input_shape(C, H, W):
    torch.manual_seed(0)
    net = build_net(tiny(in_channels=C))
    x, t = _xt(2, C, H, W)
    out = net(x, t)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_unet_out_channels_differ_from_in_channels():
    net = build_net(tiny(in_channels=3, out_channels=6))
    x, t = _xt(2, 3, 10, 10)
    assert net(x, t).shape == (2, 6, 10, 10)


def test_channels_last_and_nchw_give_the_same_function():
    torch.manual_seed(0)
    a = build_net(tiny(channels_last=True))
    b = build_net(tiny(channels_last=False))
    b.load_state_dict(a.state_dict())
    x, t = _xt(3, 1, 11, 14)
    torch.testing.assert_close(a(x, t), b(x, t), rtol=1e-4, atol=1e-5)


def test_winograd_conv3x3_is_the_same_function_with_the_same_parameters(monkeypatch):
    """conv3x3="winograd": F(4x4, 3x3) where the policy says it pays (>= 128 channels, 8x8 to
    16x16 maps, float32, no autocast), same state_dict, outputs and gradients agree."""
    from ddpmkit.nets import winograd as wg

    cfg = dict(in_channels=2, ch=128, ch_mult=(1, 1), num_res_blocks=1, attn_levels=(),
               mid_attn=False, T=100)
    torch.manual_seed(0)
    a = build_net(UNetConfig(**cfg)).eval()
    b = build_net(UNetConfig(**cfg, conv3x3="winograd")).eval()
    assert list(a.state_dict()) == list(b.state_dict())
    b.load_state_dict(a.state_dict())
    calls = []
    real = wg.winograd_conv3x3
    monkeypatch.setattr(wg, "winograd_conv3x3", lambda *z: calls.append(z[0].shape) or real(*z))
    x, t = _xt(2, 2, 16, 12)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = a(xa, t), b(xb, t)
    # 16x12 and its 8x6 level: only the 128 -> 128 convs at 16x12 qualify (not conv_in/out,
    # not the 8x6 level: 6 < 8)
    assert calls and all(s[1] in (128, 256) and tuple(s[2:]) == (16, 12) for s in calls)
    torch.testing.assert_close(yb, ya, rtol=1e-4, atol=1e-4 * ya.abs().max().item())
    ya.square().sum().backward()
    yb.square().sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-3, atol=1e-4 * xa.grad.abs().max())
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-3,
                                   atol=1e-4 * pa.grad.abs().max().item() + 1e-12, msg=n)
    assert config_from_dict(config_to_dict(b.cfg)) == b.cfg


def test_t_given_as_int_tensor_in_1_to_T_including_both_ends():
    net = build_net(tiny(T=100))
    x, _ = _xt(2, 1, 8, 8)
    for dtype in (torch.int64, torch.int32):
        out1 = net(x, torch.tensor([1, 100], dtype=dtype))
        assert out1.shape == x.shape
    # the step reaches the output: different t, different prediction
    assert not torch.allclose(net(x, torch.tensor([1, 1])), net(x, torch.tensor([100, 100])))


def test_embedding_depends_on_t_over_T_so_any_T_spans_the_same_band():
    e1 = sinusoidal_embedding(torch.tensor([500]), 64, T=1000)
    e2 = sinusoidal_embedding(torch.tensor([50]), 64, T=100)
    e3 = sinusoidal_embedding(torch.tensor([2000]), 64, T=4000)
    torch.testing.assert_close(e1, e2)
    torch.testing.assert_close(e1, e3)
    assert e1.shape == (1, 64)
    assert sinusoidal_embedding(torch.tensor([3]), 7, T=10).shape == (1, 7)


def test_same_seed_gives_same_weights_and_output():
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        net = build_net(tiny(dropout=0.1)).eval()
        x, t = _xt(2, 1, 9, 9, seed=5)
        outs.append(net(x, t))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    torch.manual_seed(124)
    other = build_net(tiny(dropout=0.1)).eval()
    assert not torch.allclose(other(x, t), outs[0])


@pytest.mark.parametrize("cfg", [tiny(), tiny(attn_levels=(0, 1, 2), num_heads=2),
                                 tiny(dropout=0.2, mid_attn=False)])
def test_gradients_reach_every_parameter(cfg):
    torch.manual_seed(0)
    net = build_net(cfg)
    x, t = _xt(2, 1, 10, 7)
    (net(x, t) - x).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_mlp_shape_gradients_and_t_dependence():
    torch.manual_seed(0)
    net = build_net(MLPConfig(dim=3, hidden=32, depth=2, temb_dim=16, T=50))
    x = torch.randn(5, 3)
    t = torch.tensor([1, 10, 20, 40, 50])
    out = net(x, t)
    assert out.shape == x.shape
    out.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert not torch.allclose(net(x, torch.ones(5, dtype=torch.long)),
                              net(x, torch.full((5,), 50)))


def test_preset_parameter_counts():
    counts = {n: count_parameters(build_net(preset(n))) for n in PRESETS}
    # Ho et al. (2020), CIFAR-10: 35.7M parameters
    assert abs(counts["cifar10"] - 35.7e6) / 35.7e6 < 0.01
    assert 0.3e6 <= counts["digits"] <= 2e6
    assert 2e6 <= counts["mnist"] <= 10e6
    assert counts["mlp2d"] < 1e6
    assert set(PRESETS) == {"digits", "mnist", "cifar10", "mlp2d"}


def test_presets_run_on_their_data_shapes():
    for name, shape in (("digits", (1, 8, 8)), ("mnist", (1, 28, 28))):
        net = build_net(preset(name))
        x, t = _xt(2, *shape, T=1000)
        assert net(x, t).shape == x.shape
    net = build_net(preset("mlp2d"))
    assert net(torch.randn(4, 2), torch.tensor([1, 2, 3, 1000])).shape == (4, 2)


def test_preset_overrides_and_unknown_names():
    assert preset("mnist", T=4000).T == 4000
    with pytest.raises(InputError, match="unknown net preset 'cifar'"):
        preset("cifar")
    with pytest.raises(InputError, match="bogus"):
        preset("digits", bogus=1)


@pytest.mark.parametrize("name", PRESETS)
def test_config_json_round_trip(name):
    cfg = preset(name)
    d = json.loads(json.dumps(config_to_dict(cfg)))
    assert d["kind"] in ("unet", "mlp")
    assert config_from_dict(d) == cfg


def test_config_from_dict_rejects_unknown_keys_and_kinds():
    d = config_to_dict(preset("digits"))
    with pytest.raises(InputError, match="widht"):
        config_from_dict({**d, "widht": 3})
    with pytest.raises(InputError, match="'transformer'"):
        config_from_dict({**d, "kind": "transformer"})
    with pytest.raises(InputError, match="kind"):
        config_from_dict({k: v for k, v in d.items() if k != "kind"})


@pytest.mark.parametrize("kw,match", [
    (dict(ch=10), "norm_groups"), (dict(ch_mult=()), "ch_mult"), (dict(attn_levels=(3,)),
                                                                   "attn_levels"),
    (dict(T=0), "T"), (dict(dropout=1.0), "dropout"), (dict(in_channels=0), "in_channels"),
    (dict(conv3x3="fft"), "conv3x3"),
])
def test_bad_config_values_raise_input_error(kw, match):
    with pytest.raises(InputError, match=match):
        tiny(**kw)


def test_clear_errors_for_wrong_rank_channels_and_t():
    net = build_net(tiny(in_channels=3, T=100))
    x, t = _xt(2, 3, 8, 8)
    with pytest.raises(InputError, match=r"\(B, C, H, W\)"):
        net(x[0], t)
    with pytest.raises(InputError, match="3 channels, got x with 1"):
        net(x[:, :1], t)
    with pytest.raises(InputError, match=r"t in 1\.\.100"):
        net(x, torch.tensor([0, 5]))
    with pytest.raises(InputError, match=r"t in 1\.\.100"):
        net(x, torch.tensor([5, 101]))
    with pytest.raises(InputError, match="int64"):
        net(x, torch.tensor([0.5, 0.7]))
    with pytest.raises(InputError, match=r"shape \(2,\)"):
        net(x, torch.tensor([5]))
    mlp = build_net(MLPConfig(dim=2, T=10))
    with pytest.raises(InputError, match=r"\(B, D\)"):
        mlp(torch.randn(2, 2, 1), torch.tensor([1, 2]))
    with pytest.raises(InputError, match="2 features"):
        mlp(torch.randn(2, 3), torch.tensor([1, 2]))


def test_runs_under_bf16_autocast_close_to_float32():
    torch.manual_seed(0)
    net = build_net(tiny(ch=16, norm_groups=8))
    x, t = _xt(4, 1, 12, 12)
    ref = net(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t)
        (out.float() - x).square().mean().backward()
    rel = (out.float() - ref).norm() / ref.norm()
    assert rel < 0.05
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_state_dict_saves_with_safetensors_and_reloads(tmp_path):
    from safetensors.torch import load_file, save_file

    net = build_net(tiny())
    x, t = _xt(2, 1, 8, 8)
    net(x, t).sum().backward()  # parameters must stay contiguous after use
    save_file(net.state_dict(), tmp_path / "m.safetensors")
    other = build_net(tiny())
    other.load_state_dict(load_file(tmp_path / "m.safetensors"))
    torch.testing.assert_close(other(x, t), net(x, t))


def test_maybe_compile_disabled_returns_the_net():
    net = build_net(tiny())
    assert maybe_compile(net, False) is net


def test_maybe_compile_falls_back_to_eager_with_a_warning(monkeypatch):
    net = build_net(tiny())
    x, t = _xt(2, 1, 8, 8)

    def broken(*_a, **_k):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", lambda m, **k: broken)
    wrapped = maybe_compile(net, True)
    with pytest.warns(RuntimeWarning, match="running eager"):
        out = wrapped(x, t)
    torch.testing.assert_close(out, net(x, t))
    assert wrapped.state_dict().keys() == net.state_dict().keys()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warns once, then stays eager quietly
        wrapped(x, t)
    with pytest.raises(InputError):  # bad input is not swallowed by the fallback
        wrapped(x, torch.tensor([0, 1]))


def test_maybe_compile_when_torch_compile_itself_raises(monkeypatch):
    def boom(*_a, **_k):
        raise RuntimeError("dynamo unsupported")

    monkeypatch.setattr(torch, "compile", boom)
    net = build_net(tiny())
    with pytest.warns(RuntimeWarning, match="unavailable"):
        assert maybe_compile(net, True) is net


def test_denoiser_wraps_our_unet():
    sched = linear(T=100)
    den = Denoiser(build_net(tiny(T=100)), sched, "eps")
    x, t = _xt(2, 1, 9, 9)
    for f in (den.x0_hat, den.eps_hat, den.v_hat, den.mu):
        assert f(x, t).shape == x.shape


@pytest.mark.parametrize("channels_last", [True, False])
def test_subpixel_upsample_equals_nearest_then_conv(channels_last):
    # conv3x3(nearest_x2(x)) == interleave of four 2x2 convs on x (values and gradients)
    import torch.nn.functional as F

    from ddpmkit.nets.unet import Upsample

    torch.manual_seed(0)
    up = Upsample(6)
    x = torch.randn(2, 6, 5, 3)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    fast = up(x, (10, 6))
    ref = up.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    g_fast = torch.autograd.grad(fast.square().sum(), [x, up.conv.weight, up.conv.bias])
    g_ref = torch.autograd.grad(ref.square().sum(), [x, up.conv.weight, up.conv.bias])
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # an odd target size takes the resize path: 5 -> 9 rows
    assert up(x, (9, 6)).shape == (2, 6, 9, 6)
