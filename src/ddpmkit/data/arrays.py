"""Arrays from ``FILE.npy`` / ``FILE.npz`` (never with pickle).

Shapes: (N, C, H, W) or (N, H, W) (one channel) are images; (N, d) are vectors.
Values:
- integer arrays (uint8 or any integer type with values in 0..255) are 8-bit data: K = 256,
  mapped by ``v / 127.5 - 1`` to [-1, 1];
- float images must already lie in [-1, 1] (scale 0..255 data by ``x / 127.5 - 1``, 0..1 data by
  ``2 x - 1``); they are continuous (levels None);
- float vectors may have any finite range (continuous); the N(0, I) prior suits data of about
  unit scale, so standardise them first.
NaN or Inf anywhere is refused.

Which arrays of an .npz: ``train`` (with optional ``test``, ``train_labels``, ``test_labels``),
else ``images`` (the format ``ddpmkit sample`` writes; optional ``labels``), else its only array.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .dataset import Dataset, check_image_size, labels_tensor, resize_center_crop, resize_uint8
from .limits import check_npy_file, check_npz_file

FLOAT_RANGE_TOL = 1e-4


def _load_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    check_npz_file(path)  # every header against its member's real size and the budget
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            if "train" in keys:
                names = {"train": "train", "test": "test", "train_labels": "train_labels",
                         "test_labels": "test_labels"}
            elif "images" in keys:
                names = {"train": "images", "train_labels": "labels"}
            elif len(keys) == 1:
                names = {"train": keys[0]}
            else:
                raise InputError(f"{path}: cannot tell which array holds the data (keys: "
                                 f"{', '.join(keys) or 'none'}); name it 'train' (and 'test') "
                                 "or 'images'")
            return {role: z[key] for role, key in names.items() if key in keys}
    except ValueError as e:
        raise InputError(f"{path}: cannot load without pickle ({e}); save plain numeric arrays "
                         "(np.savez with numbers, not objects)") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise InputError(f"{path}: not a readable .npz file ({e})") from None


def _load_npy(path: Path) -> dict[str, np.ndarray]:
    check_npy_file(path)  # the header against the file's real size and the budget
    try:
        return {"train": np.load(path, allow_pickle=False)}
    except ValueError as e:
        raise InputError(f"{path}: cannot load without pickle ({e}); save a plain numeric "
                         "array (np.save with numbers, not objects)") from None
    except (OSError, EOFError) as e:
        raise InputError(f"{path}: not a readable .npy file ({e})") from None


def _as_layout(a: np.ndarray, where: str) -> np.ndarray:
    """(N, C, H, W), (N, H, W) -> (N, 1, H, W), or (N, d); anything else is refused."""
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim == 4:
        c, last = a.shape[1], a.shape[3]
        if c not in (1, 2, 3, 4) and last in (1, 3, 4):
            raise InputError(f"{where}: shape {a.shape} looks channels-last (N, H, W, C); "
                             "transpose it to (N, C, H, W) with a.transpose(0, 3, 1, 2)")
    elif a.ndim != 2:
        raise InputError(f"{where}: shape {a.shape} is not (N, C, H, W), (N, H, W) or (N, d)")
    if a.shape[0] == 0 or 0 in a.shape:
        raise InputError(f"{where}: empty array of shape {a.shape}; it holds no examples")
    return a


def _to_tensor(
    a: np.ndarray, where: str, image_size: int | None
) -> tuple[torch.Tensor, int | None]:
    """Validate values; return the float32 tensor in data space and K (None if continuous)."""
    kind = a.dtype.kind
    image = a.ndim == 4
    if image_size is not None and not image:
        raise InputError(f"{where}: an image size was given but the data are vectors {a.shape}; "
                         "drop the image size")
    if kind in "ui":
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise InputError(f"{where}: integer values span [{lo}, {hi}], outside 0..255; "
                             "save 8-bit data as uint8, or floats already in [-1, 1]")
        a8 = a.astype(np.uint8, copy=False)
        if image_size is not None:
            a8 = resize_uint8(a8, image_size)
        x = torch.from_numpy(np.ascontiguousarray(a8)).to(torch.float32).div_(127.5).sub_(1.0)
        return x, 256
    if kind != "f":
        raise InputError(f"{where}: dtype {a.dtype} is not supported; save uint8 (8-bit data) "
                         "or float arrays")
    x = torch.from_numpy(np.ascontiguousarray(a)).to(torch.float32)
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise InputError(f"{where}: {bad} NaN/Inf values; remove or replace them")
    if image:
        lo, hi = float(x.min()), float(x.max())
        if lo < -1 - FLOAT_RANGE_TOL or hi > 1 + FLOAT_RANGE_TOL:
            raise InputError(f"{where}: float images span [{lo:.4g}, {hi:.4g}], not [-1, 1]; "
                             "scale them (x/127.5 - 1 for 0..255, 2x - 1 for 0..1) or save "
                             "uint8")
        x = x.clamp_(-1.0, 1.0)
        if image_size is not None:
            x = resize_center_crop(x, image_size)
    return x, None


def load_array_file(path: str | os.PathLike, image_size: int | None = None) -> Dataset:
    """``FILE.npy`` / ``FILE.npz`` as a :class:`Dataset` (see the module doc for the rules)."""
    check_image_size(image_size)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        raw = _load_npy(path)
    elif suffix == ".npz":
        raw = _load_npz_arrays(path)
    else:
        raise InputError(f"{path}: unknown array file type {suffix!r}; use .npy or .npz")
    tr = _as_layout(raw["train"], f"{path}")
    x_tr, levels = _to_tensor(tr, f"{path}", image_size)
    x_te = None
    if "test" in raw:
        te = _as_layout(raw["test"], f"{path}[test]")
        if te.shape[1:] != tr.shape[1:] and image_size is None:
            raise InputError(f"{path}: train examples are {tr.shape[1:]} but test examples "
                             f"{te.shape[1:]}; make them match")
        x_te, te_levels = _to_tensor(te, f"{path}[test]", image_size)
        if te_levels != levels or x_te.shape[1:] != x_tr.shape[1:]:
            raise InputError(f"{path}: train is {tr.dtype} {tr.shape[1:]} but test is {te.dtype} "
                             f"{te.shape[1:]}; save both splits with one dtype and shape")
    labels = {}
    for role, x in (("train_labels", x_tr), ("test_labels", x_te)):
        y = raw.get(role)
        if y is None:
            continue
        if x is None or y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "ui":
            n = 0 if x is None else len(x)
            raise InputError(f"{path}: {role} must be integers of shape ({n},), "
                             f"got {y.dtype} {y.shape}")
        labels[role] = labels_tensor(y)
    return Dataset(name=str(path), train=x_tr, test=x_te, levels=levels,
                   kind="image" if x_tr.dim() == 4 else "vector", **labels)
