"""The ancestral sampler on Gaussian data with its exact denoiser."""

import pytest
import torch

from ddpmkit import InputError, make_schedule, sample_ancestral
from ddpmkit.calibrate import GaussianData
from ddpmkit.samplers import apply_x0_policy


def exact_sampler_moments(data: GaussianData, den, chain, variance):
    """Mean and variance of ancestral samples for Gaussian data, by the linear recursion.

    x0_hat(x_k) = m + g (x_k - a m) is linear, so x_{k-1} = A x_k + b + sigma z with
    A = c_xt + c_x0 g and b = c_x0 (m - g a m): mean and variance propagate exactly from
    x_T ~ N(0, I)."""
    from ddpmkit import diffusion as D

    c_xt, c_x0, _ = D.posterior_tables(chain)
    var_p = D.model_variance_table(chain, variance)
    mean, var = torch.zeros(data.dims, dtype=torch.float64), torch.ones(data.dims,
                                                                       dtype=torch.float64)
    for k in range(chain.T, 0, -1):
        a = chain.alpha_bar[k].sqrt()
        g = a * data.std**2 / (chain.alpha_bar[k] * data.std**2 + chain.one_minus_alpha_bar[k])
        A = c_xt[k] + c_x0[k] * g
        b = c_x0[k] * (data.mean - g * a * data.mean)
        mean, var = A * mean + b, A**2 * var + var_p[k]
    return mean, var


@pytest.mark.parametrize("variance", ["small", "large"])
@pytest.mark.parametrize("steps", [None, 20])
def test_samples_follow_the_exact_sampler_distribution(variance, steps):
    data = GaussianData.default()
    sched = make_schedule("cosine", 200)
    den = data.exact_denoiser(sched)
    n = 10000
    r = sample_ancestral(den, (n, 4), steps=steps, variance=variance, seed=0,
                         dtype=torch.float64)
    chain = sched if steps is None else sched.respace(steps)
    mean, var = exact_sampler_moments(data, den, chain, variance)
    assert ((r.x.mean(0) - mean).abs() < 4 * (var / n).sqrt()).all()
    # the sample variance of n Gaussians has relative sd sqrt(2/n) = 1.4 %
    assert ((r.x.var(0) / var - 1).abs() < 4 * (2 / n) ** 0.5).all()


def test_full_chain_sampler_moments_large_exact_small_under_disperses_narrow_dims():
    """At T = 1000 the "large" variance (beta_t) gives the data's moments within 2 %. The
    "small" one (sigma_q^2) under-disperses the narrowest dimension (std 0.05) by ~14 %: near
    t = 1, sigma_q^2 / beta_t = (t - 1)/t whatever T is, and that is where a dimension of
    variance s^2 is decided (1 - alpha_bar_t ~ s^2), the sampling twin of the ELBO's gamma/2."""
    data = GaussianData.default()
    sched = make_schedule("linear", 1000)
    den = data.exact_denoiser(sched)
    for variance in ("small", "large"):
        mean, var = exact_sampler_moments(data, den, sched, variance)
        torch.testing.assert_close(mean, data.mean, rtol=0, atol=2e-3)
        rel = var / data.std**2
        if variance == "large":
            assert ((rel - 1).abs() < 0.02).all(), rel
        else:
            assert ((rel[:3] - 1).abs() < 0.05).all() and 0.8 < rel[3] < 0.9, rel


def test_same_seed_same_samples_and_trajectory():
    den = GaussianData.default().exact_denoiser(make_schedule("linear", 100))
    a = sample_ancestral(den, (8, 4), seed=3, return_trajectory=True)
    b = sample_ancestral(den, (8, 4), seed=3)
    c = sample_ancestral(den, (8, 4), seed=4)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert len(a.trajectory) == 100 and a.trajectory[0].t == 100 and a.trajectory[-1].t == 1
    assert a.meta["network_calls"] == 100 and a.meta["variance"] == "small"


def test_callback_sees_every_step_and_x_T_is_used():
    den = GaussianData.default().exact_denoiser(make_schedule("linear", 60))
    seen = []
    x_T = torch.zeros(3, 4)
    sample_ancestral(den, x_T=x_T, steps=12, callback=lambda s: seen.append(s.t))
    assert len(seen) == 12 and seen[0] == 60 and seen == sorted(seen, reverse=True)


def test_x0_policies():
    x = torch.tensor([[3.0, -0.5], [0.2, -0.1]])
    assert torch.equal(apply_x0_policy(x, "clip"), torch.tensor([[1.0, -0.5], [0.2, -0.1]]))
    d = apply_x0_policy(x, "dynamic", percentile=1.0)
    assert d.abs().max() <= 1.0 and torch.equal(d[1], x[1])  # rows within [-1, 1] unchanged
    with pytest.raises(InputError):
        apply_x0_policy(x, "tanh")


def test_too_many_steps_is_a_clear_error():
    den = GaussianData.default().exact_denoiser(make_schedule("linear", 60))
    with pytest.raises(InputError, match="exceeds"):
        sample_ancestral(den, (2, 4), steps=61)
