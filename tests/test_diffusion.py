"""The pure maths against closed forms: posterior, conversions, C_t, KLs, decoders."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpmkit import InputError, cosine, linear, make_schedule
from ddpmkit import diffusion as D

torch.manual_seed(0)


def _batch(B=8, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, d, generator=g, dtype=torch.float64),
            torch.randn(B, d, generator=g, dtype=torch.float64))


def test_q_sample_is_the_closed_form():
    s = linear(1000)
    x0, eps = _batch()
    t = torch.tensor([1, 2, 10, 100, 500, 999, 1000, 3])
    xt = D.q_sample(s, x0, t, eps)
    ab, omab = s.alpha_bar[t].unsqueeze(1), s.one_minus_alpha_bar[t].unsqueeze(1)
    torch.testing.assert_close(xt, ab.sqrt() * x0 + omab.sqrt() * eps, rtol=1e-15, atol=0)
    torch.testing.assert_close(omab, 1 - ab, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_posterior_matches_bayes_rule_on_the_two_gaussians(name):
    """q(x_{t-1}|x_t,x_0) from conditioning the joint Gaussian of (x_{t-1}, x_t) given x_0."""
    s = make_schedule(name, 300)
    c_xt, c_x0, var = D.posterior_coefficients(s)
    for t in (2, 3, 50, 299, 300):
        ab_prev, ab, a = s.alpha_bar[t - 1], s.alpha_bar[t], s.alpha[t]
        # x_{t-1} = sqrt(ab_prev) x0 + sqrt(1-ab_prev) e1 ; x_t = sqrt(a) x_{t-1} + sqrt(1-a) e2
        var_prev, cov, var_t = 1 - ab_prev, a.sqrt() * (1 - ab_prev), 1 - ab
        gain = cov / var_t  # E[x_{t-1}|x_t,x0] = sqrt(ab_prev) x0 + gain (x_t - sqrt(ab) x0)
        assert c_xt[t].item() == pytest.approx(gain.item(), rel=1e-12)
        assert c_x0[t].item() == pytest.approx((ab_prev.sqrt() - gain * ab.sqrt()).item(), rel=1e-9)
        assert var[t].item() == pytest.approx((var_prev - cov**2 / var_t).item(), rel=1e-9)


def test_t_equals_1_edges_are_exact():
    s = cosine(1000)
    c_xt, c_x0, var = D.posterior_coefficients(s)
    assert c_xt[1].item() == 0.0 and c_x0[1].item() == 1.0 and var[1].item() == 0.0
    C = D.consistency_weight(s)
    assert math.isnan(C[1]) and math.isnan(C[0]) and torch.isfinite(C[2:]).all()


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_C_t_equals_half_snr_difference_and_posterior_form(name):
    s = make_schedule(name, 1000)
    _, c_x0, var = D.posterior_coefficients(s)
    C = D.consistency_weight(s)
    torch.testing.assert_close(C[2:], c_x0[2:] ** 2 / (2 * var[2:]), rtol=1e-13, atol=0)
    torch.testing.assert_close(C[2:], (s.snr[1:-1] - s.snr[2:]) / 2, rtol=1e-10, atol=0)


@settings(max_examples=40, deadline=None)
@given(t=st.integers(1, 1000), name=st.sampled_from(["linear", "cosine"]),
       seed=st.integers(0, 10_000))
def test_conversions_round_trip(t, name, seed):
    s = make_schedule(name, 1000)
    x0, eps = _batch(4, 6, seed)
    tt = torch.full((4,), t)
    xt = D.q_sample(s, x0, tt, eps)
    for p in D.PARAMETERIZATIONS:
        pred = D.prediction_from_x0(s, xt, x0, tt, p)
        back = D.x0_from_prediction(s, xt, pred, tt, p)
        # x0 from eps divides by sqrt(alpha_bar_t): conditioning grows near T
        tol = 1e-12 / math.sqrt(s.alpha_bar[t].item())
        torch.testing.assert_close(back, x0, rtol=tol, atol=tol)
    # eps and v of the true x0 are the true noise and sqrt(ab) eps - sqrt(1-ab) x0
    torch.testing.assert_close(D.eps_from_x0(s, xt, x0, tt), eps, rtol=1e-9, atol=1e-9)
    ab = s.alpha_bar[t]
    torch.testing.assert_close(D.v_from_x0(s, xt, x0, tt),
                               ab.sqrt() * eps - (1 - ab).sqrt() * x0, rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(t=st.integers(2, 1000), name=st.sampled_from(["linear", "cosine"]),
       seed=st.integers(0, 10_000))
def test_kl_equals_weighted_x0_mse(t, name, seed):
    s = make_schedule(name, 1000)
    x0, eps = _batch(4, 16, seed)
    x0_hat = x0 + torch.randn_like(x0)
    tt = torch.full((4,), t)
    xt = D.q_sample(s, x0, tt, eps)
    var = D.posterior_coefficients(s)[2][t]
    kl = D.gaussian_kl(D.posterior_mean(s, xt, x0, tt), var, D.mu_from_x0(s, xt, x0_hat, tt), var)
    form = D.consistency_weight(s)[t] * (x0_hat - x0) ** 2
    torch.testing.assert_close(kl.sum(), form.sum(), rtol=1e-11, atol=0)


def test_large_variance_kl_is_weight_plus_mismatch_constant():
    s = linear(1000)
    x0, eps = _batch(3, 7)
    x0_hat = x0 + 0.3 * torch.randn_like(x0)
    for t in (2, 17, 640, 1000):
        tt = torch.full((3,), t)
        xt = D.q_sample(s, x0, tt, eps)
        var_q = D.posterior_coefficients(s)[2][t]
        kl = D.gaussian_kl(D.posterior_mean(s, xt, x0, tt), var_q,
                           D.mu_from_x0(s, xt, x0_hat, tt), s.beta[t])
        form = (D.variance_mismatch(s, "large")[t] + D.kl_x0_weight(s, "large")[t]
                * (x0_hat - x0) ** 2)
        torch.testing.assert_close(kl, form, rtol=1e-10, atol=1e-14)


def test_gaussian_kl_closed_form_and_prior_kl():
    m1, m2 = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-0.2, dtype=torch.float64)
    v1, v2 = 0.5, 2.0
    expected = 0.5 * (math.log(v2 / v1) + (v1 + 0.25) / v2 - 1)
    assert D.gaussian_kl(m1, v1, m2, v2).item() == pytest.approx(expected, rel=1e-14)
    import mpmath

    mpmath.mp.dps = 50
    x0, _ = _batch(2, 3)
    for s in (cosine(1000), linear(1000), linear(100)):  # alpha_bar_T ~ 2e-9, 4e-5, 4e-5
        ab = mpmath.mpf(s.alpha_bar[-1].item())
        ref = [0.5 * (ab * mpmath.mpf(x) ** 2 - ab - mpmath.log(1 - ab))
               for x in x0.flatten().tolist()]
        got = D.prior_kl(s, x0).flatten().tolist()
        for g, r in zip(got, ref):
            assert g == pytest.approx(float(r), rel=1e-12)


@pytest.mark.parametrize("levels", [2, 17, 256])
@pytest.mark.parametrize("mean,log_scale", [(0.0, -2.0), (0.93, -4.6), (-3.0, -0.5), (12.0, -5.0)])
def test_discretized_decoder_sums_to_one_over_all_bins(levels, mean, log_scale):
    xs = torch.linspace(-1, 1, levels, dtype=torch.float64)
    lp = D.discretized_gaussian_log_likelihood(xs, torch.full_like(xs, mean), log_scale, levels)
    assert torch.isfinite(lp).all()
    assert torch.logsumexp(lp, 0).exp().item() == pytest.approx(1.0, abs=1e-10)


def test_discretized_decoder_matches_direct_cdf_difference_in_the_bulk():
    from scipy.stats import norm

    xs = torch.linspace(-1, 1, 17, dtype=torch.float64)[1:-1]
    mean, sd = 0.1, 0.2
    lp = D.discretized_gaussian_log_likelihood(xs, torch.full_like(xs, mean), math.log(sd), 17)
    h = 1 / 16
    ref = [math.log(norm.cdf((x + h - mean) / sd) - norm.cdf((x - h - mean) / sd)) for x in xs]
    torch.testing.assert_close(lp, torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=0)


def test_decoder_is_finite_far_in_the_tails():
    x = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    lp = D.discretized_gaussian_log_likelihood(x, torch.full_like(x, 30.0), math.log(0.01), 256)
    assert torch.isfinite(lp).all() and (lp <= 0).all()
    assert lp[-1].item() == pytest.approx(0.0, abs=1e-300)  # the open top bin holds all mass


def test_bad_t_and_shapes_raise_clear_errors():
    s = linear(100)
    x0, eps = _batch()
    with pytest.raises(InputError, match="1..100"):
        D.q_sample(s, x0, torch.zeros(8, dtype=torch.long), eps)
    with pytest.raises(InputError, match="shape"):
        D.q_sample(s, x0, torch.ones(3, dtype=torch.long), eps)
    with pytest.raises(InputError, match="integer"):
        D.q_sample(s, x0, torch.ones(8), eps)
    with pytest.raises(InputError, match="parameterization"):
        D.x0_from_prediction(s, x0, x0, 5, "score")
    with pytest.raises(InputError, match="variance"):
        D.model_variance_table(s, "medium")
