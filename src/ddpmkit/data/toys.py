"""2-D toy distributions, generated from a seed (fixed sizes: 10 000 train, 2 000 test).

Scaled so the data live in roughly [-1, 1]^2, the scale the N(0, I) prior expects:

- ``ring``: a mixture of 8 Gaussians, means on the unit circle at angles 2πk/8, std 0.08 per
  coordinate; labels k.
- ``moons``: two interleaved half circles (radius 1, as sklearn's ``make_moons``) with N(0, 0.05²)
  noise, then centred by (0.5, 0.25) and divided by 1.5: x in [-1, 1], y in [-0.5, 0.5];
  labels 0 (upper) / 1 (lower).
- ``swissroll``: (s cos s, s sin s) with s = 1.5π(1 + 2u), u ~ U(0, 1), divided by 4.5π (radius
  <= 1), then N(0, 0.02²) noise; no labels.

Train and test are independent draws: numpy ``default_rng([seed, split, toy])``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from ..errors import InputError
from .dataset import Dataset, labels_tensor

ToyName = Literal["ring", "moons", "swissroll"]
TOYS: tuple[str, ...] = ("ring", "moons", "swissroll")
TOY_SIZES = {"train": 10_000, "test": 2_000}
RING_MODES, RING_RADIUS, RING_STD = 8, 1.0, 0.08
MOONS_NOISE, SWISSROLL_NOISE = 0.05, 0.02


def sample_toy(
    name: ToyName, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """n points (n, 2) float64 of toy ``name`` and their labels (or None)."""
    if name == "ring":
        k = rng.integers(0, RING_MODES, size=n)
        angle = 2 * math.pi * k / RING_MODES
        means = RING_RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        return means + RING_STD * rng.standard_normal((n, 2)), k
    if name == "moons":
        k = rng.integers(0, 2, size=n)
        theta = math.pi * rng.random(n)
        upper = np.stack([np.cos(theta), np.sin(theta)], axis=1)
        lower = np.stack([1 - np.cos(theta), 0.5 - np.sin(theta)], axis=1)
        x = np.where(k[:, None] == 0, upper, lower) + MOONS_NOISE * rng.standard_normal((n, 2))
        return (x - np.array([0.5, 0.25])) / 1.5, k
    if name == "swissroll":
        s = 1.5 * math.pi * (1 + 2 * rng.random(n))
        x = np.stack([s * np.cos(s), s * np.sin(s)], axis=1) / (4.5 * math.pi)
        return x + SWISSROLL_NOISE * rng.standard_normal((n, 2)), None
    raise InputError(f"unknown toy {name!r}; choose one of {', '.join(TOYS)}")


def load_toy(name: ToyName, seed: int = 0) -> Dataset:
    """Toy ``name`` as float32 vectors: train (10 000, 2), test (2 000, 2); continuous."""
    if name not in TOYS:
        raise InputError(f"unknown toy {name!r}; choose one of {', '.join(TOYS)}")
    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a whole number >= 0, got {seed!r}")
    toy_id = TOYS.index(name)
    parts = {}
    for split_id, split in enumerate(("train", "test")):
        rng = np.random.default_rng([int(seed), split_id, toy_id])
        parts[split] = sample_toy(name, TOY_SIZES[split], rng)
    (xtr, ytr), (xte, yte) = parts["train"], parts["test"]
    return Dataset(
        name=name, train=torch.from_numpy(xtr.astype(np.float32)),
        test=torch.from_numpy(xte.astype(np.float32)), levels=None, kind="vector",
        train_labels=labels_tensor(ytr), test_labels=labels_tensor(yte),
    )
