"""Reliability: SIGKILL at random instants, checkpoint integrity, no code execution on load."""

import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from ddpmkit.train.checkpoint import _state_hash, sha256_file

SRC = Path(__file__).resolve().parents[1] / "src" / "ddpmkit"
TRAIN = ["--data", "digits", "--T", "50", "--batch-size", "8", "--log-every", "1",
         "--sample-every", "0", "--no-progress", "--seed", "3"]


def cli(*args, check=True, timeout=600):
    p = subprocess.run([sys.executable, "-m", "ddpmkit", *map(str, args)], capture_output=True,
                       text=True, timeout=timeout)
    if check:
        assert p.returncode == 0, p.stderr[-2000:]
    return p


def final_tensors(run: Path) -> dict:
    ck = sorted((run / "checkpoints").glob("step_*"))[-1]
    return {f: load_file(str(ck / f)) for f in ("model.safetensors", "ema.safetensors",
                                                "optim.safetensors")}


def log_steps(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def tree(run: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.subprocess
@pytest.mark.slow
def test_sigkill_at_10_random_instants_then_resume_is_bit_identical(tmp_path):
    steps = 48
    ref = tmp_path / "ref"
    cli("train", "--out", ref, "--steps", steps, "--checkpoint-every", 2, *TRAIN)
    run = tmp_path / "killed"
    rng = random.Random(1234)
    kills = 0
    while kills < 10:
        p = subprocess.Popen([sys.executable, "-m", "ddpmkit", "train", "--out", str(run),
                              "--steps", str(steps), "--checkpoint-every", "2", "--resume",
                              *TRAIN], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        start = len(log_steps(run)) if (run / "log.jsonl").exists() else 0
        t0 = time.time()
        while p.poll() is None and time.time() - t0 < 120:  # wait for training to move
            if (run / "log.jsonl").exists() and len(log_steps_safe(run)) > start:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))  # a random instant: mid-step or mid-checkpoint
        if p.poll() is not None:
            assert p.returncode == 0, p.stderr.read().decode()[-2000:]
            break  # it finished before we could kill it
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
    assert kills == 10, "the run finished too fast to be killed 10 times; raise steps"
    cli("train", "--out", run, "--steps", steps, "--checkpoint-every", 2, "--resume", *TRAIN)
    a, b = final_tensors(ref), final_tensors(run)
    for f in a:
        assert a[f].keys() == b[f].keys()
        for k in a[f]:
            assert a[f][k].equal(b[f][k]), (f, k)
    got = log_steps(run)
    assert [r["step"] for r in got] == list(range(1, steps + 1))  # none lost, none repeated
    assert [r["loss"] for r in got] == [r["loss"] for r in log_steps(ref)]
    assert not list((run / "checkpoints").glob(".tmp-*"))


def log_steps_safe(run: Path) -> list:
    try:
        return [x for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    except FileNotFoundError:
        return []


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("r") / "run"
    cli("train", "--out", run, "--steps", 4, "--checkpoint-every", 2, *TRAIN)
    return run


def _rehash(ck: Path) -> None:
    """Make state.json consistent with edited tensor files (a forger's best effort)."""
    st = json.loads((ck / "state.json").read_text())
    for f in ("model.safetensors", "ema.safetensors", "optim.safetensors"):
        st["hashes"][f] = sha256_file(ck / f)
    st["state_sha256"] = _state_hash(st)
    (ck / "state.json").write_text(json.dumps(st))


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def truncate(ck: Path) -> None:
    f = ck / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])


def flip(ck: Path) -> None:
    f = ck / "ema.safetensors"
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 0x40
    f.write_bytes(bytes(b))


def drop_tensor(ck: Path) -> None:
    sd = load_file(str(ck / "ema.safetensors"))
    sd.pop(sorted(sd)[0])
    save_file(sd, str(ck / "ema.safetensors"))
    _rehash(ck)


def other_architecture(ck: Path) -> None:
    run = ck.parent.parent
    cfg = json.loads((run / "config.json").read_text())
    cfg["net"]["ch"] = 16
    (run / "config.json").write_text(json.dumps(cfg))


def other_architecture_rehashed(ck: Path) -> None:
    other_architecture(ck)
    st = json.loads((ck / "state.json").read_text())
    st["config_sha256"] = sha256_file(ck.parent.parent / "config.json")
    st["state_sha256"] = _state_hash(st)
    (ck / "state.json").write_text(json.dumps(st))


def lying_step(ck: Path) -> None:
    st = json.loads((ck / "state.json").read_text())
    st["step"] = 999
    (ck / "state.json").write_text(json.dumps(st))


def lying_step_rehashed(ck: Path) -> None:
    st = json.loads((ck / "state.json").read_text())
    st["step"] = 999
    st["state_sha256"] = _state_hash(st)
    (ck / "state.json").write_text(json.dumps(st))


def malicious_pickle(ck: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {ck.parent.parent / 'PWNED'}",))

    (ck / "model.safetensors").write_bytes(pickle.dumps(Evil()))
    _rehash(ck)


@pytest.mark.subprocess
@pytest.mark.parametrize("damage,needle", [
    (truncate, "sha256"),
    (flip, "sha256"),
    (drop_tensor, "missing"),
    (other_architecture, "config.json changed"),
    (other_architecture_rehashed, "shape"),
    (lying_step, "modified"),
    (lying_step_rehashed, "says step 999"),
    (malicious_pickle, "safetensors"),
])
def test_damaged_checkpoint_is_detected_before_use(small_run, tmp_path, damage, needle):
    run = _copy(small_run, tmp_path / "run")
    ck = sorted((run / "checkpoints").glob("step_*"))[-1]
    damage(ck)
    before = tree(run)
    p = cli("sample", ck, "--n", 2, "--steps", 2, "--out", tmp_path / "x.npz", check=False)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in p.stderr, p.stderr
    assert tree(run) == before and not (tmp_path / "x.npz").exists()
    assert not (run / "PWNED").exists()


@pytest.mark.subprocess
def test_resume_picks_newest_valid_checkpoint_and_says_why(small_run, tmp_path):
    run = _copy(small_run, tmp_path / "run")
    cks = sorted((run / "checkpoints").glob("step_*"))
    flip(cks[-1])
    p = cli("train", "--out", run, "--resume", "--steps", 4, "--checkpoint-every", 2, *TRAIN)
    assert f"skipping checkpoint {cks[-1].name}" in p.stdout and "sha256" in p.stdout
    assert f"resuming from {cks[-2].name}" in p.stdout


@pytest.mark.subprocess
def test_object_arrays_and_pickled_npy_are_refused(tmp_path):
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    np.savez(tmp_path / "evil.npz", train=np.array([Evil(), 1], dtype=object))
    with open(tmp_path / "evil.npy", "wb") as f:
        np.save(f, np.array([Evil()], dtype=object), allow_pickle=True)
    for f in ("evil.npz", "evil.npy"):
        p = cli("train", "--data", tmp_path / f, "--out", tmp_path / "r", "--steps", 1,
                check=False)
        assert p.returncode == 2 and "pickle" in p.stderr and len(p.stderr.splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "r").exists()


def test_source_has_no_pickle_loading_call():
    bad = []
    for path in SRC.rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\bpickle\.loads?\(|\bimport pickle|allow_pickle\s*=\s*True", code):
                bad.append(f"{path.name}:{i}: {line.strip()}")
            if "torch.load(" in code and "weights_only=True" not in code:
                bad.append(f"{path.name}:{i}: {line.strip()}")
            if re.search(r"\bnp\.load\(", code) and "allow_pickle=False" not in code:
                bad.append(f"{path.name}:{i}: {line.strip()}")
    assert not bad, bad
