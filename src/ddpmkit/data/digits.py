"""scikit-learn's bundled 8x8 digits (1797 images, no download), as in the lecture.

Pixels are counts v in {0, …, 16}, so the data have K = 17 levels; ``x = v / 8 - 1`` maps them
onto the grid ``-1 + 2k/16`` in [-1, 1]. Split (fixed, independent of any seed):
``train_test_split(indices, test_size=0.25, random_state=0, stratify=labels)``: 1347 train,
450 test, in that function's (shuffled) order.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .dataset import Dataset, labels_tensor

DIGITS_LEVELS = 17
DIGITS_SHAPE = (1, 8, 8)
DIGITS_N = 1797


@lru_cache(maxsize=1)
def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx) into ``load_digits()``: the fixed stratified 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    y = load_digits().target
    tr, te = train_test_split(np.arange(len(y)), test_size=0.25, random_state=0, stratify=y)
    return tr, te


def load_digits_dataset() -> Dataset:
    """The digits as float32 (N, 1, 8, 8) in [-1, 1] (x = v/8 - 1), K = 17, labels 0..9."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)
    tr, te = digits_split_indices()
    return Dataset(
        name="digits", train=x[tr].contiguous(), test=x[te].contiguous(), levels=DIGITS_LEVELS,
        kind="image", train_labels=labels_tensor(d.target[tr]),
        test_labels=labels_tensor(d.target[te]), class_names=tuple(str(k) for k in range(10)),
    )


def load_digits_all() -> torch.Tensor:
    """All 1797 digits, float32 (1797, 1, 8, 8) in [-1, 1], in sklearn's order."""
    from sklearn.datasets import load_digits

    return torch.from_numpy(load_digits().images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)
