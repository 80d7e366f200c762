"""The bad-input catalogue (docs/reliability.md): each case as a user types it.

Every case must end with exit code 2, exactly one line on stderr naming the problem (and the
fix), no traceback, and nothing written where the command would have written.
"""

import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ddpmkit.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    x = np.random.default_rng(0).uniform(-1, 1, (10, 1, 8, 8)).astype(np.float32)
    bad = x.copy()
    bad[3, 0, 2, 2] = np.nan
    np.save(d / "nan.npy", bad)
    bad[3, 0, 2, 2] = np.inf
    np.savez(d / "inf.npz", train=bad)
    np.save(d / "5d.npy", np.zeros((2, 1, 1, 8, 8), np.float32))
    np.save(d / "range.npy", x * 3)
    (d / "mixed").mkdir()
    Image.new("L", (8, 8)).save(d / "mixed" / "a.png")
    Image.new("L", (10, 6)).save(d / "mixed" / "b.png")
    (d / "corrupt").mkdir()
    Image.new("L", (8, 8)).save(d / "corrupt" / "a.png")
    (d / "corrupt" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    (d / "empty").mkdir()
    (d / "notrun").mkdir()
    (d / "afile").write_text("a regular file")
    return d


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", "--data", "digits", "--out", str(out), "--steps", "2", "--T", "50",
                 "--batch-size", "4", "--sample-every", "0", "--no-progress"]) == 0
    return out


CATALOGUE = [
    # train
    ("train-batch-zero", "train --data digits --out {o} --steps 1 --batch-size 0", "--batch-size"),
    ("train-lr-negative", "train --data digits --out {o} --steps 1 --lr -1", "--lr"),
    ("train-lr-nan", "train --data digits --out {o} --steps 1 --lr nan", "--lr"),
    ("train-T-zero", "train --data digits --out {o} --steps 1 --T 0", "--T"),
    ("train-unknown-schedule", "train --data digits --out {o} --steps 1 --schedule foo", "foo"),
    ("train-unknown-param", "train --data digits --out {o} --steps 1 --param score", "score"),
    ("train-unknown-loss", "train --data digits --out {o} --steps 1 --loss huber", "huber"),
    ("train-two-budgets", "train --data digits --out {o} --steps 1 --minutes 1", "--minutes"),
    ("train-minutes-zero", "train --data digits --out {o} --minutes 0", "--minutes"),
    ("train-ema-above-one", "train --data digits --out {o} --steps 1 --ema-decay 1.5",
     "ema_decay"),
    ("train-nan-in-array", "train --data {d}/nan.npy --out {o} --steps 1", "NaN"),
    ("train-inf-in-array", "train --data {d}/inf.npz --out {o} --steps 1", "Inf"),
    ("train-array-5d", "train --data {d}/5d.npy --out {o} --steps 1", "5d.npy"),
    ("train-array-range", "train --data {d}/range.npy --out {o} --steps 1", "[-1, 1]"),
    ("train-mixed-image-sizes", "train --data {d}/mixed --out {o} --steps 1", "size"),
    ("train-corrupt-image", "train --data {d}/corrupt --out {o} --steps 1", "b.png"),
    ("train-empty-folder", "train --data {d}/empty --out {o} --steps 1", "empty"),
    ("train-missing-data", "train --data {d}/missing.npz --out {o} --steps 1", "missing.npz"),
    ("train-digits-resized", "train --data digits --image-size 16 --out {o} --steps 1", "8x8"),
    ("train-out-under-a-file", "train --data digits --out {d}/afile/run --steps 1", "afile"),
    ("train-existing-run", "train --data digits --out {r} --steps 1", "--resume"),
    ("train-resume-other-settings", "train --out {r} --resume --T 100", "--T"),
    # sample
    ("sample-n-zero", "sample {r} --out {o}.npz --n 0", "--n"),
    ("sample-steps-zero", "sample {r} --out {o}.npz --steps 0", "--steps"),
    ("sample-more-steps-than-T", "sample {r} --out {o}.npz --steps 51", "exceeds"),
    ("sample-unknown-sampler", "sample {r} --out {o}.npz --sampler magic", "magic"),
    ("sample-unknown-spacing", "sample {r} --out {o}.npz --spacing zigzag", "zigzag"),
    ("sample-unknown-clip", "sample {r} --out {o}.npz --clip tanh", "tanh"),
    ("sample-not-a-run", "sample {d}/notrun --out {o}.npz", "neither a run directory"),
    ("sample-missing-run", "sample {d}/nothing --out {o}.npz", "does not exist"),
    ("sample-bad-extension", "sample {r} --out {o}.jpg", ".npz or .png"),
    ("sample-missing-out-folder", "sample {r} --out {d}/no/such/dir/x.npz", "does not exist"),
    # eval, report
    ("eval-unknown-method", "eval {r} --bpd approx", "approx"),
    ("eval-unknown-split", "eval {r} --split validation", "validation"),
    ("eval-not-a-run", "eval {d}/notrun --bpd stratified", "neither a run directory"),
    ("eval-zero-strata", "eval {r} --bpd stratified --strata 0", "--strata"),
    ("eval-fd-zero-n", "eval {r} --fd --n 0", "--n"),
    ("eval-more-steps-than-T", "eval {r} --fd --n 4 --steps 51", "exceeds"),
    ("report-not-a-run", "report {d}/notrun --out {o}.html", "run directory"),
    ("report-missing-run", "report {d}/nothing --out {o}.html", "nothing"),
    # calibrate, equivalence, demo
    ("calibrate-n-not-a-number", "calibrate --n abc", "abc"),
    ("calibrate-negative-T", "calibrate --T -5", "--T"),
    ("calibrate-unknown-case", "calibrate --case cifar", "cifar"),
    ("calibrate-out-not-npz", "calibrate --T 30 --n 20 --out {o}.txt", ".npz"),
    ("equivalence-T-fraction", "equivalence --T 1.5", "1.5"),
    ("equivalence-negative-seed", "equivalence --seed -1", "--seed"),
    ("equivalence-linear-T-too-small", "equivalence --T 10", "beta_max"),
    ("demo-negative-minutes", "demo --minutes -1 --out {o}", "--minutes"),
    ("demo-unknown-bpd", "demo --bpd approx --out {o}", "approx"),
    ("demo-foreign-folder", "demo --out {d}/notrun --minutes 0.01", "not a demo directory"),
    ("unknown-command", "frobnicate", "frobnicate"),
]


@pytest.mark.parametrize("case,cmd,needle", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_bad_input_catalogue(case, cmd, needle, files, run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = cmd.format(d=files, r=run_dir, o=out).split()
    before = sorted(p.name for p in files.rglob("*"))
    try:
        code = main(argv)
    except SystemExit as e:  # argparse errors
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (case, err)
    assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0], (case, err)
    assert not any(tmp_path.iterdir()), f"{case} wrote {list(tmp_path.iterdir())}"
    assert sorted(p.name for p in files.rglob("*")) == before


def test_catalogue_has_at_least_30_cases():
    assert len(CATALOGUE) >= 30
    assert len({c[0] for c in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.subprocess
def test_disk_full_while_writing_samples_is_one_line_and_leaves_nothing(run_dir, tmp_path):
    """RLIMIT_FSIZE makes every write past 4 KB fail with EFBIG, as a full disk would."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    out = tmp_path / "s.npz"
    p = subprocess.run([sys.executable, "-m", "ddpmkit", "sample", str(run_dir), "--n", "256",
                        "--steps", "2", "--out", str(out), "--no-progress"], capture_output=True,
                       text=True, preexec_fn=limit, timeout=600)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no s.npz, no temporary file
