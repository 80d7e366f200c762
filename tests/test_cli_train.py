"""`ddpmkit train`, `sample` and `demo` as a user runs them."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.subprocess  # every test here starts `python -m ddpmkit`

TINY = ["--T", "50", "--batch-size", "8", "--sample-every", "0", "--no-progress"]


def run(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "ddpmkit", *args], capture_output=True, text=True,
                       timeout=900)
    if check:
        assert p.returncode == 0, p.stderr[-2000:]
    return p


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


@pytest.fixture(scope="module")
def trained(tmp_path_factory, png_folder):
    out = tmp_path_factory.mktemp("runs") / "pngs"
    run("train", "--data", str(png_folder), "--image-size", "8", "--out", str(out),
        "--steps", "4", "--checkpoint-every", "2", "--preset", "digits", *TINY)
    return out


def test_train_on_a_png_folder_writes_the_run_layout(trained):
    cfg = json.loads((trained / "config.json").read_text())
    assert cfg["data"]["shape"] == [3, 8, 8] and cfg["data"]["levels"] == 256
    cks = sorted(p.name for p in (trained / "checkpoints").iterdir())
    assert cks[-1] == "step_0000004"
    files = {p.name for p in (trained / "checkpoints" / "step_0000004").iterdir()}
    assert files == {"model.safetensors", "ema.safetensors", "optim.safetensors", "state.json"}
    log = [json.loads(x) for x in (trained / "log.jsonl").read_text().splitlines()]
    assert {"step", "loss", "loss_by_t", "lr", "grad_norm", "imgs_per_s"} <= set(log[-1])


def test_train_conv3x3_winograd_goes_into_the_net_config(tmp_path):
    out = tmp_path / "w"
    run("train", "--data", "digits", "--out", str(out), "--steps", "1", "--conv3x3", "winograd",
        *TINY)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["net"]["conv3x3"] == "winograd", cfg["net"]
    assert cfg["train"]["net_overrides"] == {"conv3x3": "winograd"}


def test_sample_writes_npz_and_png(trained, tmp_path):
    npz, png = tmp_path / "s.npz", tmp_path / "s.png"
    run("sample", str(trained), "--n", "5", "--steps", "5", "--sampler", "ddim", "--out", str(npz))
    with np.load(npz, allow_pickle=False) as f:
        x = f["images"]
        meta = json.loads(str(f["meta"]))
    assert x.shape == (5, 3, 8, 8) and x.dtype == np.float32
    assert x.min() >= -1 and x.max() <= 1
    assert meta["sampler"] == "ddim" and meta["step"] == 4
    run("sample", str(trained), "--n", "4", "--steps", "3", "--out", str(png))
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_same_seed_same_samples(trained, tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    for f in (a, b):
        run("sample", str(trained), "--n", "3", "--steps", "4", "--seed", "7", "--out", str(f))
    assert np.array_equal(np.load(a)["images"], np.load(b)["images"])


@pytest.mark.parametrize("args,needle", [
    (["train", "--out", "{tmp}/r"], "budget"),
    (["train", "--data", "{tmp}/empty", "--out", "{tmp}/r", "--steps", "1"], "empty"),
    (["train", "--data", "nope.npz", "--out", "{tmp}/r", "--steps", "1"], "nope.npz"),
    (["train", "--data", "digits", "--out", "{tmp}/r", "--steps", "0"], "--steps"),
    (["train", "--data", "digits", "--out", "{tmp}/r", "--steps", "2", "--loss", "l1"], "l1"),
    (["train", "--data", "digits", "--out", "{run}", "--steps", "2"], "--resume"),
    (["train", "--out", "{run}", "--steps", "4", "--resume", "--loss", "snr", "--batch-size",
      "4"], "drop --batch-size, --loss "),
    (["train", "--data", "ring", "--out", "{tmp}/r", "--steps", "2", "--conv3x3", "winograd"],
     "conv3x3"),
    (["sample", "{tmp}/not_a_run", "--out", "{tmp}/x.npz"], "does not exist"),
    (["sample", "{run}", "--out", "{tmp}/x.jpg"], ".npz or .png"),
    (["sample", "{run}", "--out", "{tmp}/x.npz", "--steps", "51"], "exceeds"),
    (["sample", "{run}", "--out", "{tmp}/x.npz", "--sampler", "magic"], "magic"),
])
def test_bad_input_one_line_exit_2(args, needle, tmp_path, trained):
    (tmp_path / "empty").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{run}", str(trained)) for a in args]
    p = run(*argv, check=False)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in p.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "x.npz").exists()


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    p = run("demo", "--out", str(out), "--minutes", "0.15", "--n", "64", "--bpd", "stratified",
            "--json")
    m = json.loads(p.stdout)
    for f in ("samples.png", "trajectory.png", "loss_by_t.png", "metrics.json"):
        assert (out / f).is_file(), f
    assert m["train_steps"] > 0 and m["fd"] > 0 and m["fd_floor"] > 0 and m["test_bpd"] > 0
    assert sum(m["class_counts"]) == 64
    # the printed split adds up to the demo's own wall clock
    parts = m["train_seconds"] + m["sample_seconds"] + m["bpd_seconds"] + m["other_seconds"]
    assert m["other_seconds"] >= 0 and abs(parts - m["total_seconds"]) < 1e-6
    # a second demo replaces its own folder, but never a folder it did not make
    other = tmp_path / "mine"
    other.mkdir()
    p = run("demo", "--out", str(other), "--minutes", "0.05", check=False)
    assert p.returncode == 2 and "not a demo directory" in p.stderr
