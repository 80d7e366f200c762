"""The IDX format of MNIST and Fashion-MNIST, read with numpy only (no node, no pickle).

An IDX file is ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the
values big-endian in C order. Type codes (LeCun's spec): 0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64. Files may be gzip-compressed (detected by content).

A folder of IDX files is one dataset: ``train-images-idx3-ubyte[.gz]`` and
``train-labels-idx1-ubyte[.gz]`` form the train split, ``t10k-…`` (or ``test-…``) the test split,
so Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) loads as is.
"""

from __future__ import annotations

import gzip
import math
import os
import re
from pathlib import Path

import numpy as np

from ..errors import InputError

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"
IDX_NAME = re.compile(r"idx\d+-ubyte(\.gz)?$", re.IGNORECASE)


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into an array of shape ``(d_1, …, d_ndim)`` in native byte order."""
    if len(data) < 4:
        raise InputError(f"{name}: not an IDX file (only {len(data)} bytes); "
                         "expected a 4-byte header 0x00 0x00 TYPE NDIM")
    if data[0] != 0 or data[1] != 0:
        raise InputError(f"{name}: not an IDX file (header starts {data[:2].hex()}, "
                         "expected 0000); pass the uncompressed or .gz IDX file")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise InputError(f"{name}: unknown IDX type code 0x{code:02x}; valid: "
                         + ", ".join(f"0x{c:02x}" for c in IDX_DTYPES))
    if ndim == 0:
        raise InputError(f"{name}: IDX header declares 0 dimensions; the file is corrupt")
    head = 4 + 4 * ndim
    if len(data) < head:
        raise InputError(f"{name}: IDX header truncated ({len(data)} bytes < {head}); "
                         "the file is corrupt or incomplete, download it again")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = head + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise InputError(f"{name}: IDX size mismatch: header says shape {shape} "
                         f"({expected} bytes) but the file has {len(data)} bytes; "
                         "the file is corrupt or incomplete, download it again")
    arr = np.frombuffer(data, dtype=dtype, offset=head).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def decompress_if_gzip(data: bytes, name: str) -> bytes:
    """Return ``data`` gunzipped when it starts with the gzip magic, else unchanged."""
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as e:
        raise InputError(f"{name}: corrupt gzip data ({e}); download the file again") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (plain or gzip-compressed) into a numpy array."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read IDX file {path}: {e.strerror or e}") from None
    return parse_idx(decompress_if_gzip(data, str(path)), str(path))


def idx_files(folder: str | os.PathLike) -> list[Path]:
    """The IDX files (``*idxN-ubyte`` or ``*idxN-ubyte.gz``) directly inside ``folder``."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and IDX_NAME.search(p.name))


def _split_of(name: str) -> str | None:
    low = name.lower()
    if low.startswith("train"):
        return "train"
    if low.startswith(("t10k", "test")):
        return "test"
    return None


def load_idx_folder(
    folder: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Read ``(train_images, train_labels, test_images, test_labels)`` from a folder of IDX files.

    Images are IDX arrays of 3 dimensions (N, H, W), labels of 1 dimension (N,); the split is
    named by the file's prefix (``train`` / ``t10k`` or ``test``). Missing parts are None; a
    train image file is required.
    """
    folder = Path(folder)
    found: dict[tuple[str, str], Path] = {}
    for p in idx_files(folder):
        split = _split_of(p.name)
        kind = "labels" if "label" in p.name.lower() else "images"
        if split is None:
            raise InputError(f"{p}: cannot tell the split from the name; name IDX files "
                             "train-… or t10k-…/test-… (e.g. train-images-idx3-ubyte.gz)")
        if (split, kind) in found:
            raise InputError(f"{folder}: two {split} {kind} files ({found[split, kind].name} and "
                             f"{p.name}); keep one of them (plain or .gz)")
        found[split, kind] = p
    if ("train", "images") not in found:
        raise InputError(f"{folder}: no train images IDX file (train-images-idx3-ubyte[.gz]) "
                         "found; point to the folder holding the MNIST-style IDX files")
    arrays: dict[tuple[str, str], np.ndarray] = {k: read_idx(p) for k, p in found.items()}
    for (split, kind), a in arrays.items():
        want = 3 if kind == "images" else 1
        if a.ndim != want:
            raise InputError(f"{found[split, kind]}: {kind} must have {want} dimensions, "
                             f"the file has shape {a.shape}")
    for split in ("train", "test"):
        im, lb = arrays.get((split, "images")), arrays.get((split, "labels"))
        if im is not None and lb is not None and len(im) != len(lb):
            raise InputError(f"{folder}: {split} has {len(im)} images but {len(lb)} labels; "
                             "the files do not belong together")
        if im is None and lb is not None:
            raise InputError(f"{folder}: {split} labels without {split} images; add the "
                             f"{split} images file or remove the labels file")
    tr, te = arrays["train", "images"], arrays.get(("test", "images"))
    if te is not None and te.shape[1:] != tr.shape[1:]:
        raise InputError(f"{folder}: train images are {tr.shape[1:]} but test images "
                         f"{te.shape[1:]}; both splits must have one image size")
    return tr, arrays.get(("train", "labels")), te, arrays.get(("test", "labels"))
