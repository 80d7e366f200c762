"""Fréchet distance (FD) for 8x8 digits with a small bundled feature net.

FD between two sets of images is the Fréchet (2-Wasserstein) distance between Gaussians fitted
to their features f(x) (Heusel et al. 2017, "FID", here with a digits classifier instead of
Inception):

    FD = ||mu_1 - mu_2||^2 + tr(Sigma_1 + Sigma_2 - 2 (Sigma_1 Sigma_2)^{1/2}),

computed in float64 with ``tr (Sigma_1 Sigma_2)^{1/2} = tr (S_1 Sigma_2 S_1)^{1/2}``,
``S_1 = Sigma_1^{1/2}`` (both by symmetric eigen-decomposition, so the square root is of a
symmetric PSD matrix and never complex).

Feature net: :class:`DigitsFeatureNet`, a 3-conv CNN classifier trained on the digits *train*
split (1347 images) by ``python -m ddpmkit.metrics.train_feature_net`` (seed 0); its weights
ship as ``ddpmkit/assets/digits_feature_net.safetensors`` and load without pickle. Features
are the 64 pre-activations of its penultimate layer.

Reference: by default the digits train split (1347 images), the data a model is trained on.
The floor (:func:`digits_fd_floor`) is the FD of the 450 held-out test images against it: what
fresh real digits score. Read a result as "FD 6.1 (real data: 1.9)". FD is biased upwards at
small N, so compare numbers only at the same N >= 1797 (the default n; the size of the full
digits set); the floor uses all 450 held-out images, so it carries more small-sample bias than
a 1797-sample FD and is a conservative (high) floor.

What the numbers mean (measured with the shipped net, default reference; 1797 images unless
said): floor (450 held-out digits) 2.69; all 1797 real digits 0.17 (75 % are the reference);
real digits + N(0, 0.1²) pixel noise 2.2, + N(0, 0.2²) 10; real digits without the 8s (n =
1623) 6.1, without 3s and 8s 19; only classes 0-4 174; shifted one pixel 38; uniform noise 667.
A model that drops one class can stay within ~2.3x the floor: look at
``np.bincount(classify_digits(samples), minlength=10)`` too.
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache
from importlib import resources

import numpy as np
import torch
from torch import nn

from ..errors import InputError

FD_MIN_N = 1797
FEATURE_DIM = 64
FEATURE_NET_FILE = "digits_feature_net.safetensors"
FEATURE_NET_ARCH = "DigitsFeatureNet-v1"


class DigitsFeatureNet(nn.Module):
    """(B, 1, 8, 8) in [-1, 1] -> logits (B, 10); ``features`` gives the (B, 64) embedding."""

    def __init__(self, width: int = 32, feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AvgPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AvgPool2d(2),  # 4x4 -> 2x2
            nn.Flatten(),
        )
        self.embed = nn.Linear(2 * width * 4, feature_dim)
        self.head = nn.Linear(feature_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer's pre-activations, (B, 64): what FD compares."""
        return self.embed(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.features(x)))


def feature_net_path():
    """The bundled weights file (a ``importlib.resources`` Traversable)."""
    return resources.files("ddpmkit") / "assets" / FEATURE_NET_FILE


def feature_net_metadata() -> dict[str, str]:
    """The training record stored in the weights file (seed, accuracy, floor, command...)."""
    from safetensors import safe_open

    with resources.as_file(feature_net_path()) as p, safe_open(str(p), framework="pt") as f:
        return dict(f.metadata() or {})


@lru_cache(maxsize=4)
def load_feature_net(device: str = "cpu") -> DigitsFeatureNet:
    """The bundled feature net in eval mode on ``device`` (loaded with safetensors: no pickle)."""
    from safetensors.torch import load_file

    with resources.as_file(feature_net_path()) as p:
        if not p.is_file():
            raise InputError(f"the bundled feature net {p} is missing; reinstall ddpmkit or "
                             "run 'python -m ddpmkit.metrics.train_feature_net'")
        state = load_file(str(p), device="cpu")
    meta = feature_net_metadata()
    if meta.get("arch") != FEATURE_NET_ARCH:
        raise InputError(f"feature net weights are {meta.get('arch')!r}, this code expects "
                         f"{FEATURE_NET_ARCH!r}; retrain with "
                         "'python -m ddpmkit.metrics.train_feature_net'")
    net = DigitsFeatureNet(**json.loads(meta.get("config", "{}")))
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False).to(device)


def _check_digits(x: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{what} must be a torch.Tensor of shape (N, 1, 8, 8), got "
                         f"{type(x).__name__}")
    if x.dim() == 3 and tuple(x.shape[1:]) == (8, 8):
        x = x.unsqueeze(1)
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 8, 8):
        raise InputError(f"{what} must have shape (N, 1, 8, 8) (8x8 digits in [-1, 1]), got "
                         f"{tuple(x.shape)}")
    if x.shape[0] < 2:
        raise InputError(f"{what} needs at least 2 images for a covariance, got {x.shape[0]}")
    if not torch.isfinite(x).all():
        raise InputError(f"{what} contains NaN/Inf; check the sampler output")
    return x


@torch.no_grad()
def digits_features(images: torch.Tensor, *, batch_size: int = 512, device: str = "cpu",
                    net: DigitsFeatureNet | None = None) -> np.ndarray:
    """Features f(x) of (N, 1, 8, 8) digits in [-1, 1] (clamped to it), float64 (N, 64).

    net: the bundled feature net unless given (the training script passes its own).
    """
    images = _check_digits(images, "images")
    net = load_feature_net(str(device)) if net is None else net
    out = []
    for i in range(0, images.shape[0], batch_size):
        xb = images[i:i + batch_size].to(device=device, dtype=torch.float32).clamp(-1.0, 1.0)
        out.append(net.features(xb).double().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def classify_digits(images: torch.Tensor, *, batch_size: int = 512,
                    device: str = "cpu") -> np.ndarray:
    """The feature net's predicted class (N,) int64 for (N, 1, 8, 8) digits: a quick check for
    dropped or over-produced classes (compare ``np.bincount(..., minlength=10)`` to ~N/10)."""
    images = _check_digits(images, "images")
    net = load_feature_net(str(device))
    out = [net(images[i:i + batch_size].to(device=device, dtype=torch.float32).clamp(-1, 1))
           .argmax(1).cpu() for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out).numpy()


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, Sigma) of (N, d) features in float64: the mean and the unbiased covariance."""
    f = np.asarray(features, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False, ddof=1)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root by eigen-decomposition (tiny negative eigenvalues -> 0)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr (Sigma_1 Sigma_2)^{1/2} = tr (S_1 Sigma_2 S_1)^{1/2}, S_1 = Sigma_1^{1/2}, float64."""
    s1 = _sqrt_psd(np.asarray(sigma1, dtype=np.float64))
    m = s1 @ np.asarray(sigma2, dtype=np.float64) @ s1
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                                sigma2: np.ndarray) -> float:
    """||mu_1 - mu_2||^2 + tr(Sigma_1 + Sigma_2 - 2 (Sigma_1 Sigma_2)^{1/2}), >= 0, float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(
        np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise InputError(f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, "
                         f"Sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    fd = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1,
                                                                                    sigma2)
    return max(float(fd), 0.0)


def digits_reference() -> torch.Tensor:
    """The default reference: the digits train split, (1347, 1, 8, 8) in [-1, 1]."""
    from ..data.digits import load_digits_dataset

    return load_digits_dataset().train


@lru_cache(maxsize=4)
def _default_reference_stats(device: str) -> tuple[np.ndarray, np.ndarray]:
    return gaussian_stats(digits_features(digits_reference(), device=device))


def _reference_stats(reference: torch.Tensor | None, device: str,
                     batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    if reference is None:
        return _default_reference_stats(str(device))
    return gaussian_stats(digits_features(_check_digits(reference, "reference"),
                                          batch_size=batch_size, device=device))


def frechet_distance(samples: torch.Tensor, reference: torch.Tensor | None = None, *,
                     batch_size: int = 512, device: str = "cpu") -> float:
    """FD between (N, 1, 8, 8) samples in [-1, 1] and ``reference`` in the feature net's space.

    reference: (M, 1, 8, 8) digits; None means the digits train split (1347 images).
    Samples are clamped to [-1, 1]. Warns when N < 1797: FD grows as N shrinks, so numbers are
    only comparable at the same N >= 1797.
    """
    samples = _check_digits(samples, "samples")
    n = int(samples.shape[0])
    if n < FD_MIN_N:
        warnings.warn(f"FD from {n} samples: FD is biased upwards at small N; numbers are only "
                      f"comparable at N >= {FD_MIN_N} (use n = {FD_MIN_N})", UserWarning,
                      stacklevel=2)
    mu_r, sigma_r = _reference_stats(reference, device, batch_size)
    mu_s, sigma_s = gaussian_stats(digits_features(samples, batch_size=batch_size, device=device))
    return frechet_distance_from_stats(mu_s, sigma_s, mu_r, sigma_r)


def digits_fd_floor(reference: torch.Tensor | None = None, *, device: str = "cpu") -> float:
    """The real-data floor: FD of the 450 held-out digits test images against ``reference``.

    With the default reference (the train split) this is what fresh real digits score; a model
    cannot be expected to do better. Do not pass a reference that contains the test split.
    """
    from ..data.digits import load_digits_dataset

    test = load_digits_dataset().test
    assert test is not None
    mu_r, sigma_r = _reference_stats(reference, device, 512)
    mu_t, sigma_t = gaussian_stats(digits_features(test, device=device))
    return frechet_distance_from_stats(mu_t, sigma_t, mu_r, sigma_r)
