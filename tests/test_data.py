"""load_dataset: digits, 2-D toys, image folders, .npy/.npz, and its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmkit.data import Dataset, load_dataset
from ddpmkit.errors import InputError


def one_line_error(fn, *args, match: str, **kwargs) -> str:
    with pytest.raises(InputError, match=match) as e:
        fn(*args, **kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


# ---------------------------------------------------------------- digits

def test_digits_are_v_over_8_minus_1_on_17_levels_with_the_fixed_stratified_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_dataset("digits")
    assert isinstance(d, Dataset) and d.kind == "image" and d.levels == 17
    assert d.train.dtype == torch.float32 and d.train.shape == (1347, 1, 8, 8)
    assert d.test.shape == (450, 1, 8, 8) and d.num_dims == 64
    raw = load_digits()
    tr, te = train_test_split(np.arange(1797), test_size=0.25, random_state=0,
                              stratify=raw.target)
    np.testing.assert_array_equal(d.train[:, 0].numpy(), raw.images[tr] / 8 - 1)
    np.testing.assert_array_equal(d.test_labels.numpy(), raw.target[te])
    levels = torch.unique(torch.cat([d.train, d.test]))
    assert torch.equal(levels, torch.linspace(-1, 1, 17))
    counts = np.bincount(d.test_labels.numpy())  # stratified: a quarter of each class
    assert np.abs(counts - np.bincount(raw.target) / 4).max() <= 1


def test_digits_refuse_an_image_size():
    one_line_error(load_dataset, "digits", image_size=16, match="8x8 with 17 levels")


# ---------------------------------------------------------------- 2-D toys

@pytest.mark.parametrize("name", ["ring", "moons", "swissroll"])
def test_toys_are_fixed_size_seeded_and_independent_between_splits(name):
    a, b, c = (load_dataset(name, seed=s) for s in (0, 0, 1))
    assert a.kind == "vector" and a.levels is None
    assert a.train.shape == (10_000, 2) and a.test.shape == (2_000, 2)
    assert torch.equal(a.train, b.train) and not torch.equal(a.train, c.train)
    assert not torch.equal(a.train[:2000], a.test)
    assert float(a.train.abs().max()) < 1.6  # scaled to about [-1, 1]


def test_ring_is_eight_gaussians_of_radius_1_and_std_0_08():
    d = load_dataset("ring")
    k = d.train_labels
    angle = 2 * math.pi * k.double() / 8
    means = torch.stack([angle.cos(), angle.sin()], 1)
    resid = d.train.double() - means
    assert abs(float(resid.std()) - 0.08) < 0.003
    assert float(resid.mean(0).abs().max()) < 0.005
    assert np.bincount(k.numpy()).min() > 1100


def test_moons_and_swissroll_have_the_documented_scaling():
    m = load_dataset("moons").train
    assert -1.15 < float(m[:, 0].min()) < -0.95 and 0.95 < float(m[:, 0].max()) < 1.15
    s = load_dataset("swissroll").train
    r = s.double().norm(dim=1)
    assert 0.28 < float(r.min()) < 0.36 and 0.97 < float(r.max()) < 1.08  # s/(4.5π) in [1/3, 1]


# ---------------------------------------------------------------- image folders

def save(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)


def test_image_folder_gray_png_is_v_over_127_5_minus_1_with_k_256(tmp_path):
    rng = np.random.default_rng(0)
    arrs = [rng.integers(0, 256, (5, 7), dtype=np.uint8) for _ in range(3)]
    for i, a in enumerate(arrs):
        save(tmp_path / "imgs" / f"sub{i % 2}" / f"{i}.png", a)
    d = load_dataset(str(tmp_path / "imgs"))
    assert d.kind == "image" and d.levels == 256 and d.test is None
    assert d.train.shape == (3, 1, 5, 7)
    order = [0, 2, 1]  # sorted paths: sub0/0, sub0/2, sub1/1
    expect = np.stack([arrs[i] for i in order]) / 127.5 - 1
    np.testing.assert_allclose(d.train[:, 0].numpy(), expect, atol=1e-6)


def test_image_folder_rgb_jpeg_resize_and_centre_crop(tmp_path):
    # a 20x10 (W x H) image, left half red, right half blue; the centre crop of its
    # shorter-side-8 resize (16x8) keeps columns 4..11, red on the left, blue on the right
    a = np.zeros((10, 20, 3), np.uint8)
    a[:, :10, 0] = 255
    a[:, 10:, 2] = 255
    save(tmp_path / "rgb" / "a.jpg", a)
    save(tmp_path / "rgb" / "b.png", a)
    d = load_dataset(str(tmp_path / "rgb"), image_size=8)
    assert d.train.shape == (2, 3, 8, 8)
    x = (d.train[1] + 1) * 127.5
    assert float(x[0, :, 0].min()) > 250 and float(x[2, :, 0].max()) < 5
    assert float(x[2, :, 7].min()) > 250 and float(x[0, :, 7].max()) < 5


def test_image_folder_with_train_and_test_subfolders_is_split(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        for i in range(n):
            save(tmp_path / "ds" / split / f"{i}.png", np.full((6, 6), 10 * i, np.uint8))
    d = load_dataset(str(tmp_path / "ds"))
    assert d.train.shape == (4, 1, 6, 6) and d.test.shape == (2, 1, 6, 6)


def test_image_folder_16_bit_gray_is_scaled_to_8_bit(tmp_path):
    a = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    (tmp_path / "g").mkdir()
    Image.fromarray(a).save(tmp_path / "g" / "a.png")
    d = load_dataset(str(tmp_path / "g"))
    np.testing.assert_allclose(((d.train[0, 0] + 1) * 127.5).numpy(), [[0, 100, 255]], atol=1e-4)


def test_image_folder_errors_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    one_line_error(load_dataset, str(tmp_path / "empty"), match="no PNG/JPEG images found")

    save(tmp_path / "bad" / "ok.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    one_line_error(load_dataset, str(tmp_path / "bad"), match="cannot read image .*broken.png")

    save(tmp_path / "trunc" / "ok.png", np.zeros((64, 64), np.uint8))
    data = (tmp_path / "trunc" / "ok.png").read_bytes()
    (tmp_path / "trunc" / "cut.png").write_bytes(data[: len(data) // 2])
    one_line_error(load_dataset, str(tmp_path / "trunc"), match="cut.png")

    save(tmp_path / "sizes" / "a.png", np.zeros((4, 4), np.uint8))
    save(tmp_path / "sizes" / "b.png", np.zeros((5, 4), np.uint8))
    one_line_error(load_dataset, str(tmp_path / "sizes"), match="different sizes.*--image-size")
    assert load_dataset(str(tmp_path / "sizes"), image_size=4).train.shape == (2, 1, 4, 4)

    save(tmp_path / "mixed" / "a.png", np.zeros((4, 4), np.uint8))
    save(tmp_path / "mixed" / "b.png", np.zeros((4, 4, 3), np.uint8))
    one_line_error(load_dataset, str(tmp_path / "mixed"), image_size=4,
                   match="mixed grayscale and colour")


# ---------------------------------------------------------------- arrays

def test_npy_uint8_images_map_to_k_256_and_nhw_gets_a_channel(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
    np.save(tmp_path / "a.npy", a)
    d = load_dataset(str(tmp_path / "a.npy"))
    assert d.levels == 256 and d.kind == "image" and d.train.shape == (2, 1, 3, 4)
    np.testing.assert_allclose(d.train[:, 0].numpy(), a / 127.5 - 1, atol=1e-6)


def test_npz_keys_train_test_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    tr, te = rng.uniform(-1, 1, (6, 3, 4, 4)), rng.uniform(-1, 1, (2, 3, 4, 4))
    np.savez(tmp_path / "s.npz", train=tr, test=te, train_labels=np.arange(6))
    d = load_dataset(str(tmp_path / "s.npz"))
    assert d.levels is None and d.train.dtype == torch.float32
    np.testing.assert_allclose(d.test.numpy(), te, atol=1e-7)
    assert d.train_labels.tolist() == list(range(6)) and d.test_labels is None
    np.savez(tmp_path / "samples.npz", images=tr.astype(np.float32))  # `ddpmkit sample` output
    assert load_dataset(str(tmp_path / "samples.npz")).train.shape == (6, 3, 4, 4)


def test_float_vectors_keep_any_finite_range(tmp_path):
    v = np.array([[3.0, -7.5], [0.0, 1.0]])
    np.save(tmp_path / "v.npy", v)
    d = load_dataset(str(tmp_path / "v.npy"))
    assert d.kind == "vector" and d.levels is None
    np.testing.assert_allclose(d.train.numpy(), v)


def test_array_errors_name_the_problem_and_the_fix(tmp_path):
    bad = np.zeros((3, 4, 4), np.float32)
    bad[1, 2, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    one_line_error(load_dataset, str(tmp_path / "nan.npy"), match="1 NaN/Inf")
    np.save(tmp_path / "range.npy", np.full((2, 4, 4), 255.0))
    one_line_error(load_dataset, str(tmp_path / "range.npy"), match=r"x/127.5 - 1")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    one_line_error(load_dataset, str(tmp_path / "obj.npy"), match="without pickle")
    np.save(tmp_path / "nhwc.npy", np.zeros((2, 16, 16, 3), np.uint8))
    one_line_error(load_dataset, str(tmp_path / "nhwc.npy"), match="channels-last")
    np.save(tmp_path / "ints.npy", np.array([[0, 300]]))
    one_line_error(load_dataset, str(tmp_path / "ints.npy"), match="outside 0..255")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    one_line_error(load_dataset, str(tmp_path / "two.npz"), match="name it 'train'")
    np.save(tmp_path / "one.npy", np.zeros(5))
    one_line_error(load_dataset, str(tmp_path / "one.npy"), match=r"not \(N, C, H, W\)")
    (tmp_path / "x.csv").write_text("1,2\n")
    one_line_error(load_dataset, str(tmp_path / "x.csv"), match="unknown data file type")


def test_uint8_arrays_resize_and_stay_on_the_256_grid(tmp_path):
    np.save(tmp_path / "a.npy", np.random.default_rng(0).integers(0, 256, (3, 1, 12, 16),
                                                                   dtype=np.uint8))
    d = load_dataset(str(tmp_path / "a.npy"), image_size=8)
    assert d.train.shape == (3, 1, 8, 8)
    g = ((d.train + 1) * 127.5).numpy()
    np.testing.assert_allclose(g, np.round(g), atol=1e-4)


def test_unknown_spec_lists_the_choices():
    msg = one_line_error(load_dataset, "cifar11", match="unknown data 'cifar11'")
    assert "digits" in msg and "mnist" in msg
