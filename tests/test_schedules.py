"""Schedules: float64 t-indexed tables, closed forms, validation, respacing."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpmkit import InputError, cosine, from_betas, linear, make_schedule, respace, sigmoid
from ddpmkit.schedules import COSINE_BETA_MAX, from_alpha_bar, spaced_timesteps


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_tables_are_float64_t_indexed_with_alpha_bar_0_equal_1(name):
    s = make_schedule(name, 1000)
    assert s.T == 1000
    for tab in (s.beta, s.alpha, s.alpha_bar, s.snr, s.one_minus_alpha_bar):
        assert tab.dtype == torch.float64 and tab.shape == (1001,)
    assert s.beta[0] == 0 and s.alpha_bar[0] == 1 and s.one_minus_alpha_bar[0] == 0
    assert math.isinf(s.snr[0]) and s.snr[0] > 0
    assert (s.alpha_bar[1:] < s.alpha_bar[:-1]).all()


def test_linear_matches_ho_endpoints_and_improved_diffusion_rescaling():
    s = linear(1000)
    assert s.beta[1].item() == pytest.approx(1e-4, abs=1e-15)
    assert s.beta[1000].item() == pytest.approx(0.02, abs=1e-15)
    assert torch.allclose(s.beta[1:], torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    s4 = linear(4000)
    assert s4.beta[1].item() == pytest.approx(2.5e-5) and s4.beta[-1].item() == pytest.approx(0.005)


def test_linear_beta_reaching_one_needs_a_cap():
    with pytest.raises(InputError, match="beta_max"):
        linear(10)
    s = linear(10, beta_max=0.999)
    assert s.beta.max() <= 0.999


def test_cosine_closed_form_and_documented_cap():
    T, s_ = 1000, 0.008
    s = cosine(T)
    f = lambda t: math.cos((t / T + s_) / (1 + s_) * math.pi / 2) ** 2  # noqa: E731
    for t in (1, 10, 500, 900):  # beta below the cap here, so alpha_bar is the closed form
        assert s.alpha_bar[t].item() == pytest.approx(f(t) / f(0), rel=1e-12)
    assert s.beta.max().item() == COSINE_BETA_MAX  # the last step hits the cap


def test_sigmoid_is_decreasing_and_valid():
    s = sigmoid(500)
    assert (s.beta[1:] > 0).all() and (s.beta[1:] < 1).all()


@pytest.mark.parametrize("bad", [[0.0, 0.1], [0.1, 1.0], [0.2, -0.1], [float("nan")], []])
def test_from_betas_rejects_invalid_tables(bad):
    with pytest.raises(InputError):
        from_betas(bad)


def test_from_alpha_bar_rejects_non_monotone_and_T_below_one():
    with pytest.raises(InputError, match="decrease"):
        from_alpha_bar([1.0, 0.9, 0.95])
    with pytest.raises(InputError):
        linear(0)
    with pytest.raises(InputError):
        make_schedule("foo", 10)


def test_respace_to_all_steps_is_the_identity():
    s = cosine(200)
    r = respace(s, 200)
    assert torch.equal(r.beta, s.beta) and torch.equal(r.alpha_bar, s.alpha_bar)
    assert torch.equal(r.timesteps, torch.arange(201))
    assert not r.is_respaced


@settings(max_examples=30, deadline=None)
@given(steps=st.integers(1, 100), name=st.sampled_from(["linear", "cosine"]),
       spacing=st.sampled_from(["uniform", "trailing", "quadratic", "logsnr"]))
def test_respaced_alpha_bar_equals_original_at_kept_steps(steps, name, spacing):
    s = make_schedule(name, 100)
    r = respace(s, steps, spacing)
    assert r.T == steps
    kept = r.timesteps[1:]
    assert kept[-1] == 100 and (kept[1:] > kept[:-1]).all() and kept[0] >= 1
    torch.testing.assert_close(r.alpha_bar[1:], s.alpha_bar[kept], rtol=1e-13, atol=0)


def test_spacing_errors_are_clear():
    s = linear(100)
    with pytest.raises(InputError, match="exceeds"):
        spaced_timesteps(s, 101)
    with pytest.raises(InputError, match="spacing"):
        spaced_timesteps(s, 10, "foo")
    with pytest.raises(InputError):
        respace(s, [5, 3])
