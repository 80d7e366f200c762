"""CUDA paths: device placement, bf16 autocast, torch.compile, checkpoints across devices.

These run only where torch sees a GPU (never in CI, which has none): on a GPU machine,
``pytest -q tests/test_cuda.py``. benchmarks/gpu_check.sh runs them with the GPU benchmarks.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ddpmkit.denoiser import Denoiser
from ddpmkit.generate import generate
from ddpmkit.nets import build_net, preset
from ddpmkit.schedules import make_schedule
from ddpmkit.train import maybe_compile

# DDPMKIT_TEST_DEVICE=cpu dry-runs these checks' own logic on a machine without a GPU
CUDA = os.environ.get("DDPMKIT_TEST_DEVICE", "cuda")
DEV = torch.device(CUDA).type
pytestmark = pytest.mark.skipif(DEV == "cuda" and not torch.cuda.is_available(),
                                reason="no CUDA device (these check the GPU paths)")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm())


@pytest.fixture
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _net_and_input(name: str = "mnist", b: int = 8, hw: int = 28):
    torch.manual_seed(0)
    cfg = preset(name)
    net = build_net(cfg)
    x = torch.randn(b, cfg.in_channels, hw, hw)
    t = torch.randint(1, cfg.T + 1, (b,))
    return net, x, t


def test_unet_on_cuda_matches_cpu_fp32(no_tf32):
    net, x, t = _net_and_input()
    with torch.no_grad():
        ref = net(x, t)
        out = net.to(CUDA)(x.to(CUDA), t.to(CUDA))
    assert out.device.type == DEV and out.shape == ref.shape
    assert _rel(out, ref) < 1e-4


def test_bf16_autocast_on_cuda_is_close_to_fp32(no_tf32):
    net, x, t = _net_and_input()
    net, x, t = net.to(CUDA), x.to(CUDA), t.to(CUDA)
    with torch.no_grad():
        ref = net(x, t)
        with torch.autocast(DEV, dtype=torch.bfloat16):
            out = net(x, t)
    assert out.dtype == torch.bfloat16  # the autocast really ran the convs in bf16
    assert _rel(out.float(), ref) < 3e-2


def test_training_step_on_cuda_gives_cpu_gradients(no_tf32):
    net, x, t = _net_and_input("digits", b=4, hw=8)
    grads = []
    for dev in ("cpu", CUDA):
        n = net.to(dev)
        n.zero_grad()
        (n(x.to(dev), t.to(dev)) - x.to(dev)).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten().cpu() for p in n.parameters()]))
    assert _rel(grads[1], grads[0]) < 1e-4


def test_compile_on_cuda_matches_eager():
    net, x, t = _net_and_input("digits", b=16, hw=8)
    net, x, t = net.to(CUDA).eval(), x.to(CUDA), t.to(CUDA)
    comp = maybe_compile(net, True)
    with torch.no_grad():
        ref, out = net(x, t), comp(x, t)
    assert _rel(out, ref) < 1e-3


def _denoiser(dev: str) -> Denoiser:
    torch.manual_seed(1)
    cfg = preset("digits")
    sched = make_schedule("cosine", cfg.T)
    return Denoiser(build_net(cfg), sched, "x0").to(dev).eval()


@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "dpmpp2m"])
def test_sampling_on_cuda_is_reproducible(sampler):
    den = _denoiser(CUDA)
    a, meta = generate(den, (1, 8, 8), 40, sampler=sampler, steps=20, seed=3, chunk=16,
                       device=CUDA)
    b, _ = generate(den, (1, 8, 8), 40, sampler=sampler, steps=20, seed=3, chunk=16,
                    device=CUDA)
    assert a.device.type == "cpu" and a.shape == (40, 1, 8, 8)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)


def test_train_on_cuda_resume_and_load_on_cpu(tmp_path):
    from ddpmkit.train import TrainConfig, train
    from ddpmkit.train.load import load_denoiser

    cfg = TrainConfig(data="digits", steps=30, batch_size=32, checkpoint_every=10,
                      sample_every=0, log_every=10, net_overrides={"ch": 16, "num_res_blocks": 1})
    full = train(cfg, tmp_path / "full", device=CUDA, progress=False)
    train(cfg, tmp_path / "half", device=CUDA, progress=False, stop_after=20)
    train(cfg, tmp_path / "half", device=CUDA, progress=False, resume=True)
    a = load_denoiser(tmp_path / "full", device="cpu", verbose=False)
    b = load_denoiser(tmp_path / "half", device="cpu", verbose=False)
    assert full.step == 30 and a.step == b.step == 30
    pa = torch.cat([p.flatten() for p in a.denoiser.net.parameters()])
    pb = torch.cat([p.flatten() for p in b.denoiser.net.parameters()])
    assert pa.device.type == "cpu"
    # cuDNN may pick non-deterministic backward kernels: equal up to float rounding, not bits
    assert float((pa - pb).detach().abs().max()) < 1e-4
    x, _ = generate(a.denoiser, (1, 8, 8), 8, sampler="ddim", steps=10, seed=0)
    assert torch.isfinite(x).all()


@pytest.mark.subprocess
def test_cli_train_and_sample_on_cuda_bf16(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "ddpmkit", "train", "--data", "digits", "--out",
                        str(run), "--steps", "20", "--batch-size", "64", "--bf16",
                        "--device", DEV, "--no-progress", "--json"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f'"device": "{DEV}' in r.stdout
    r = subprocess.run([sys.executable, "-m", "ddpmkit", "sample", str(run), "--out",
                        str(tmp_path / "s.npz"), "--num-samples", "16", "--sampler", "dpmpp2m",
                        "--steps", "10", "--device", DEV],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s.npz").exists()
