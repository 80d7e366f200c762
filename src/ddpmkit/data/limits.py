"""Bounded reading of untrusted files: what a header claims is checked before anything is
allocated or decoded.

- images: the pixel count a PNG/JPEG header claims, against ``max_image_pixels()``
  (Pillow reads only the header in ``Image.open``); decompression bombs and truncated files
  become one-line InputErrors naming the file;
- .npy / .npz: the shape and dtype in each array's header, against the bytes the file (or zip
  member) really holds and against ``max_array_bytes()``, before numpy allocates the array.

The budgets come from the environment (``DDPMKIT_MAX_IMAGE_PIXELS``, ``DDPMKIT_MAX_ARRAY_BYTES``)
so a user with a large data set can raise them.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError

#: default pixel budget of one image (Pillow's own default is 89.5M; 64M is 8192 x 8192)
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
#: default byte budget of one array read from an .npy/.npz file
MAX_ARRAY_BYTES = 8 * 1024**3


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise InputError(f"{name}={raw!r} is not a whole number") from None
    if v < 1:
        raise InputError(f"{name} must be >= 1; got {v}")
    return v


def max_image_pixels() -> int:
    return _env_int("DDPMKIT_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS)


def max_array_bytes() -> int:
    return _env_int("DDPMKIT_MAX_ARRAY_BYTES", MAX_ARRAY_BYTES)


def check_image_header(img, path: Path) -> None:
    """Refuse an opened (not yet decoded) PIL image whose header claims too many pixels."""
    w, h = img.size
    limit = max_image_pixels()
    if w * h > limit:
        raise InputError(f"image {path} claims {w}x{h} = {w * h} pixels, over the limit of "
                         f"{limit}; shrink it or raise DDPMKIT_MAX_IMAGE_PIXELS")


def _npy_header(fp, where: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the data) from an .npy stream, without reading the data."""
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except ValueError as e:
        raise InputError(f"{where}: not a readable .npy array header ({e})") from None
    if dtype.hasobject:
        raise InputError(f"{where}: holds Python objects, which cannot load without pickle; "
                         "save plain numeric arrays")
    return tuple(int(s) for s in shape), dtype, fp.tell()


def check_array_header(shape: tuple[int, ...], dtype: np.dtype, available: int,
                       where: str) -> None:
    """The header's claimed size must fit in the bytes present and in the memory budget."""
    n = 1
    for s in shape:
        if s < 0:
            raise InputError(f"{where}: negative dimension in shape {shape}")
        n *= s
    need = n * dtype.itemsize
    if need > available:
        raise InputError(f"{where}: its header claims shape {shape} ({need} bytes) but the file "
                         f"holds only {available} bytes of data; the file is truncated or forged")
    limit = max_array_bytes()
    if need > limit:
        raise InputError(f"{where}: shape {shape} needs {need} bytes, over the budget of {limit} "
                         "bytes; raise DDPMKIT_MAX_ARRAY_BYTES if that is intended")


def check_npy_file(path: Path) -> None:
    """Validate an .npy file's header against its real size and the budget."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        shape, dtype, offset = _npy_header(f, str(path))
    check_array_header(shape, dtype, size - offset, str(path))


def check_npz_file(path: Path) -> None:
    """Validate every member of an .npz: each header against the member's declared size."""
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                where = f"{path}:{info.filename}"
                with zf.open(info) as member:
                    head = member.read(65536 + 16)  # an .npy header is far shorter
                fp = io.BytesIO(head)
                shape, dtype, offset = _npy_header(fp, where)
                check_array_header(shape, dtype, info.file_size - offset, where)
    except zipfile.BadZipFile as e:
        raise InputError(f"{path}: not a readable .npz file ({e})") from None
