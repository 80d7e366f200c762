"""The :class:`Dataset` record every loader returns, and the shared transforms to [-1, 1].

Conventions: images are float32 (N, C, H, W) in [-1, 1]; 8-bit data map v in {0, …, 255} to
``v / 127.5 - 1`` (K = 256 levels for the discretized decoder); vectors are float32 (N, d).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

DatasetKind = Literal["image", "vector"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset ready for diffusion: train (and test) tensors in the model's data space.

    train / test: float32, images (N, C, H, W) in [-1, 1] or vectors (N, d); test is None when
    the source has no split. levels: K of the discretized decoder (17 for digits, 256 for 8-bit
    images; the K values are ``-1 + 2k/(K-1)``), None for continuous data. train_labels /
    test_labels: int64 (N,) class indices or None; class_names: the name of each class index
    (the subfolder names of an image folder), None when the source does not name them.
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor | None
    levels: int | None
    kind: DatasetKind
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    class_names: tuple[str, ...] | None = None

    @property
    def num_classes(self) -> int:
        """How many classes the labels index (0 without labels): names, else max label + 1."""
        if self.train_labels is None:
            return 0
        if self.class_names is not None:
            return len(self.class_names)
        return int(self.train_labels.max()) + 1 if self.train_labels.numel() else 0

    def check_labels(self) -> int:
        """The number of classes for class-conditional training; InputError naming the problem
        (no labels, labels out of range, a count that does not match, a single class)."""
        if self.train_labels is None:
            raise InputError(f"{self.name} has no labels, so it cannot train a conditional "
                             "model: drop --conditional, or give labels (image subfolders per "
                             "class, or a 'train_labels'/'labels' array in the .npz)")
        k = self.num_classes
        for split, x, y in (("train", self.train, self.train_labels),
                            ("test", self.test, self.test_labels)):
            if y is None:
                continue
            if x is None or y.shape != (x.shape[0],):
                raise InputError(f"{self.name}: {split} has {0 if x is None else x.shape[0]} "
                                 f"examples but {y.numel()} labels; give one label per example")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
                raise InputError(f"{self.name}: {split} labels span {int(y.min())}..{int(y.max())}"
                                 f", outside the {k} classes 0..{k - 1} the training labels "
                                 "define; relabel them")
        if k < 2 or len(torch.unique(self.train_labels)) < 2:
            raise InputError(f"{self.name}: the labels name a single class; a conditional model "
                             "needs at least two (or drop --conditional)")
        return k

    @property
    def data_shape(self) -> tuple[int, ...]:
        """The shape of one example: (C, H, W) or (d,)."""
        return tuple(self.train.shape[1:])

    @property
    def num_dims(self) -> int:
        """D, the number of data dimensions (C·H·W or d): bits/dim divide by it."""
        return int(np.prod(self.data_shape))

    def summary(self) -> dict:
        """JSON-ready description: name, kind, shape, levels, split sizes."""
        return {
            "name": self.name, "kind": self.kind, "shape": list(self.data_shape),
            "levels": self.levels, "n_train": int(self.train.shape[0]),
            "n_test": None if self.test is None else int(self.test.shape[0]),
        }


def uint8_to_unit(x: np.ndarray) -> torch.Tensor:
    """8-bit values v in {0, …, 255} to float32 ``v / 127.5 - 1`` in [-1, 1] (K = 256)."""
    return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).div_(127.5).sub_(1.0)


def center_crop_size(h: int, w: int, size: int) -> tuple[int, int]:
    """The (h', w') after scaling the shorter side of an h x w image to ``size``."""
    if h <= w:
        return size, max(size, round(w * size / h))
    return max(size, round(h * size / w)), size


def resize_center_crop(x: torch.Tensor, size: int, *, chunk: int = 2048) -> torch.Tensor:
    """Scale the shorter side of (N, C, H, W) images to ``size`` (bicubic, antialiased), then
    crop the centre ``size`` x ``size``. Values keep their range (clamped to the input's)."""
    if size < 1:
        raise InputError(f"image_size must be >= 1, got {size}")
    n, _, h, w = x.shape
    if (h, w) == (size, size):
        return x
    h2, w2 = center_crop_size(h, w, size)
    top, left = (h2 - size) // 2, (w2 - size) // 2
    lo, hi = float(x.min()) if n else 0.0, float(x.max()) if n else 0.0
    out = []
    for i in range(0, n, chunk):
        xb = x[i:i + chunk].to(torch.float32)
        if (h2, w2) != (h, w):
            xb = F.interpolate(xb, size=(h2, w2), mode="bicubic", antialias=True,
                               align_corners=False)
        out.append(xb[:, :, top:top + size, left:left + size].clamp(lo, hi))
    return torch.cat(out) if out else x.new_zeros((0, x.shape[1], size, size))


def resize_uint8(x: np.ndarray, size: int) -> np.ndarray:
    """``resize_center_crop`` for 8-bit (N, C, H, W) arrays, rounded back onto the 256 levels."""
    if x.shape[2:] == (size, size):
        return x
    y = resize_center_crop(torch.from_numpy(np.ascontiguousarray(x)), size)
    return y.round().clamp(0, 255).to(torch.uint8).numpy()


def check_image_size(image_size: int | None) -> None:
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise InputError(f"image_size must be a whole number >= 1 or None, got {image_size!r}")


def labels_tensor(y: np.ndarray | None) -> torch.Tensor | None:
    return None if y is None else torch.from_numpy(np.asarray(y).astype(np.int64))
