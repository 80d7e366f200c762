"""gmm2d: the exact denoiser, the sliced W2 metric, `ddpmkit calibrate --case gmm2d`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ddpmkit.calibrate import GMM2D, calibrate_gmm2d
from ddpmkit.cli import main
from ddpmkit.errors import InputError
from ddpmkit.metrics.sliced_w2 import sliced_w2, w2_squared_1d
from ddpmkit.schedules import make_schedule


def test_sliced_w2_is_zero_for_identical_clouds_and_symmetric():
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    y = torch.randn(300, 2, generator=torch.Generator().manual_seed(1))
    assert sliced_w2(x, x) == 0.0
    assert sliced_w2(x, y) == pytest.approx(sliced_w2(y, x), rel=1e-12)


def test_sliced_w2_of_a_shift_is_its_length_over_sqrt2():
    # SW2^2 = E_theta (theta . v)^2 = |v|^2 / d for a translation v in d = 2
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    v = torch.tensor([0.3, -0.4])
    assert sliced_w2(x, x + v, projections=4000) == pytest.approx(0.5 / math.sqrt(2), rel=0.02)


def test_w2_between_unequal_sizes_is_the_exact_quantile_integral():
    # quantiles {0, 1} vs {0, 0.5, 1}: (1/2 - 1/3) 0.5^2 + (2/3 - 1/2) 0.5^2 = 1/12
    a = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 0.5, 1.0]], dtype=torch.float64)
    assert float(w2_squared_1d(a, b)[0]) == pytest.approx(1 / 12, rel=1e-12)


def test_sliced_w2_rejects_bad_shapes_and_nan():
    with pytest.raises(InputError, match=r"\(n, d\)"):
        sliced_w2(torch.zeros(5), torch.zeros(5, 2))
    with pytest.raises(InputError, match="NaN"):
        sliced_w2(torch.full((3, 2), float("nan")), torch.zeros(3, 2))


@pytest.mark.parametrize("t", [30, 300, 700])
def test_gmm2d_exact_denoiser_equals_the_posterior_mean_by_quadrature(t):
    data = GMM2D.default()
    sched = make_schedule("linear", 1000)
    den = data.exact_denoiser(sched)
    a = float(sched.alpha_bar[t].sqrt())
    n_t = float(sched.one_minus_alpha_bar[t])
    g = torch.linspace(-1.6, 1.6, 641, dtype=torch.float64)
    X0 = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    log_prior = torch.logsumexp(-((X0[:, None] - data.means) ** 2).sum(-1)
                                / (2 * data.std**2), dim=1)
    x_t = torch.tensor([[0.5, 0.2], [-0.1, 0.9], [0.0, 0.0]], dtype=torch.float64)
    for x in x_t:
        log_post = log_prior - ((x - a * X0) ** 2).sum(-1) / (2 * n_t)
        w = torch.softmax(log_post, 0)
        expected = (w[:, None] * X0).sum(0)
        got = den.x0_hat(x[None], t)[0]
        torch.testing.assert_close(got, expected, atol=2e-4, rtol=0)


def test_gmm2d_exact_denoiser_is_finite_far_from_every_component():
    den = GMM2D.default().exact_denoiser(make_schedule("linear", 1000))
    x = torch.tensor([[1e3, -1e3], [50.0, 0.0]])
    out = den.x0_hat(x, 1)
    assert torch.isfinite(out).all()


def test_stratified_reference_has_equal_component_counts():
    data = GMM2D.default()
    x = data.stratified_sample(803, torch.Generator().manual_seed(0))
    k = torch.cdist(x, data.means).argmin(1)
    counts = torch.bincount(k, minlength=8)
    assert int(counts.max() - counts.min()) <= 3  # 1 by construction, +-1 for rare overlaps


def test_calibrate_gmm2d_ddim_approaches_the_floor_as_steps_grow():
    res = calibrate_gmm2d(samplers=["ddim"], budgets=(5, 100), schedules=("linear",),
                          spacings=("uniform",), T=1000, n=2000, floor_repeats=3)
    sw = {r["budget"]: r["sw2"] for r in res["rows"]}
    assert sw[5] > 3 * sw[100]
    assert sw[100] < res["floor_mean"] + 4 * res["floor_std"] + 0.01
    assert [r["network_calls"] for r in res["rows"]] == [5, 100]


def test_calibrate_gmm2d_refuses_budgets_above_T():
    with pytest.raises(InputError, match="exceeds"):
        calibrate_gmm2d(samplers=["ddim"], budgets=(20,), T=10, n=100)


def test_cli_gmm2d_writes_samples_and_json(tmp_path, capsys):
    out = tmp_path / "s.npz"
    rc = main(["calibrate", "--case", "gmm2d", "--sampler", "heun", "--steps", "10",
               "--schedule", "cosine", "--spacing", "logsnr_clipped", "--n", "400",
               "--out", str(out), "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["best"]["sampler"] == "heun" and res["best"]["network_calls"] == 9
    assert {"floor_mean", "floor_std", "rows", "n"} <= set(res)
    with np.load(out, allow_pickle=False) as f:
        assert f["samples"].shape == (400, 2) and f["samples"].dtype == np.float32
        assert f["sw2"].shape == (1,)


def test_cli_gmm2d_steps_above_T_exit_2(capsys):
    rc = main(["calibrate", "--case", "gmm2d", "--steps", "2000", "--n", "50"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "exceeds" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_best_sampler_reaches_sliced_w2_0p030_at_10_network_calls(schedule):
    # One seed's x_T fixes the component counts of every deterministic sampler (seed 0: even
    # 1000-step DDIM scores 0.030), so the claim is checked on the mean over 3 seeds.
    sw2, floor = [], []
    for seed in range(3):
        res = calibrate_gmm2d(samplers=["unipc"], budgets=(10,), schedules=(schedule,),
                              spacings=("logsnr_clipped",), n=10_000, seed=seed)
        sw2.append(res["rows"][0]["sw2"])
        floor.append(res["floor_mean"])
    mean = sum(sw2) / 3
    assert mean <= 0.030, sw2
    assert mean < sum(floor) / 3 + 0.006, (sw2, floor)
