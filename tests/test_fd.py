"""Fréchet distance: the matrix square root against closed forms, the bundled feature net."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from ddpmkit.data import load_dataset, load_digits_all
from ddpmkit.errors import InputError
from ddpmkit.metrics import fd


def random_spd(rng, d, scale=1.0):
    a = rng.standard_normal((d, d))
    return scale * (a @ a.T / d + 0.1 * np.eye(d))


def test_trace_sqrt_product_matches_the_2x2_closed_form():
    # for 2x2 SPD A, B: tr (AB)^{1/2} = sqrt(tr(AB) + 2 sqrt(det A det B)); A, B do not commute
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = random_spd(rng, 2), random_spd(rng, 2, scale=3.0)
        assert not np.allclose(a @ b, b @ a)
        closed = math.sqrt(np.trace(a @ b) + 2 * math.sqrt(np.linalg.det(a) * np.linalg.det(b)))
        assert fd.trace_sqrt_product(a, b) == pytest.approx(closed, rel=1e-12)


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    # N(mu1, diag(s1^2)) vs N(mu2, diag(s2^2)): ||mu1 - mu2||^2 + sum (s1 - s2)^2
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    s1, s2 = rng.uniform(0.1, 2, 16), rng.uniform(0.1, 2, 16)
    s2[:3] = 0.0  # singular covariance: the PSD square root must still be exact
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    got = fd.frechet_distance_from_stats(mu1, np.diag(s1**2), mu2, np.diag(s2**2))
    assert got == pytest.approx(closed, rel=1e-12)


def test_trace_sqrt_product_agrees_with_scipy_sqrtm_in_64_dims():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(2)
    a, b = random_spd(rng, 64), random_spd(rng, 64, scale=0.5)
    ref = float(np.trace(sqrtm(a @ b)).real)
    assert fd.trace_sqrt_product(a, b) == pytest.approx(ref, rel=1e-9)
    assert fd.trace_sqrt_product(b, a) == pytest.approx(ref, rel=1e-9)


def test_frechet_distance_of_the_reference_with_itself_is_zero():
    d = load_dataset("digits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert fd.frechet_distance(d.train) == pytest.approx(0.0, abs=1e-6)
        a, b = d.test[:300], d.train[:600]
        assert fd.frechet_distance(a, b) == pytest.approx(fd.frechet_distance(b, a), rel=1e-9)


def test_bundled_feature_net_is_safetensors_and_reaches_its_recorded_test_accuracy():
    path = fd.feature_net_path()
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")  # safetensors: u64 length + JSON header
    assert raw[8:9] == b"{" and header_len < len(raw) and b"__metadata__" in raw[8:8 + header_len]
    meta = fd.feature_net_metadata()
    assert meta["arch"] == fd.FEATURE_NET_ARCH and meta["seed"] == "0"
    d = load_dataset("digits")
    pred = fd.classify_digits(d.test)
    acc = float((torch.from_numpy(pred) == d.test_labels).double().mean())
    assert acc == pytest.approx(float(meta["test_accuracy"]), abs=1e-6)
    assert acc >= 0.95


def test_fd_floor_is_the_recorded_held_out_value_and_orders_degradations():
    floor = fd.digits_fd_floor()
    assert floor == pytest.approx(float(fd.feature_net_metadata()["fd_floor"]), rel=1e-5)
    x = load_digits_all()  # 1797 real digits (75% of them are the reference itself)
    g = torch.Generator().manual_seed(0)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    noise = torch.rand(x.shape, generator=g) * 2 - 1
    scores = [fd.frechet_distance(v) for v in (x, noisy, noise)]
    assert scores[0] < floor < scores[1] < scores[2]
    assert scores[2] > 50 * floor


def test_fd_warns_below_1797_samples_and_not_at_1797():
    x = load_digits_all()
    with pytest.warns(UserWarning, match="N >= 1797"):
        fd.frechet_distance(x[:500])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fd.frechet_distance(x)


def test_fd_rejects_bad_samples_with_one_line():
    for bad, match in [(torch.zeros(10, 3, 8, 8), r"\(N, 1, 8, 8\)"),
                       (torch.zeros(1, 1, 8, 8), "at least 2"),
                       (torch.full((4, 1, 8, 8), float("nan")), "NaN"),
                       (np.zeros((4, 1, 8, 8)), "torch.Tensor")]:
        with pytest.raises(InputError, match=match) as e:
            fd.frechet_distance(bad)
        assert "\n" not in str(e.value)


def test_features_are_batched_consistently():
    x = load_digits_all()[:700]
    a = fd.digits_features(x, batch_size=700)
    b = fd.digits_features(x, batch_size=64)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_training_script_reproduces_the_shipped_feature_net():
    from safetensors.torch import load_file

    from ddpmkit.metrics.train_feature_net import train_feature_net

    net, record = train_feature_net(seed=0)
    meta = fd.feature_net_metadata()
    assert abs(float(record["test_accuracy"]) - float(meta["test_accuracy"])) <= 0.01
    assert float(record["fd_floor"]) == pytest.approx(float(meta["fd_floor"]), rel=0.1)
    shipped = load_file(str(fd.feature_net_path()))
    diff = max(float((shipped[k] - v).abs().max()) for k, v in net.state_dict().items())
    # bit-identical on the same torch build and CPU kind; other CPUs may differ in the last bits
    assert diff < 1e-3
