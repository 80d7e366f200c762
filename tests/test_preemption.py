"""A cluster's polite stop (SIGTERM, then a wait, then kill) and two trainers on one directory:
nothing is lost, nothing is written twice (issue: preemption, concurrency and hostile files)."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY = ["--steps", "60", "--batch-size", "16", "--log-every", "1", "--checkpoint-every", "25",
        "--sample-every", "0", "--no-progress", "--warmup-steps", "5"]
NET = json.dumps({"ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "norm_groups": 4,
                  "mid_attn": False})
TENSORS = ("model.safetensors", "ema.safetensors", "optim.safetensors")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _train_cmd(out: Path, *extra: str) -> list[str]:
    # the tiny net through the Python API keeps each run to seconds
    code = ("import json, sys; from ddpmkit.cli import main; sys.argv[0] = 'ddpmkit'; "
            "import ddpmkit.train.config as c; "
            f"c.TrainConfig.__dataclass_fields__['net_overrides'].default_factory = "
            f"lambda: json.loads({NET!r}); sys.exit(main(sys.argv[1:]))")
    return [sys.executable, "-c", code, "train", "--data", "digits", "--out", str(out),
            *TINY, *extra]


def _final_hashes(run: Path, step: int = 60) -> dict[str, str]:
    ck = run / "checkpoints" / f"step_{step:07d}"
    return {n: hashlib.sha256((ck / n).read_bytes()).hexdigest() for n in TENSORS}


def _logged_step(run: Path) -> int:
    try:
        lines = (run / "log.jsonl").read_text().splitlines()
    except OSError:
        return 0
    steps = [json.loads(ln).get("step", 0) for ln in lines if ln.strip().endswith("}")]
    return max(steps, default=0)


def _start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(_train_cmd(out, *extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())


def _wait_for_step(proc: subprocess.Popen, run: Path, step: int, timeout: float = 240) -> None:
    t0 = time.monotonic()
    while _logged_step(run) < step:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "the trainer made no progress"
        time.sleep(0.05)


def _cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, str]:
    run = tmp_path_factory.mktemp("ref") / "run"
    p = subprocess.run(_train_cmd(run), capture_output=True, text=True, env=_env())
    assert p.returncode == 0, p.stderr
    return _final_hashes(run)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigterm_at_a_random_step_checkpoints_it_and_resume_is_bit_exact(
        tmp_path, uninterrupted, seed):
    run = tmp_path / "run"
    target = random.Random(seed).randint(3, 50)
    proc = _start(run)
    _wait_for_step(proc, run, target)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    stopped = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()
               if '"event"' in ln]
    assert len(stopped) == 1 and stopped[0]["signal"] == "SIGTERM"
    step = stopped[0]["step"]
    assert step >= target and (run / "checkpoints" / f"step_{step:07d}" / "state.json").is_file()
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1 and "--resume" in err
    p = subprocess.run(_train_cmd(run, "--resume"), capture_output=True, text=True, env=_env())
    assert p.returncode == 0, p.stderr
    assert _final_hashes(run) == uninterrupted


@pytest.mark.slow
def test_a_second_trainer_is_refused_and_kill_9_leaves_no_stale_lock(tmp_path, uninterrupted):
    run = tmp_path / "run"
    first = _start(run)
    _wait_for_step(first, run, 3)
    second = subprocess.run(_train_cmd(run, "--resume"), capture_output=True, text=True,
                            env=_env())
    assert second.returncode == 2
    lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"pid {first.pid}" in lines[0], second.stderr
    first.kill()  # kill -9: the kernel drops its lock
    first.communicate()
    p = subprocess.run(_train_cmd(run, "--resume"), capture_output=True, text=True, env=_env())
    assert p.returncode == 0, p.stderr
    assert _final_hashes(run) == uninterrupted


def test_an_abort_inside_a_checkpoint_write_leaves_no_half_checkpoint(tmp_path, monkeypatch):
    """The second signal raises KeyboardInterrupt wherever the trainer is, also in the write:
    the temporary directory goes, the finished checkpoints stay."""
    import torch

    import ddpmkit.train.checkpoint as ck

    sd = {"w": torch.ones(3)}
    ck.save_checkpoint(tmp_path, 1, model=sd, ema=sd, optim=sd, state={})
    calls = []

    def interrupted_save(tensors, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        torch.save({}, path)  # never read: the write is interrupted before it matters

    monkeypatch.setattr(ck, "save_file", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(tmp_path, 2, model=sd, ema=sd, optim=sd, state={})
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_0000001"]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sample", "eval"])
def test_sigint_during_sample_or_eval_leaves_no_partial_output(tmp_path, command):
    run = tmp_path / "run"
    p = subprocess.run(_train_cmd(run, "--steps", "2"), capture_output=True, text=True,
                       env=_env())
    assert p.returncode == 0, p.stderr
    out = tmp_path / "x.npz"
    args = (["sample", str(run), "--n", "20000", "--sampler", "ancestral", "--steps", "100",
             "--batch-size", "64", "--out", str(out)]
            if command == "sample" else ["eval", str(run), "--bpd", "exact"])
    proc = subprocess.Popen([sys.executable, "-m", "ddpmkit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    t0 = time.monotonic()
    while _cpu_seconds(proc.pid) < 8.0:  # past the imports: the work itself has begun
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < 240
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not out.exists()
    assert not list(tmp_path.glob("x*")) and not (run / "eval").exists()


# ---- under torchrun --------------------------------------------------------------------------
TORCHRUN_ARGS = ["--steps", "40", "--batch-size", "16", "--log-every", "1",
                 "--checkpoint-every", "15", "--sample-every", "0", "--no-progress"]


def _torchrun(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "ddpmkit", "train", "--data", "digits", "--out", str(out), *TORCHRUN_ARGS,
           *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env() | {"DDPMKIT_DIST_TIMEOUT_S": "120"},
                            start_new_session=True)


def _workers(pid: int) -> list[int]:
    """The ddpmkit worker processes torchrun started (children that run '-m ddpmkit')."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ddpmkit" in cmd and b"torch.distributed.run" not in cmd and int(d.name) != pid:
            if int(stat[1]) != 1:  # skip reparented leftovers
                out.append(int(d.name))
    return sorted(out)


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_every_rank_at_one_step_and_resume_is_bit_exact(tmp_path):
    ref = tmp_path / "ref"
    p = _torchrun(ref)
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]
    run = tmp_path / "run"
    p = _torchrun(run)
    t0 = time.monotonic()
    while _logged_step(run) < 20:
        assert p.poll() is None, p.communicate()[0][-3000:]
        assert time.monotonic() - t0 < 600
        time.sleep(0.05)
    workers = [w for w in _workers(p.pid) if str(run) in
               Path(f"/proc/{w}/cmdline").read_bytes().decode(errors="replace")]
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGTERM)  # one rank only
    out, _ = p.communicate(timeout=600)
    stopped = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()
               if '"event"' in ln]
    assert len(stopped) == 1, out[-3000:]
    step = stopped[0]["step"]
    assert (run / "checkpoints" / f"step_{step:07d}" / "state.json").is_file(), out[-3000:]
    p = _torchrun(run, "--resume")
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]
    assert _final_hashes(run, 40) == _final_hashes(ref, 40)
