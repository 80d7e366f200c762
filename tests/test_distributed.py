"""Several processes under torchrun (gloo on CPU): DDP training equals one process, exact resume,
sharded sampling and ELBO, clear errors, and a failing rank never hangs the job.

The multi-process parts run this file as a torchrun worker (``python -m torch.distributed.run
--standalone`` picks a free port per launch); the single-process references run in pytest.
Every launch is time-limited, and ``DDPMKIT_DIST_TIMEOUT_S`` bounds each collective, so a hang
fails the test instead of blocking CI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ddpmkit import InputError
from ddpmkit.cli import main as cli_main
from ddpmkit.data import load_dataset
from ddpmkit.distributed import Dist, init_from_env, sharded_negative_elbo_bpd
from ddpmkit.likelihood import negative_elbo_bpd
from ddpmkit.train import TrainConfig, list_checkpoints, load_denoiser, train

TINY = {"ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "norm_groups": 4, "mid_attn": False}
# equivalence: uniform t, no dropout (dropout masks are per rank, so they cannot match 1 process)
CFG_EQ = dict(data="digits", steps=6, batch_size=16, checkpoint_every=3, log_every=2,
              sample_every=0, net_overrides=TINY, T=50, warmup_steps=0, lr=1e-3)
# exact resume: dropout (per-rank RNG streams) and the importance sampler (all-gathered history)
CFG_RS = CFG_EQ | dict(steps=16, checkpoint_every=4, T=20, timesteps="importance",
                       weighting="elbo", net_overrides=TINY | {"dropout": 0.2})
# max |w_2proc - w_1proc| after 6 AdamW steps at lr 1e-3 (measured 7.5e-7; see the test)
WEIGHT_ATOL = 2e-5
LAUNCH_TIMEOUT_S = 300
BPD_N, BPD_BATCH = 20, 8
FILES = ("model.safetensors", "ema.safetensors", "optim.safetensors")


# ------------------------------------------------------------------ launching torchrun workers


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "DDPMKIT_DIST_TIMEOUT_S": "120",
                "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"} | extra)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _descendants(pid: int) -> list[int]:
    """Child processes (transitively) of pid, from /proc: torchrun puts workers in new sessions."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def torchrun(args: list[str], nproc: int = 2, timeout: float = LAUNCH_TIMEOUT_S,
             **env: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=nproc ARGS``; kills the whole tree on time-out."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(**env), start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [*_descendants(proc.pid), proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, _ = proc.communicate()
        pytest.fail(f"torchrun {' '.join(args)} did not finish in {timeout} s (a hang):\n"
                    f"{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def _ok(res: subprocess.CompletedProcess) -> str:
    fatal = res.stdout.find("Fatal Python error")  # faulthandler's stacks of a crashed rank
    shown = res.stdout[fatal:fatal + 5000] + "\n...\n" if fatal >= 0 else ""
    assert res.returncode == 0, f"exit {res.returncode}:\n{shown}{res.stdout[-5000:]}"
    return res.stdout


# ------------------------------------------------------------------------- worker (torchrun)


def _worker(mode: str, out: Path) -> None:
    """Run under torchrun: one of the multi-process scenarios the tests check."""
    torch.set_num_threads(1)
    dist, device = init_from_env("cpu")
    try:
        if mode == "train":
            ds = load_dataset("digits")
            train(TrainConfig(**CFG_EQ), out / "eq", dataset=ds, dist=dist, progress=False)
            train(TrainConfig(**CFG_RS), out / "rs_a", dataset=ds, dist=dist, progress=False)
            # an interruption after 6 steps (checkpoint at 4), then a resume from the files
            train(TrainConfig(**CFG_RS), out / "rs_b", dataset=ds, dist=dist, progress=False,
                  stop_after=6)
            train(TrainConfig(**CFG_RS), out / "rs_b", dataset=ds, dist=dist, progress=False,
                  resume=True)
            den = load_denoiser(out / "eq", verbose=False).denoiser
            res = {m: sharded_negative_elbo_bpd(den, ds.test[:BPD_N], dist, method=m,
                                                batch_size=BPD_BATCH, seed=5).as_dict()
                   for m in ("exact", "stratified")}
            if dist.is_main:
                (out / "bpd.json").write_text(json.dumps(res))
        elif mode == "crash":  # rank 1 dies; rank 0 waits in a collective it can never finish
            if dist.rank == 1:
                raise RuntimeError("rank 1 fails on purpose")
            dist.barrier()
        elif mode == "hang":  # rank 1 never arrives; rank 0's collective times out
            if dist.rank == 1:
                time.sleep(3600)
            dist.barrier()
        else:
            raise ValueError(f"unknown mode {mode!r}")
    finally:
        dist.close()


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """One torchrun launch (2 processes) training the runs the tests below compare."""
    out = tmp_path_factory.mktemp("ddp")
    _ok(torchrun([__file__, "train", str(out)]))
    return out


@pytest.fixture(scope="module")
def single_eq(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("single") / "eq"
    train(TrainConfig(**CFG_EQ), out, dataset=digits, progress=False)
    return out


def _tensors(run_dir: Path, ck: int = -1) -> dict[str, dict[str, torch.Tensor]]:
    path = list_checkpoints(run_dir)[ck]
    return {f: load_file(str(path / f)) for f in FILES}


def _max_abs_diff(a: dict, b: dict, files=FILES) -> float:
    worst = 0.0
    for f in files:
        assert a[f].keys() == b[f].keys(), f
        for k in a[f]:
            d = (a[f][k].double() - b[f][k].double()).abs().max().item()
            worst = max(worst, d)
    return worst


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run_dir / "log.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------------- the tests


def test_two_processes_with_global_batch_match_one_process(ddp_runs, single_eq):
    """N steps on 2 processes (global batch B = 2 x 8) end with the weights of 1 process, batch B.

    Not bit-equal: each rank's loss is the mean over its 8 examples and DDP averages the two
    gradients, (g_0 + g_1)/2, where one process sums all 16 per-example terms in another order;
    the half-batch convolutions may also round differently. AdamW then divides by sqrt(v), so
    an entry whose gradient nearly cancels can move by a visible part of lr. Measured on this
    CPU: max |diff| 7.5e-7 on the weights and the EMA (relative norm 1.2e-6 per tensor) after
    6 steps at lr 1e-3; tolerance 2e-5 (2 % of one step), while training moves them by > 2e-3.
    """
    two, one = _tensors(ddp_runs / "eq"), _tensors(single_eq)
    diff = _max_abs_diff(two, one, files=("model.safetensors", "ema.safetensors"))
    assert diff < WEIGHT_ATOL, diff
    # the moments of AdamW agree too, per tensor in relative norm (entries near 0 cancel)
    for k, v in one["optim.safetensors"].items():
        d = (two["optim.safetensors"][k].double() - v.double()).norm()
        assert d <= 1e-4 * v.double().norm() + 1e-30, k
    # the comparison can fail: training moved the weights far more than the tolerance
    from ddpmkit.train import read_run

    torch.manual_seed(CFG_EQ.get("seed", 0))
    init = read_run(single_eq).build_denoiser().net.state_dict()
    moved = max((one["model.safetensors"][k] - v).abs().max().item() for k, v in init.items())
    assert moved > 100 * WEIGHT_ATOL, moved
    # the logged loss is the global batch's on rank 0 (all-reduced), equal to 1 process's
    assert _losses(ddp_runs / "eq") == pytest.approx(_losses(single_eq), rel=1e-5)
    state = json.loads((list_checkpoints(ddp_runs / "eq")[-1] / "state.json").read_text())
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2


def test_log_is_written_once_by_rank_zero(ddp_runs):
    lines = (ddp_runs / "eq" / "log.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in lines]
    assert steps == [2, 4, 6]  # one line per log step: not one per rank
    assert [p.name for p in list_checkpoints(ddp_runs / "eq")] == ["step_0000003",
                                                                   "step_0000006"]


def test_two_process_resume_is_bit_identical_to_an_uninterrupted_run(ddp_runs):
    """Killed after 6 steps (checkpoint at 4) and resumed on 2 processes: the same bits, with
    dropout (each rank's RNG stream is saved) and the importance sampler (gathered history)."""
    a, b = _tensors(ddp_runs / "rs_a"), _tensors(ddp_runs / "rs_b")
    for f in FILES:
        for k in a[f]:
            assert torch.equal(a[f][k], b[f][k]), (f, k)
    assert _losses(ddp_runs / "rs_a") == _losses(ddp_runs / "rs_b")
    st = json.loads((list_checkpoints(ddp_runs / "rs_a")[-1] / "state.json").read_text())
    assert st["rng_ranks"][0]["torch_cpu"] != st["rng_ranks"][1]["torch_cpu"]  # own dropout


def test_resume_with_another_number_of_processes_is_refused_or_explicit(ddp_runs, single_eq,
                                                                        digits, tmp_path):
    run = tmp_path / "eq"
    shutil.copytree(ddp_runs / "eq", run)
    shutil.rmtree(list_checkpoints(run)[-1])  # resume from step 3 of the 2-process run
    cfg = TrainConfig(**CFG_EQ)
    with pytest.raises(InputError, match="written by 2 process.*--allow-world-change"):
        train(cfg, run, resume=True, dataset=digits, progress=False)
    train(cfg, run, resume=True, dataset=digits, progress=False, allow_world_change=True)
    assert _max_abs_diff(_tensors(run), _tensors(single_eq),
                         files=("model.safetensors", "ema.safetensors")) < WEIGHT_ATOL


def test_sharded_bpd_is_the_same_for_one_and_two_ranks(ddp_runs, digits):
    """Batch i draws from seed (seed, i) whatever rank evaluates it: equal to the last bit."""
    got = json.loads((ddp_runs / "bpd.json").read_text())
    den = load_denoiser(ddp_runs / "eq", verbose=False).denoiser
    for method in ("exact", "stratified"):
        ref = sharded_negative_elbo_bpd(den, digits.test[:BPD_N], Dist(), method=method,
                                        batch_size=BPD_BATCH, seed=5).as_dict()
        assert got[method] == ref, method
    # and it is the same estimator as negative_elbo_bpd (other noise draws, same mean)
    plain = negative_elbo_bpd(den, digits.test[:BPD_N], batch_size=BPD_BATCH, seed=5)
    assert abs(plain.bpd - got["exact"]["bpd"]) < 5 * got["exact"]["se_bpd"]
    assert got["exact"]["terms_bpd"]["prior"] == pytest.approx(plain.terms_bpd["prior"])


def test_sample_under_torchrun_gives_the_samples_of_one_process(ddp_runs, tmp_path):
    """10 samples in chunks of 4: rank 0 draws chunks 0 and 2, rank 1 chunk 1; gathered in order
    they equal one process's samples exactly."""
    args = [str(ddp_runs / "eq"), "--batch-size", "4", "--steps", "8", "--seed", "3",
            "--device", "cpu", "--no-progress"]
    # torchrun's parser takes "--n" for an ambiguous prefix of its own flags: --num-samples
    _ok(torchrun(["-m", "ddpmkit", "sample", *args, "--num-samples", "10",
                  "--out", str(tmp_path / "two.npz")]))
    assert cli_main(["sample", *args, "--n", "10", "--out", str(tmp_path / "one.npz")]) == 0
    two, one = np.load(tmp_path / "two.npz"), np.load(tmp_path / "one.npz")
    assert two["images"].shape == (10, 1, 8, 8)
    assert np.array_equal(two["images"], one["images"])
    assert json.loads(str(two["meta"])) == json.loads(str(one["meta"]))
    assert len(np.unique(one["images"].reshape(10, -1), axis=0)) == 10  # chunks differ


def test_a_crashing_rank_ends_the_job_instead_of_hanging_it(tmp_path):
    """Rank 1 raises while rank 0 waits in a barrier (whose own time-out is 120 s here):
    torchrun stops rank 0 and exits non-zero well inside the launch time-out."""
    res = torchrun([__file__, "crash", str(tmp_path)], timeout=LAUNCH_TIMEOUT_S)
    assert res.returncode != 0
    assert "rank 1 fails on purpose" in res.stdout


@pytest.mark.slow
def test_a_hanging_rank_is_cut_off_by_the_collective_timeout(tmp_path):
    """Rank 1 sleeps forever; rank 0's barrier fails after DDPMKIT_DIST_TIMEOUT_S = 5 s, and
    torchrun then stops rank 1: the job ends with an error instead of waiting an hour."""
    res = torchrun([__file__, "hang", str(tmp_path)], timeout=LAUNCH_TIMEOUT_S,
                   DDPMKIT_DIST_TIMEOUT_S="5")
    assert res.returncode != 0


@pytest.mark.slow
def test_cli_train_under_torchrun_resumes_exactly(tmp_path):
    """`torchrun -m ddpmkit train`, then the newest checkpoint lost and `--resume`: same bits;
    resuming it with one process is refused with a clear message (exit 2)."""
    run = tmp_path / "run"
    args = ["-m", "ddpmkit", "train", "--data", "digits", "--out", str(run), "--steps", "4",
            "--batch-size", "8", "--T", "20", "--checkpoint-every", "2", "--sample-every", "0",
            "--log-every", "1", "--warmup-steps", "0", "--device", "cpu", "--no-progress"]
    _ok(torchrun(args))
    full = _tensors(run)
    shutil.rmtree(list_checkpoints(run)[-1])
    _ok(torchrun([*args, "--resume"]))
    again = _tensors(run)
    for f in FILES:
        for k in full[f]:
            assert torch.equal(full[f][k], again[f][k]), (f, k)
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [
        1, 2, 3, 4]
    shutil.rmtree(list_checkpoints(run)[-1])
    rc = cli_main(["train", "--out", str(run), "--resume", "--device", "cpu", "--no-progress"])
    assert rc == 2


def test_batch_not_divisible_by_the_processes_is_refused(digits, tmp_path):
    with pytest.raises(InputError, match="not divisible by the 2 processes"):
        train(TrainConfig(**CFG_EQ | {"batch_size": 15}), tmp_path / "r", dataset=digits,
              dist=Dist(rank=0, world=2, backend="gloo"), progress=False)


def test_init_from_env_without_rank_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(InputError, match="launch with torchrun"):
        init_from_env("cpu")


def test_single_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dist, device = init_from_env("cpu")
    assert (dist.world, dist.rank, device) == (1, 0, "cpu")
    x = torch.arange(3)
    assert dist.all_gather(x) is x and torch.equal(dist.all_gather_rows(x)[0], x)


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]))
