"""Files made to hurt: their headers are checked before anything is allocated or decoded, and
each gives one line and exit 2 (issue: preemption, concurrency and hostile files)."""

import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest

from ddpmkit.data import load_dataset
from ddpmkit.data.images import read_image
from ddpmkit.errors import InputError


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height 8-bit gray pixels (data for one row)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def npy_claiming(shape, dtype="<f4") -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue() + b"\x00" * 64  # a few bytes of "data"


def cli_train(data: str, out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ddpmkit", "train", "--data", data, "--steps",
                           "1", "--out", str(out)], capture_output=True, text=True)


def test_png_over_the_pixel_budget_is_refused_from_its_header(tmp_path):
    """9000 x 9000 = 81M pixels: over ddpmkit's 64M budget, under Pillow's own limits."""
    p = tmp_path / "big.png"
    p.write_bytes(png_claiming(9000, 9000))
    with pytest.raises(InputError, match=r"claims 9000x9000 .* over the limit"):
        read_image(p)


def test_png_claiming_40000_squared_is_a_one_line_bomb_error(tmp_path):
    """Pillow refuses it inside Image.open (DecompressionBombError): mapped to one line."""
    p = tmp_path / "bomb.png"
    p.write_bytes(png_claiming(40000, 40000))
    with pytest.raises(InputError, match="decompression bomb"):
        read_image(p)


def test_truncated_png_names_the_file(tmp_path):
    from PIL import Image

    p = tmp_path / "cut.png"
    Image.fromarray((np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)).save(p)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(InputError, match="cut.png"):
        read_image(p)


def test_npy_header_claiming_a_trillion_elements_is_refused(tmp_path):
    p = tmp_path / "huge.npy"
    p.write_bytes(npy_claiming((10**12,)))
    with pytest.raises(InputError, match=r"claims shape \(1000000000000,\)"):
        load_dataset(str(p))


def test_npz_member_claiming_a_trillion_elements_is_refused(tmp_path):
    p = tmp_path / "huge.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("train.npy", npy_claiming((10**6, 10**6)))
    with pytest.raises(InputError, match="huge.npz:train.npy: its header claims"):
        load_dataset(str(p))


def test_an_honest_array_over_the_budget_is_refused(tmp_path, monkeypatch):
    p = tmp_path / "ok.npy"
    np.save(p, np.zeros((100, 8), dtype=np.float32))
    monkeypatch.setenv("DDPMKIT_MAX_ARRAY_BYTES", "1000")
    with pytest.raises(InputError, match="over the budget of 1000 bytes"):
        load_dataset(str(p))
    monkeypatch.delenv("DDPMKIT_MAX_ARRAY_BYTES")
    assert load_dataset(str(p)).train.shape[0] > 0


@pytest.mark.parametrize("kind", ["png_bomb", "npy_bomb", "truncated_png"])
def test_train_on_a_hostile_file_exits_2_with_one_line(tmp_path, kind):
    if kind == "npy_bomb":
        data = tmp_path / "x.npy"
        data.write_bytes(npy_claiming((10**12,)))
    else:
        data = tmp_path / "imgs"
        data.mkdir()
        from PIL import Image

        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(data / f"{i}.png")
        bad = data / "z.png"
        if kind == "png_bomb":
            bad.write_bytes(png_claiming(40000, 40000))
        else:
            Image.fromarray((np.arange(4096) % 251).astype(np.uint8).reshape(64, 64)).save(bad)
            bad.write_bytes(bad.read_bytes()[:60])
    p = cli_train(str(data), tmp_path / "run")
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "run").exists()


# ---- one exit path ------------------------------------------------------------------------
def _boom(*a, **k):
    raise RuntimeError("something inside broke")


@pytest.mark.parametrize("debug", [False, True])
def test_an_internal_error_is_one_line_and_exit_1_unless_debug(monkeypatch, capsys, debug):
    import ddpmkit.equivalence as eq
    from ddpmkit.cli import main

    monkeypatch.setattr(eq, "check_equivalence", _boom)
    monkeypatch.delenv("DDPMKIT_DEBUG", raising=False)
    code = main((["--debug"] if debug else []) + ["equivalence", "--T", "100"])
    err = capsys.readouterr().err
    assert code == 1
    if debug:
        assert "Traceback" in err and "RuntimeError: something inside broke" in err
    else:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "internal error: RuntimeError: something inside broke" in err
        assert "--debug" in err and "Traceback" not in err


# ---- safetensors headers against the run's config -------------------------------------------
def _reseal(ck_dir):
    """Re-record the tensor files' sha256 and the state hash, as a forger would."""
    import json

    from ddpmkit.io import sha256_file
    from ddpmkit.train.checkpoint import _state_hash

    sj = ck_dir / "state.json"
    st = json.loads(sj.read_text())
    for name in ("model.safetensors", "ema.safetensors", "optim.safetensors"):
        st["hashes"][name] = sha256_file(ck_dir / name)
    st["state_sha256"] = _state_hash(st)
    sj.write_text(json.dumps(st))


@pytest.fixture
def tiny_run(tmp_path):
    from ddpmkit.train import TrainConfig, train

    run = tmp_path / "run"
    train(TrainConfig(data="digits", steps=2, batch_size=8, sample_every=0, checkpoint_every=2,
                      net_overrides={"ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1,
                                     "norm_groups": 4, "mid_attn": False}), run, progress=False)
    return run


@pytest.mark.parametrize("forgery", ["other_shape", "offsets_past_the_end"])
def test_a_forged_safetensors_header_is_refused_before_loading(tiny_run, monkeypatch, forgery):
    import ddpmkit.train.checkpoint as ck
    from ddpmkit.train import load_denoiser

    ck_dir = tiny_run / "checkpoints" / "step_0000002"
    f = ck_dir / "ema.safetensors"
    raw = f.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    import json

    head = json.loads(raw[8:8 + n])
    name = next(k for k in head if k != "__metadata__" and len(head[k]["shape"]) == 4)
    if forgery == "other_shape":  # same bytes, a shape of the same size the net does not have
        s = head[name]["shape"]
        head[name]["shape"] = [s[1], s[0], s[2], s[3]] if s[0] != s[1] else [s[0] * s[1], 1,
                                                                            s[2], s[3]]
    else:
        head[name]["data_offsets"][1] += 10**9
    body = json.dumps(head).encode()
    body += b" " * (-len(body) % 8)
    f.write_bytes(len(body).to_bytes(8, "little") + body + raw[8 + n:])
    _reseal(ck_dir)

    def no_load(*a, **k):
        raise AssertionError("a tensor file was loaded before its header was checked")

    monkeypatch.setattr(ck, "load_file", no_load)
    with pytest.raises(InputError, match="forged|fit this run's network"):
        load_denoiser(tiny_run, verbose=False)
    p = subprocess.run([sys.executable, "-m", "ddpmkit", "sample", str(tiny_run), "--n", "2",
                        "--out", str(tiny_run / "x.npz")], capture_output=True, text=True)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tiny_run / "x.npz").exists()
