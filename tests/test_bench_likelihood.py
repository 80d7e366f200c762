"""benchmarks/likelihood.py: its independent float64 ELBO agrees with ddpmkit's estimator, and
its anchors are the numbers the issue quotes."""

import importlib.util
from pathlib import Path

import pytest
import torch

from ddpmkit import nets
from ddpmkit.data import load_dataset
from ddpmkit.denoiser import Denoiser
from ddpmkit.likelihood import DecoderSpec, negative_elbo_bpd
from ddpmkit.schedules import make_schedule

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "likelihood.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_likelihood", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("param", ["v", "x0"])
def test_independent_elbo_matches_the_estimator(param):
    """Same bound, other code and other noise draws: within 4 combined SEs (a random small net,
    so every term is far from zero and a wrong coefficient anywhere would show)."""
    bench = _bench()
    torch.manual_seed(0)
    T, hi, lo = 30, 6.0, -8.0
    sched = make_schedule("logsnr_linear", T, logsnr_max=hi, logsnr_min=lo)
    net = nets.build_net(nets.preset("digits", T=T, ch=8, num_res_blocks=1, norm_groups=4,
                                     mid_attn=False, ch_mult=(1, 2)))
    den = Denoiser(net, sched, param).eval()
    x0 = load_dataset("digits").test[:64]
    ours = negative_elbo_bpd(den, x0, decoder=DecoderSpec(levels=17), seed=1)
    ind, ind_se = bench.independent_elbo_bpd(den.x0_hat, hi, lo, T, x0, 17, seed=2)
    se = (ours.se_bpd**2 + ind_se**2) ** 0.5
    assert abs(ours.bpd - ind) < 4 * se, (ours.bpd, ind, se)


def test_anchors_are_the_quoted_baselines():
    a = _bench().anchors()
    assert a["uniform"] == pytest.approx(4.087, abs=1e-3)
    assert a["independent_categorical"] == pytest.approx(2.44, abs=0.01)
    assert a["autoregressive_logistic"] == pytest.approx(2.02, abs=0.02)
