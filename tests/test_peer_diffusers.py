"""Posterior means and one ancestral step against diffusers.DDPMScheduler (an independent peer).

Where the conventions coincide the numbers agree to <= 1e-10 in float64. Where they differ:
- diffusers indexes steps from 0: its ``timestep = k`` is our t = k + 1 (its alphas_cumprod[k]
  is our alpha_bar[k+1]); its "previous" alpha_bar at k = 0 is 1, our alpha_bar[0] = 1.
- diffusers builds its tables in float32 (``torch.linspace(..., dtype=float32)``); we replace them
  with float64 tables below, otherwise agreement is only ~1e-7.
- diffusers clips x0_hat to [-1, 1] by default (clip_sample=True); ours is an explicit policy
  (default none), so clipping is switched off for the comparison.
- diffusers' "fixed_small" variance is clamped at 1e-20; ours is 0 at t = 1 and no noise is
  added there by either.
"""

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import DDPMScheduler  # noqa: E402

from ddpmkit import diffusion as D  # noqa: E402
from ddpmkit import linear  # noqa: E402
from ddpmkit.samplers import ancestral_step  # noqa: E402


def _float64_scheduler(variance_type: str) -> tuple[DDPMScheduler, object]:
    ours = linear(1000)
    sch = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                        beta_end=0.02, clip_sample=False, prediction_type="sample",
                        variance_type=variance_type)
    sch.betas = ours.beta[1:].clone()
    sch.alphas = 1.0 - sch.betas
    sch.alphas_cumprod = torch.cumprod(sch.alphas, dim=0)
    sch.one = torch.tensor(1.0, dtype=torch.float64)
    sch.set_timesteps(1000)
    return sch, ours


def test_diffusers_float32_tables_differ_from_float64_linear():
    sch = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    ours = linear(1000)
    assert sch.betas.dtype == torch.float32
    diff = (sch.alphas_cumprod.double() - ours.alpha_bar[1:]).abs().max().item()
    assert 1e-9 < diff < 1e-5  # the peer's float32 drift that we avoid


@pytest.mark.parametrize("variance_type,ours_var",
                         [("fixed_small", "small"), ("fixed_large", "large")])
@pytest.mark.parametrize("t", [1, 2, 3, 10, 500, 999, 1000])
def test_ancestral_step_matches_ddpm_scheduler(variance_type, ours_var, t):
    sch, ours = _float64_scheduler(variance_type)
    k = t - 1  # diffusers' 0-based index
    if t >= 2:  # at t = 1 neither adds noise, whatever variance it reports
        peer_var = sch._get_variance(k).item()
        assert peer_var == pytest.approx(D.model_variance_table(ours, ours_var)[t].item(),
                                         rel=1e-10)
    g = torch.Generator().manual_seed(t)
    x_t = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    x0_hat = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    # the peer draws z from the generator it is given; draw the same z for ours
    peer = sch.step(x0_hat, k, x_t, generator=torch.Generator().manual_seed(123),
                    return_dict=False)[0]
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(123), dtype=x_t.dtype)
    ours_step = ancestral_step(ours, x_t, x0_hat, t, z, ours_var)
    torch.testing.assert_close(ours_step, peer, rtol=1e-10, atol=1e-12)
    # the noise-free part is the posterior mean mu_q(x_t, x0_hat) = c_xt x_t + c_x0 x0_hat
    mean = D.posterior_mean(ours, x_t, x0_hat, torch.full((4,), t))
    if t == 1:
        torch.testing.assert_close(peer, mean, rtol=1e-10, atol=1e-12)
