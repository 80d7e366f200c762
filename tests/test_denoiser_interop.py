"""A diffusers UNet2DModel used as the net of a ddpmkit Denoiser (interop)."""

from __future__ import annotations

import pytest
import torch

from ddpmkit import Denoiser, linear

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def unet2d():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
    ).eval()


def _xt(T: int):
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 1, 8, 8, generator=g), torch.tensor([1, T // 2, T])


def test_diffusers_eps_net_gives_x0_hat_by_the_exact_conversion(unet2d):
    sched = linear(T=100)
    den = Denoiser(unet2d, sched, "eps")
    x, t = _xt(100)
    with torch.no_grad():
        eps = unet2d(x, t).sample
        ab = sched.alpha_bar[t].to(x.dtype).view(-1, 1, 1, 1)
        # x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t)
        x0_expected = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        torch.testing.assert_close(den.eps_hat(x, t), eps)
        torch.testing.assert_close(den.x0_hat(x, t), x0_expected, rtol=1e-5, atol=1e-5)
        for f in (den.v_hat, den.mu):
            assert f(x, t).shape == x.shape


def test_diffusers_net_is_a_registered_submodule_and_trains(unet2d):
    den = Denoiser(unet2d, linear(T=100), "x0")
    assert {id(p) for p in den.parameters()} == {id(p) for p in unet2d.parameters()}
    x, t = _xt(100)
    (den.x0_hat(x, t) - x).square().mean().backward()
    assert all(p.grad is not None for p in unet2d.parameters())
    unet2d.zero_grad(set_to_none=True)
