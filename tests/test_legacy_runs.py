"""Runs made before log-SNR end points, edm and stratified t existed load, sample and evaluate
to the numbers they gave then (tests/fixtures/legacy_run_v0, made at commit 7b527d6)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpmkit.evaluate import eval_bpd, eval_samples
from ddpmkit.samplers import sample_ancestral
from ddpmkit.schedules import cosine
from ddpmkit.train import load_denoiser

FIX = Path(__file__).parent / "fixtures"
RUN = FIX / "legacy_run_v0"


@pytest.fixture(scope="module")
def loaded():
    return load_denoiser(RUN, verbose=False)


@pytest.fixture(scope="module")
def expected():
    return json.loads((FIX / "legacy_run_v0_expected.json").read_text())


def test_legacy_config_reads_as_native_schedule(loaded):
    cfg = loaded.run.config
    assert (cfg.schedule, cfg.parameterization, cfg.timesteps) == ("cosine", "x0", "uniform")
    assert cfg.logsnr_max is None and cfg.logsnr_min is None and cfg.t_stratified is False
    native = cosine(1000)
    assert torch.equal(loaded.denoiser.schedule.beta, native.beta)
    assert torch.equal(loaded.denoiser.schedule.alpha_bar, native.alpha_bar)


def test_legacy_run_evaluates_to_the_same_bits_per_dim(loaded, expected):
    strat = eval_bpd(loaded, method="stratified", strata=5, limit=32, seed=1)
    exact = eval_bpd(loaded, method="exact", limit=4, seed=2, max_batch=1024)
    assert strat["bpd"] == pytest.approx(expected["stratified_s5_n32_seed1"], rel=1e-6)
    assert exact["bpd"] == pytest.approx(expected["exact_n4_seed2"], rel=1e-6)
    for k, v in expected["exact_n4_seed2_terms"].items():
        assert exact["terms_bpd"][k] == pytest.approx(v, rel=1e-6, abs=1e-9)


def test_legacy_run_samples_the_same(loaded):
    ref = np.load(FIX / "legacy_run_v0_samples.npz")
    _, s = eval_samples(loaded, n=16, sampler="dpmpp2m", steps=5, seed=4)
    anc = sample_ancestral(loaded.denoiser, (4, 1, 8, 8), steps=10, seed=5, clip="clip").x
    np.testing.assert_allclose(s.numpy(), ref["dpmpp2m"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(anc.numpy(), ref["ancestral"], atol=1e-5, rtol=0)
