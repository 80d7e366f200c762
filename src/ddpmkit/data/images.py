"""A folder of PNG/JPEG images as 8-bit data (K = 256) in [-1, 1].

Layout: every ``*.png``, ``*.jpg``, ``*.jpeg`` under the folder (recursively, sorted by path,
hidden files and folders skipped) is the train split. If the folder has both ``train/`` and
``test/`` subfolders, those are the two splits.

Channels: grayscale modes (1, L, LA, I, I;16) give C = 1, colour modes (RGB, RGBA, P, CMYK,
YCbCr) C = 3; alpha is dropped; 16-bit grayscale is scaled to 8 bits (v / 257, rounded). A
folder mixing grayscale and colour images is refused (convert them to one mode).

Size: with ``image_size`` every image is resized so its shorter side is ``image_size``
(Lanczos, antialiased) and the centre ``image_size`` x ``image_size`` is kept. Without it all
images must have one size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .dataset import Dataset, center_crop_size, check_image_size, uint8_to_unit
from .limits import check_image_header

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B")
COLOR_MODES = ("RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder``, recursively, sorted; hidden entries skipped."""
    folder = Path(folder)
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in files:
            if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES):
                out.append(Path(root) / f)
    return sorted(out)


def _to_array(img, path: Path) -> np.ndarray:
    """PIL image to uint8 (H, W, C) with C = 1 or 3."""
    mode = img.mode
    if mode in ("I", "I;16", "I;16L", "I;16B"):
        a = np.asarray(img).astype(np.int64)
        if a.min() < 0:
            raise InputError(f"{path}: negative pixel values in mode {mode}; save it as 8-bit")
        if mode != "I" or a.max() > 255:
            a = np.rint(a / 257.0)
        return np.clip(a, 0, 255).astype(np.uint8)[:, :, None]
    if mode in GRAY_MODES:
        return np.asarray(img.convert("L"), dtype=np.uint8)[:, :, None]
    if mode in COLOR_MODES:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    raise InputError(f"{path}: unsupported image mode {mode}; save it as 8-bit grayscale or RGB")


def read_image(path: str | os.PathLike, image_size: int | None = None) -> np.ndarray:
    """One image as uint8 (C, H, W), resized + centre-cropped when ``image_size`` is given."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:  # reads the header only
            check_image_header(img, path)
            img.load()  # decode now, so a truncated file fails here, naming itself
            arr = _to_array(img, path)
    except Image.DecompressionBombError as e:
        raise InputError(f"image {path} is a decompression bomb ({e}); remove it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot read image {path} ({e}); remove or replace the file") from None
    if image_size is not None and arr.shape[:2] != (image_size, image_size):
        h, w = arr.shape[:2]
        h2, w2 = center_crop_size(h, w, image_size)
        pil = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
        pil = pil.resize((w2, h2), Image.Resampling.LANCZOS)
        top, left = (h2 - image_size) // 2, (w2 - image_size) // 2
        pil = pil.crop((left, top, left + image_size, top + image_size))
        arr = np.asarray(pil, dtype=np.uint8).reshape(image_size, image_size, -1)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _stack(paths: list[Path], image_size: int | None, folder: Path) -> np.ndarray:
    arrays = [read_image(p, image_size) for p in paths]
    first = arrays[0]
    for p, a in zip(paths, arrays):
        if a.shape[0] != first.shape[0]:
            kinds = {1: "grayscale", 3: "colour"}
            raise InputError(f"{folder}: mixed grayscale and colour images ({paths[0].name} is "
                             f"{kinds[first.shape[0]]}, {p.name} is {kinds[a.shape[0]]}); "
                             "convert them all to one mode")
        if a.shape[1:] != first.shape[1:]:
            raise InputError(f"{folder}: images have different sizes ({paths[0].name} is "
                             f"{first.shape[2]}x{first.shape[1]}, {p.name} is {a.shape[2]}x"
                             f"{a.shape[1]}); pass an image size (--image-size N) to resize "
                             "and centre-crop them")
    return np.stack(arrays)


def folder_classes(paths: list[Path], root: Path) -> list[str] | None:
    """The first-level subfolder of each image under ``root`` (its class), or None when some
    image lies directly in ``root`` (then the folder has no classes)."""
    names = []
    for p in paths:
        rel = p.relative_to(root).parts
        if len(rel) < 2:
            return None
        names.append(rel[0])
    return names


def load_image_folder(folder: str | os.PathLike, image_size: int | None = None) -> Dataset:
    """Images under ``folder`` as float32 (N, C, H, W) in [-1, 1] (v/127.5 - 1), K = 256.

    Classes: when every image sits in a subfolder (``folder/cat/1.png``, or
    ``folder/train/cat/1.png`` with a train/test split), the subfolder names, sorted, are the
    classes and the labels index them (``Dataset.class_names``)."""
    check_image_size(image_size)
    folder = Path(folder)
    tr_dir, te_dir = folder / "train", folder / "test"
    split = tr_dir.is_dir() and te_dir.is_dir()
    sources = {"train": tr_dir, "test": te_dir} if split else {"train": folder}
    parts, classes = {}, {}
    for name, src in sources.items():
        paths = list_images(src)
        if not paths:
            raise InputError(f"no PNG/JPEG images found in {src} (looked for "
                             f"{', '.join(IMAGE_SUFFIXES)}, recursively); check the path")
        parts[name] = _stack(paths, image_size, src)
        classes[name] = folder_classes(paths, src)
    tr, te = parts["train"], parts.get("test")
    if te is not None and te.shape[1:] != tr.shape[1:]:
        raise InputError(f"{folder}: train images are {tr.shape[1:]} (C, H, W) but test images "
                         f"{te.shape[1:]}; make them match or pass --image-size N")
    labels: dict = {}
    if classes["train"] is not None:
        names = tuple(sorted(set(classes["train"])))
        index = {c: i for i, c in enumerate(names)}
        labels = {"class_names": names, "train_labels": torch.tensor(
            [index[c] for c in classes["train"]], dtype=torch.int64)}
        if classes.get("test") is not None:
            unknown = sorted(set(classes["test"]) - set(names))
            if unknown:
                raise InputError(f"{folder}: test has classes {unknown[:3]} that train does not; "
                                 "give every test class training images")
            labels["test_labels"] = torch.tensor([index[c] for c in classes["test"]],
                                                 dtype=torch.int64)
    return Dataset(name=str(folder), train=uint8_to_unit(tr),
                   test=None if te is None else uint8_to_unit(te), levels=256, kind="image",
                   **labels)
