"""The pieces of the ELBO recipe: log-SNR end points, preconditioned outputs, t proposals,
the analytic variance, the K-level decoder and Fourier features; each against a closed form."""

import math
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ddpmkit.diffusion as D
from ddpmkit import nets
from ddpmkit.calibrate import GaussianData
from ddpmkit.denoiser import Denoiser
from ddpmkit.errors import InputError
from ddpmkit.likelihood import DecoderSpec, ELBOEstimator, fit_mmse, negative_elbo_bpd
from ddpmkit.losses import (
    TimestepSampler,
    logsnr_step_proposal,
    loss_weights,
    make_timestep_sampler,
    raw_weight_proposal,
)
from ddpmkit.schedules import (
    cosine,
    default_logsnr_endpoints,
    from_logsnr,
    make_schedule,
)
from ddpmkit.train.config import LEGACY_DEFAULTS, TrainConfig, parse_fourier


# ---- schedules by their log-SNR end points ---------------------------------------------------
@pytest.mark.parametrize("shape", ["logsnr_linear", "cosine", "linear", "sigmoid"])
def test_every_shape_hits_its_end_points(shape):
    s = make_schedule(shape, 500, logsnr_max=7.0, logsnr_min=-8.0)
    lam = s.log_snr
    assert lam[1].item() == pytest.approx(7.0, abs=1e-9)
    assert lam[-1].item() == pytest.approx(-8.0, abs=1e-9)
    assert bool((lam[2:] < lam[1:-1]).all())
    # alpha_bar and 1 - alpha_bar are consistent, and beta reproduces alpha_bar
    assert torch.allclose(s.alpha_bar + s.one_minus_alpha_bar, torch.ones(501, dtype=torch.float64),
                          rtol=0, atol=1e-15)
    assert torch.allclose(torch.cumprod(1 - s.beta, 0), s.alpha_bar, rtol=1e-12, atol=0)


def test_logsnr_linear_is_linear_in_t():
    s = make_schedule("logsnr_linear", 101, logsnr_max=6.0, logsnr_min=-9.0)
    expect = 6.0 + torch.arange(101, dtype=torch.float64) / 100 * (-15.0)
    assert torch.allclose(s.log_snr[1:], expect, rtol=0, atol=1e-12)


def test_truncated_cosine_is_the_cosine_shape():
    """Truncation keeps the shape: lambda = -2 log tan(a + u (b - a)), so tan(pi u/2)-linear."""
    s = make_schedule("cosine", 200, logsnr_max=5.0, logsnr_min=-5.0)
    ang = torch.atan(torch.exp(-s.log_snr[1:] / 2))
    steps = ang[1:] - ang[:-1]
    assert torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-9)


def test_native_schedules_are_unchanged_without_end_points():
    assert torch.equal(make_schedule("cosine", 1000).beta, cosine(1000).beta)


@pytest.mark.parametrize("kw, msg", [
    ({"logsnr_max": 5.0}, "both"), ({"logsnr_max": -1.0, "logsnr_min": 2.0}, "larger"),
    ({"logsnr_max": float("nan"), "logsnr_min": -2.0}, "finite"),
])
def test_bad_end_points_are_refused(kw, msg):
    with pytest.raises(InputError, match=msg):
        make_schedule("logsnr_linear", 10, **kw)


def test_logsnr_linear_needs_end_points():
    with pytest.raises(InputError, match="end points"):
        make_schedule("logsnr_linear", 10)


def test_default_end_points_follow_the_bin_width():
    hi, lo = default_logsnr_endpoints(17)
    delta = 2 / 16
    from ddpmkit.schedules import LOGSNR_MAX_BIN_FRACTION as c

    assert hi == pytest.approx(2 * math.log(c / delta), abs=1e-4)
    # 8-bit data: finer bins, a higher end point; the low end makes the prior term tiny
    assert default_logsnr_endpoints(256)[0] > hi
    s = make_schedule("logsnr_linear", 1000, logsnr_max=hi, logsnr_min=lo)
    prior = D.prior_kl(s, torch.ones(1, 1, dtype=torch.float64))  # worst case |x0| = 1
    assert float(prior) / math.log(2) < 1e-4


def test_from_logsnr_rejects_increasing_values():
    with pytest.raises(InputError, match="decrease"):
        from_logsnr([1.0, 2.0])


# ---- preconditioned outputs --------------------------------------------------------------
SCHED = make_schedule("logsnr_linear", 50, logsnr_max=8.0, logsnr_min=-8.0)


@pytest.mark.parametrize("sd", [0.3, 0.5, 1.7])
def test_edm_target_and_conversion_are_inverses(sd):
    g = torch.Generator().manual_seed(0)
    x0, xt = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g,
                                                                              dtype=torch.float64)
    t = torch.tensor([1, 2, 10, 25, 49, 50])
    F = D.prediction_from_x0(SCHED, xt, x0, t, "edm", sd)
    assert torch.allclose(D.x0_from_prediction(SCHED, xt, F, t, "edm", sd), x0, atol=1e-12)


def test_edm_with_unit_sigma_data_is_v_with_the_sign_flipped():
    g = torch.Generator().manual_seed(1)
    xt, F = (torch.randn(4, 2, generator=g, dtype=torch.float64) for _ in range(2))
    t = torch.tensor([1, 5, 30, 50])
    assert torch.allclose(D.x0_from_prediction(SCHED, xt, F, t, "edm", 1.0),
                          D.x0_from_v(SCHED, xt, -F, t), atol=1e-12)


@pytest.mark.parametrize("param", ["x0", "eps", "v", "mu", "edm"])
def test_raw_error_scale_is_the_derivative_of_x0_hat(param):
    """g_t = |d x0_hat / d raw|, checked by autograd at every t."""
    t = torch.arange(1, 51)
    xt = torch.randn(50, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    raw = torch.zeros(50, 1, dtype=torch.float64, requires_grad=True)
    D.x0_from_prediction(SCHED, xt, raw, t, param, 0.6).sum().backward()
    g = D.raw_error_scale(SCHED, param, 0.6)[1:]
    assert torch.allclose(raw.grad.flatten().abs(), g, rtol=1e-10)


def test_denoiser_feeds_edm_nets_c_in_x_t():
    seen = {}

    def net(x, t):
        seen["x"] = x
        return torch.zeros_like(x)

    den = Denoiser(net, SCHED, "edm", sigma_data=0.5)
    xt = torch.ones(2, 3, dtype=torch.float64)
    t = torch.tensor([3, 40])
    x0 = den.x0_hat(xt, t)
    c_in, c_skip, _ = D.edm_coefficients(SCHED, t, xt, 0.5)
    assert torch.allclose(seen["x"], c_in * xt) and torch.allclose(x0, c_skip * xt)
    with pytest.raises(InputError, match="sigma_data"):
        Denoiser(net, SCHED, "edm", sigma_data=0.0)


# ---- t proposals -------------------------------------------------------------------------------
def test_logsnr_proposal_is_uniform_on_a_logsnr_linear_chain():
    q = logsnr_step_proposal(SCHED)
    assert torch.allclose(q[1:], torch.full((50,), 1 / 50, dtype=torch.float64), rtol=1e-9)


def test_weight_proposal_gives_every_raw_error_the_same_weight():
    """w_t g_t^2 / (T q(t)) is the same for every t: the loss is a plain raw-output MSE."""
    w = loss_weights(SCHED, "elbo")
    q = raw_weight_proposal(SCHED, w, "v")
    per_draw = w[1:] * D.raw_error_scale(SCHED, "v")[1:] ** 2 / (50 * q[1:])
    assert torch.allclose(per_draw, per_draw[0].expand_as(per_draw), rtol=1e-10)
    assert q[1] > 0.05  # the decoder term is drawn often, not 1 time in T


@pytest.mark.parametrize("kind, mix", [("uniform", 0.0), ("weight", 0.0), ("logsnr", 0.0),
                                       ("weight", 0.3)])
@pytest.mark.parametrize("stratified", [False, True])
def test_importance_weighted_draws_are_unbiased(kind, mix, stratified):
    """E_q[f(t) / (T q(t))] = mean_t f(t) for any f, within 5 SE over many draws."""
    w = loss_weights(SCHED, "elbo")
    ts = make_timestep_sampler(kind, SCHED, w, "v", stratified=stratified, uniform_mix=mix)
    f = torch.sin(torch.arange(51, dtype=torch.float64)) + 1.5
    g = torch.Generator().manual_seed(3)
    est = torch.stack([(f[t] * imp).mean() for t, imp in (ts.sample(64, g) for _ in range(400))])
    assert abs(float(est.mean()) - float(f[1:].mean())) < 5 * float(est.std()) / 20 + 1e-12


def test_stratified_draws_cover_every_slice_of_the_mass_once():
    ts = TimestepSampler(50, "uniform", stratified=True)
    t, _ = ts.sample(50, torch.Generator().manual_seed(4))
    assert sorted(t.tolist()) == list(range(1, 51))  # uniform q, B = T: each t exactly once


def test_fixed_proposals_need_their_table():
    with pytest.raises(InputError, match="proposal"):
        TimestepSampler(10, "weight")


# ---- the analytic variance ---------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(e=st.floats(1e-6, 1.0), t=st.integers(2, 50))
def test_analytic_variance_minimises_the_expected_kl(e, t):
    """E[KL] = D m_t + w_t D e as a function of sigma_t^2 is smallest at sigma_q^2 + c_x0^2 e."""
    _, c_x0, var_q = D.posterior_coefficients(SCHED)
    mm = torch.full((51,), e, dtype=torch.float64)

    def expected_kl(var):
        return 0.5 * (math.log(var / var_q[t]) + var_q[t] / var - 1) + c_x0[t] ** 2 * e / (2 * var)

    best = D.model_variance_table(SCHED, "analytic", mm)[t]
    kl = (D.variance_mismatch(SCHED, "analytic", mm)[t]
          + D.kl_x0_weight(SCHED, "analytic", mm)[t] * e)
    assert float(kl) == pytest.approx(float(expected_kl(best)), rel=1e-9, abs=1e-15)
    for f in (0.7, 1.3):
        assert float(expected_kl(best * f)) >= float(kl) - 1e-15


def test_fit_mmse_recovers_the_exact_denoisers_error():
    """Gaussian data, exact denoiser: the measured mmse_t matches the closed form."""
    data = GaussianData.default()
    s = make_schedule("logsnr_linear", 200, logsnr_max=10.0, logsnr_min=-9.0)
    den = data.exact_denoiser(s)
    x = data.sample(4000, torch.Generator().manual_seed(5))
    got = fit_mmse(den, x, n=4000, knots=40)
    true = data.isotropic_mmse(s)
    assert torch.allclose(got[1:], true[1:], rtol=0.12)


def test_analytic_variance_needs_mmse_and_closes_the_calibration_gap():
    from ddpmkit.calibrate import gaussian_expected_neg_elbo

    data = GaussianData.default()
    s = cosine(1000)
    true = data.entropy_nats()
    gap = {v: (gaussian_expected_neg_elbo(data, s, v)["total"] - true) / (4 * math.log(2))
           for v in ("small", "analytic")}
    assert gap["small"] > 0.4 and 0 < gap["analytic"] < 0.05
    den = data.exact_denoiser(s)
    with pytest.raises(InputError, match="mmse"):
        ELBOEstimator(variance="analytic").terms(den, data.sample(4))


# ---- the K-level decoder -------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.01, 0.1, 1.0])
def test_levels_decoder_is_a_distribution_over_the_levels(sigma):
    K = 17
    v = torch.linspace(-1, 1, K, dtype=torch.float64)
    x1 = torch.randn(5, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    lp = torch.stack([D.levels_log_likelihood(v[k].expand(5, 1), x1, 0.99, sigma, K)
                      for k in range(K)])
    assert torch.allclose(lp.exp().sum(0), torch.ones(5, 1, dtype=torch.float64), atol=1e-12)


def test_levels_decoder_is_free_at_small_noise_and_needs_no_network():
    x0 = torch.linspace(-1, 1, 17, dtype=torch.float64)[None].repeat(3, 1)
    den = Denoiser(lambda x, t: torch.full_like(x, float("nan")),
                   make_schedule("logsnr_linear", 20, logsnr_max=12.0, logsnr_min=-9.0), "v")
    est = ELBOEstimator(decoder=DecoderSpec(kind="levels", levels=17))
    x1 = D.q_sample(den.schedule, x0, torch.ones(3, dtype=torch.int64), torch.randn_like(x0))
    from ddpmkit.likelihood import decoder_nll

    nll = decoder_nll(den, x0, x1, est.decoder)
    assert torch.isfinite(nll).all() and float(nll.max()) < 1e-6


# ---- the estimator's settings --------------------------------------------------------------
@pytest.mark.parametrize("kw, msg", [
    ({"method": "fast"}, "method"), ({"variance": "huge"}, "variance"),
    ({"proposal": "magic"}, "proposal"), ({"strata": 0}, "strata"),
    ({"max_batch": 1.5}, "max_batch"),
])
def test_estimator_refuses_bad_settings(kw, msg):
    with pytest.raises(InputError, match=msg):
        ELBOEstimator(**kw)


def test_estimator_settings_round_trip_as_json():
    import json

    est = ELBOEstimator(method="stratified", strata=7, decoder=DecoderSpec("levels", 17))
    d = json.loads(json.dumps(est.as_dict()))
    assert d["decoder"] == {"kind": "levels", "levels": 17, "variance": None}
    assert ELBOEstimator(**(d | {"decoder": DecoderSpec(**d["decoder"])})) == est


def test_negative_elbo_bpd_is_the_estimator():
    data = GaussianData.default()
    s = make_schedule("logsnr_linear", 30, logsnr_max=8.0, logsnr_min=-9.0)
    den, x = data.exact_denoiser(s), data.sample(40, torch.Generator().manual_seed(7))
    kw = dict(method="stratified", strata=5, decoder=DecoderSpec(kind="gaussian"))
    a = negative_elbo_bpd(den, x, seed=3, **kw)
    b = ELBOEstimator(**kw).evaluate(den, x, seed=3)
    assert a == b


# ---- configuration: auto values, legacy runs, the CLI ---------------------------------------
def test_auto_values_resolve_against_the_data():
    cfg = TrainConfig(steps=1).resolve(17, 0.75)
    hi, lo = default_logsnr_endpoints(17)
    assert (cfg.logsnr_max, cfg.logsnr_min, cfg.fourier_features) == (hi, lo, "8,16")
    assert cfg.sigma_data is None  # only the edm output keeps it
    assert TrainConfig(steps=1, parameterization="edm").resolve(17, 0.75).sigma_data == 0.75
    assert TrainConfig(steps=1).resolve(None, 1.0, image=False).fourier_features == "none"


def test_a_config_json_without_the_new_fields_is_a_legacy_run():
    d = TrainConfig(steps=1, schedule="cosine", logsnr_max=None, logsnr_min=None).to_dict()
    for k in LEGACY_DEFAULTS:
        d.pop(k)
    cfg = TrainConfig.from_dict(d)
    assert {k: getattr(cfg, k) for k in LEGACY_DEFAULTS} == LEGACY_DEFAULTS
    assert torch.equal(cfg.noise_schedule().beta, cosine(1000).beta)


@pytest.mark.parametrize("value", ["", "8,x", "-1", "0", "inf"])
def test_bad_fourier_values_are_refused(value):
    with pytest.raises(InputError, match="fourier"):
        parse_fourier(value)


def test_fourier_features_widen_only_the_input_conv():
    cfg = nets.preset("digits", T=10, ch=8, norm_groups=4, fourier_frequencies=(8, 16))
    net = nets.build_net(cfg)
    assert net.conv_in.weight.shape[1] == 5
    assert net(torch.zeros(2, 1, 8, 8), torch.tensor([1, 10])).shape == (2, 1, 8, 8)
    back = nets.config_from_dict(nets.config_to_dict(cfg))
    assert back == cfg
    old = nets.config_to_dict(nets.preset("digits"))
    old.pop("fourier_frequencies")
    assert nets.config_from_dict(old).fourier_frequencies == ()


@pytest.mark.subprocess
@pytest.mark.parametrize("args, msg", [
    (["--logsnr-max", "abc"], "expected a number"),
    (["--logsnr-max", "3", "--logsnr-min", "5"], "larger"),
    (["--logsnr-max", "native"], "both"),
    (["--schedule", "logsnr_linear", "--logsnr-max", "native", "--logsnr-min", "native"],
     "needs log-SNR end points"),
    (["--fourier-features", "8,q"], "fourier"),
    (["--param", "edm", "--sigma-data", "-1"], "sigma-data"),
])
def test_train_cli_refuses_bad_recipe_flags(tmp_path, args, msg):
    p = subprocess.run([sys.executable, "-m", "ddpmkit", "train", "--data", "digits", "--steps",
                        "1", "--out", str(tmp_path / "r"), *args], capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    assert msg in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "r").exists()


# ---- progress in a log file ------------------------------------------------------------------
def test_progress_prints_periodic_lines_when_not_a_terminal(monkeypatch):
    import io

    from ddpmkit.progress import LineProgress, progress

    monkeypatch.setenv("DDPMKIT_PROGRESS", "lines")
    assert isinstance(progress(range(3)), LineProgress)
    buf = io.StringIO()
    bar = LineProgress(total=1000, desc="train", unit="step", every_s=0.0, file=buf)
    for _ in range(3):
        bar.update(1)
    bar.set_postfix(loss="0.1")
    bar.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in buf.getvalue()
    assert lines[0].startswith("train: 1/1000 step (0%)") and "loss=0.1" in lines[-1]
    quiet = LineProgress(total=10, every_s=3600.0, file=buf)
    quiet.update(5)
    assert len(buf.getvalue().splitlines()) == 4  # nothing before the interval has passed
